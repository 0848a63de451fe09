"""The pictures read on their own: each says what it shows, in its title, colour bar and labels."""

import numpy as np
from matplotlib.figure import Figure
from mindscope.render import charts, features, figures, grids, heatmaps


def texts(figure: Figure) -> str:
    return "\n".join(t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_text")))


def capture(monkeypatch, module) -> list[Figure]:
    """The figures a render function builds (it encodes them to bytes), to read their text."""
    built: list[Figure] = []
    encode = figures.encode

    def keep(figure: Figure, *args) -> bytes:
        built.append(figure)
        return encode(figure, *args)

    monkeypatch.setattr(module, "encode", keep)
    return built


def test_integrated_gradients_names_class_probability_method_steps_error_and_scale(monkeypatch):
    built = capture(monkeypatch, heatmaps)
    rng = np.random.default_rng(0)
    image, attributions = rng.uniform(size=(32, 32, 3)), rng.normal(size=(32, 32, 3))
    for label in ("cat", "dog"):
        caption = heatmaps.AttributionCaption(label, 0.875, "gauss_legendre", 64, 3.2e-4)
        heatmaps.attribution_figure(image, attributions, caption, "all", 95)
    cat, dog = texts(built[0]), texts(built[1])
    assert "'cat' (p = 0.875)" in cat and "gauss_legendre, 64 steps" in cat and "3.2e-04" in cat
    assert "'dog'" in dog and cat != dog
    assert "red raises" in cat  # the colour bar says what the colours mean
    assert "95th percentile" in cat  # and the clipping is said in words
    assert len(built[0].axes) == 4  # three panels and a colour bar


def test_the_trust_panel_draws_each_curve_with_its_area_and_says_which_way_is_good(monkeypatch):
    built = capture(monkeypatch, heatmaps)
    rng = np.random.default_rng(0)
    image, attributions = rng.uniform(size=(32, 32, 3)), rng.normal(size=(32, 32, 3))
    fractions = [0.0, 0.5, 1.0]
    trust = heatmaps.Trust(
        (
            heatmaps.TrustCurve("deletion", fractions, [0.9, 0.2, 0.1], 0.35),
            heatmaps.TrustCurve("insertion", fractions, [0.1, 0.6, 0.9], 0.55),
        ),
        sanity=0.12,
    )
    caption = heatmaps.AttributionCaption("cat", 0.9, "gradient-x-input", 0, 0.0, headline="Gradient x input")
    heatmaps.attribution_figure(image, attributions, caption, "all", 99, trust)
    text = texts(built[0])
    assert "deletion: area 0.350 (lower is better)" in text and "insertion: area 0.550 (higher is better)" in text
    assert "rank corr. with untrained model 0.12 (low is good)" in text
    assert "fraction of pixels, most attributed first" in text and "p(cat)" in text
    curves = built[0].axes[3].get_lines()
    assert [list(line.get_ydata()) for line in curves] == [[0.9, 0.2, 0.1], [0.1, 0.6, 0.9]]


def test_interior_gradients_begin_with_the_input_and_give_each_panel_its_scale(monkeypatch):
    built = capture(monkeypatch, heatmaps)
    rng = np.random.default_rng(0)
    heatmaps.interior_strip(
        rng.uniform(size=(32, 32, 3)),
        np.array([0.1, 1.0]),
        rng.normal(size=(2, 32, 32, 3)),
        np.array([0.2, 0.9]),
        "cat",
    )
    words = texts(built[0])
    assert built[0].axes[0].get_title() == "input"
    assert "alpha = 0.10" in words and "p = 0.900" in words and words.count("p99 = ") == 2


def test_activation_grids_label_every_channel_and_have_a_colour_scale(monkeypatch):
    built = capture(monkeypatch, grids)
    values = np.random.default_rng(0).normal(size=(8, 8, 10))
    labels = [f"{c} class{c}" for c in range(10)]
    grids.activation_grid(np.zeros((32, 32, 3)), grids.ChannelGrid("conv9 (layer 9)", values, labels))
    words = texts(built[0])
    assert all(label in words for label in labels) and "per-channel scale" in words
    assert "conv9 (layer 9)" in words


def test_weight_histograms_give_every_layer_and_bias_its_own_readable_panel(monkeypatch):
    built = capture(monkeypatch, charts)
    rng = np.random.default_rng(0)
    panels = [
        charts.WeightPanel(
            "conv1", "kernel", (3, 3, 3, 4), {"initial": rng.normal(0, 0.06, 108), "trained": rng.normal(0, 1.3, 108)}
        ),
        charts.WeightPanel("conv1", "bias", (4,), {"initial": np.zeros(4), "trained": rng.normal(size=4)}),
        charts.WeightPanel(
            "conv2", "kernel", (3, 3, 4, 4), {"initial": rng.normal(0, 0.05, 144), "trained": rng.normal(0, 0.1, 144)}
        ),
        charts.WeightPanel("conv2", "bias", (4,), {"initial": np.zeros(4), "trained": np.full(4, 1e-3)}),
    ]
    charts.histogram_figure(panels, 20, "BatchNorm: folded")
    figure = built[0]
    titles = [ax.get_title().split("\n") for ax in figure.axes]
    # The all-zero "before" biases are said once in the title, not drawn as a column of empty panels.
    assert [t[0] for t in titles] == [
        "conv1 kernel (3x3x3x4), before training",
        "conv1 kernel (3x3x3x4), after training",
        "conv1 bias (4), after training",
        "conv2 kernel (3x3x4x4), before training",
        "conv2 kernel (3x3x4x4), after training",
        "conv2 bias (4), after training",
    ]
    assert "Not drawn: bias before training: all = 0 in every layer" in texts(figure)
    # The statistics sit in the title, off the bars; a constant tensor that is drawn says so there.
    assert (
        titles[0][1]
        == f"n=108, mean={panels[0].stages['initial'].mean():.3g}, std={panels[0].stages['initial'].std():.3g}"
    )
    assert titles[5][1] == "all 4 = 0.001"
    before, after = figure.axes[0], figure.axes[1]
    assert after.get_xlim()[1] > 5 * before.get_xlim()[1]  # each stage on its own x-axis
    assert figure.axes[0].get_ylabel() == "count of weights"  # counts, not a density of a near-constant
    assert sum(patch.get_height() for patch in figure.axes[2].patches) == 4
    assert "BatchNorm: folded" in texts(figure)
    assert_readable(figure)


def boxes(figure: Figure) -> list[tuple[str, object]]:
    """Every text the figure draws (titles, labels, notes, legends and the tick labels inside the
    view), with its box in pixels."""
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    drawn = [*figure.texts, *([figure._suptitle] if figure._suptitle else [])]
    for ax in figure.axes:
        if not ax.get_visible() or not ax.axison and not ax.texts and not ax.get_title():
            continue
        drawn += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis in (ax.xaxis, ax.yaxis):
            drawn += [tick.label1 for tick in axis._update_ticks() if tick.label1.get_visible()]
        legend = ax.get_legend()
        drawn += list(legend.get_texts()) if legend else []
    return [(t.get_text(), t.get_window_extent(renderer)) for t in drawn if t.get_text().strip() and t.get_visible()]


def assert_readable(figure: Figure, apart: tuple[str, ...] = ()) -> None:
    """No text is cut by the figure's edges, and the texts that contain the words in `apart` do not
    overlap any other text."""
    width, height = figure.canvas.get_width_height()
    found = boxes(figure)
    for text, box in found:
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= width + 1 and box.y1 <= height + 1, f"{text!r} is cut"
    for words in apart:
        (mine,) = [(t, b) for t, b in found if words in t]
        for text, box in found:
            if text != mine[0]:
                assert not mine[1].overlaps(box), f"{mine[0]!r} runs over {text!r}"


def test_the_footnote_of_an_explanation_with_trust_scores_stays_clear_of_the_curves_axis(monkeypatch):
    built = capture(monkeypatch, heatmaps)
    rng = np.random.default_rng(0)
    trust = heatmaps.Trust((heatmaps.TrustCurve("deletion", [0.0, 1.0], [0.9, 0.1], 0.3),), sanity=0.2)
    caption = heatmaps.AttributionCaption("cat", 0.9, "gauss_legendre", 64, 1e-4)
    heatmaps.attribution_figure(rng.uniform(size=(32, 32, 3)), rng.normal(size=(32, 32, 3)), caption, "all", 99, trust)
    assert_readable(built[0], apart=("Colours are clipped", "fraction of pixels, most attributed first"))


def test_occlusion_says_its_values_are_a_fall_in_probability(monkeypatch):
    built = capture(monkeypatch, heatmaps)
    rng = np.random.default_rng(0)
    caption = heatmaps.AttributionCaption(
        "cat",
        0.95,
        "occlusion",
        0,
        0.0,
        headline="Occlusion: why 'cat'",
        values="mean fall in the target's probability when a 4x4 patch of 0 covers the pixel",
        scale="fall in the target's probability (red: hiding the pixel lowers it)",
    )
    heatmaps.attribution_figure(rng.uniform(size=(32, 32, 3)), rng.uniform(-0.2, 0.5, (32, 32, 1)), caption)
    words = texts(built[0])
    assert "mean fall in p(cat) when a 4x4 patch of 0" in words
    assert "fall in p(cat) (red: hiding the pixel lowers it)" in words
    assert "attributions to" not in words
    assert_readable(built[0])


def test_one_channel_feature_picture_keeps_its_whole_title(monkeypatch):
    built = capture(monkeypatch, features)
    rng = np.random.default_rng(0)
    features.feature_grid("conv3", [5], [rng.uniform(size=(32, 32, 3))], [0.8], [-0.4], 256, 0, ["channel 5"])
    figure = built[0]
    assert figure.canvas.get_width_height()[0] >= 800
    words = " ".join(texts(figure).split())
    assert (
        "What conv3's channels look for" in words and "256 steps" in words and "pixels as the model sees them" in words
    )
    assert_readable(figure)


def test_the_class_layer_shares_one_scale_and_its_labels_stay_on_balanced_rows(monkeypatch):
    built = capture(monkeypatch, grids)
    values = np.random.default_rng(0).normal(size=(8, 8, 10))
    values[..., 8] += 20  # the strongest class
    labels = [f"{c} class{c}" for c in range(10)]
    grids.activation_grid(
        np.zeros((32, 32, 3)), grids.ChannelGrid("conv9 (layer 9)", values, labels, shared_scale=True)
    )
    figure = built[0]
    mosaic = figure.axes[1].images[0]
    low, high = mosaic.get_clim()
    assert low == values.min() and high == values.max()  # activations as they are, one scale
    assert grids.grid_columns(10) == 5 and grids.grid_columns(27) == 9 and grids.grid_columns(28) == 7
    assert mosaic.get_array().shape == (2 * 9 - 1, 5 * 9 - 1)  # two rows of five: no label alone on a row
    assert "One scale for every channel" in texts(figure) and "per-channel" not in texts(figure)
    assert_readable(figure)


def test_an_activation_grid_has_no_blank_band_under_its_title(monkeypatch):
    built = capture(monkeypatch, grids)
    values = np.random.default_rng(0).normal(size=(32, 32, 27))
    grids.activation_grid(
        np.zeros((32, 32, 3)), grids.ChannelGrid("conv3 (layer 3)", values, [str(c) for c in range(27)])
    )
    figure = built[0]
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    tiles = figure.axes[1].get_window_extent(renderer)
    title = figure._suptitle.get_window_extent(renderer)
    assert title.y0 - tiles.y1 < 40  # pixels between the title and the first row of tiles
    assert_readable(figure)


def test_the_animation_shows_the_input_once_then_each_layer():
    import io

    from PIL import Image

    values = np.random.default_rng(0).normal(size=(8, 8, 4))
    gif = grids.activation_animation(
        np.zeros((32, 32, 3)), [grids.ChannelGrid("conv3 (layer 3): ...", values, list("abcd"))]
    )
    frames = Image.open(io.BytesIO(gif))
    assert frames.n_frames == 2


def test_the_first_animation_frame_names_what_follows_instead_of_repeating_the_input(monkeypatch):
    built = []
    original = grids._draw

    def keep(figure, *args, **kwargs):
        built.append(figure)
        return original(figure, *args, **kwargs)

    monkeypatch.setattr(grids, "_draw", keep)
    values = np.random.default_rng(0).normal(size=(8, 8, 4))
    grids.activation_animation(
        np.zeros((32, 32, 3)),
        [
            grids.ChannelGrid("conv3 (layer 3): x", values, list("abcd")),
            grids.ChannelGrid("conv6 (layer 6): y", values, list("abcd")),
        ],
    )
    first = built[0]
    assert sum(len(ax.images) for ax in first.axes) == 1  # the input, once
    assert "next: conv3, conv6" in texts(first)


def test_shap_pictures_say_their_values_are_shares_and_check_efficiency(client, sample_jpeg):
    """Through the service: the panel and the colour bar say what an Owen value is (not occlusion's
    words), and the title gives the efficiency error as IG's gives its completeness error."""
    built = []
    encode = figures.encode

    def keep(figure, *args):
        built.append(figure)
        return encode(figure, *args)

    import pytest

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(heatmaps, "encode", keep)
        answer = client.post(
            "/explain/shap?max_evals=64&format=png", content=sample_jpeg, headers={"Content-Type": "image/jpeg"}
        )
    assert answer.status_code == 200
    words = " ".join(texts(built[0]).split())
    assert "Owen values: each pixel's share of p(" in words and "share of p(" in words and "red raises it" in words
    assert "hiding the pixel" not in words and "efficiency error" in words
    assert_readable(built[0])
