"""The pictures read on their own: each says what it shows, in its title, colour bar and labels."""

import numpy as np
from matplotlib.figure import Figure
from mindscope.render import charts, figures, grids, heatmaps


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
    ]
    charts.histogram_figure(panels, 20, "BatchNorm: folded")
    figure = built[0]
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == [
        "conv1 kernel (3x3x3x4), before training",
        "conv1 kernel (3x3x3x4), after training",
        "conv1 bias (4), before training",
        "conv1 bias (4), after training",
    ]
    before, after = figure.axes[0], figure.axes[1]
    assert after.get_xlim()[1] > 5 * before.get_xlim()[1]  # each stage on its own x-axis
    assert "all 4 = 0" in texts(figure) and "BatchNorm: folded" in texts(figure)
