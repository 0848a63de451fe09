"""Every explanation method over HTTP on the committed model: one answer shape, PNGs, caps."""

import numpy as np
import pytest

from .helpers import array_of, assert_error, decode_png

JPEG = {"Content-Type": "image/jpeg"}
METHODS = {
    "vanilla-gradients": ("", (32, 32, 3), 1, 0),
    "gradient-x-input": ("samples=4", (32, 32, 3), 4, 0),
    "grad-cam": ("", (32, 32, 1), 1, 0),
    "occlusion": ("size=8&stride=4", (32, 32, 1), 0, 7 * 7 + 1),
    "blur-ig": ("steps=16&max_sigma=6", (32, 32, 3), 16, 0),
    "guided-ig": ("steps=16", (32, 32, 3), 16, 0),
    "xrai": ("steps=8", (32, 32, 1), 2 * (8 + 2), 0),  # two paths, each with its two ends
    "shap": ("max_evals=64", (32, 32, 3), 0, 64),
}


@pytest.mark.parametrize("method", METHODS)
def test_each_method_answers_the_same_shape(client, sample_jpeg, method):
    query, shape, gradient_rows, forward_rows = METHODS[method]
    body = client.post(f"/explain/{method}?target=cat&{query}", content=sample_jpeg, headers=JPEG).json()
    assert body["method"] == method and body["target"] == {"index": 3, "label": "cat"}
    attributions = array_of(body["attributions"])
    assert attributions.shape == shape and np.isfinite(attributions).all() and np.abs(attributions).max() > 0
    # one forward row finds the probabilities (and the target when none is given)
    assert body["evaluations"] == {"gradient": gradient_rows, "forward": forward_rows + 1}
    assert body["seconds"] > 0 and body["score"] == "probability"
    assert array_of(body["probabilities"]).sum() == pytest.approx(1, abs=1e-4)
    picture = client.post(f"/explain/{method}?{query}&format=png", content=sample_jpeg, headers=JPEG)
    assert picture.headers["content-type"] == "image/png" and decode_png(picture.content).size == (1200, 470)


def test_the_listing_names_every_method_with_its_parameters(client):
    methods = {m["name"]: m for m in client.get("/explain").json()["methods"]}
    assert set(METHODS) | {"integrated-gradients", "interior-gradients"} <= set(methods)
    samples = next(p for p in methods["vanilla-gradients"]["parameters"] if p["name"] == "samples")
    assert samples["schema"]["default"] == 0
    layer = next(p for p in methods["grad-cam"]["parameters"] if p["name"] == "layer")
    assert "spatial output" in layer["description"]


def test_xrai_answers_its_regions_by_rank(client, sample_jpeg):
    body = client.post("/explain/xrai?steps=8", content=sample_jpeg, headers=JPEG).json()
    ranks, gains = array_of(body["regions"]), array_of(body["attributions"])[..., 0]
    assert ranks.shape == (32, 32) and ranks.min() == 1 and ranks.max() == body["parameters"]["regions"]
    # Rank 1 is the region of highest gain.
    assert gains[ranks == 1].min() == gains.max()


def test_smoothgrad_is_repeatable_and_its_kinds_differ(client, sample_jpeg):
    url = "/explain/vanilla-gradients?samples=8&seed=3"
    first = array_of(client.post(url, content=sample_jpeg, headers=JPEG).json()["attributions"])
    again = array_of(client.post(url, content=sample_jpeg, headers=JPEG).json()["attributions"])
    other = array_of(client.post(url + "1", content=sample_jpeg, headers=JPEG).json()["attributions"])
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    var = client.post(url + "&smooth=var", content=sample_jpeg, headers=JPEG).json()
    assert (array_of(var["attributions"]) >= 0).all() and var["parameters"]["smoothing"]["kind"] == "var"


def test_grad_cam_reads_any_layer_and_names_it(client, sample_jpeg):
    default = client.post("/explain/grad-cam", content=sample_jpeg, headers=JPEG).json()
    assert default["parameters"]["layer"] == "conv9"
    earlier = client.post("/explain/grad-cam?layer=6&score=logit", content=sample_jpeg, headers=JPEG).json()
    assert earlier["parameters"]["layer"] == "conv6" and earlier["score"] == "logit"
    assert_error(client.post("/explain/grad-cam?layer=conv0", content=sample_jpeg, headers=JPEG), 404, "unknown_layer")


def test_caps_and_bad_values_are_clear_errors(client, sample_jpeg):
    too_many = assert_error(
        client.post("/explain/vanilla-gradients?samples=100000", content=sample_jpeg, headers=JPEG),
        422,
        "invalid_input",
    )
    assert "MINDSCOPE_MAX_SAMPLES" in too_many["message"]
    rows = assert_error(
        client.post("/explain/blur-ig?samples=64&steps=1000", content=sample_jpeg, headers=JPEG), 422, "invalid_input"
    )
    assert "MINDSCOPE_MAX_ROWS" in rows["message"]
    big = assert_error(
        client.post("/explain/occlusion?size=64", content=sample_jpeg, headers=JPEG), 422, "invalid_input"
    )
    assert "size" in big["message"]
    assert client.post("/explain/guided-ig?fraction=0", content=sample_jpeg, headers=JPEG).status_code == 422


def reference_curve(model, image: np.ndarray, attributions: np.ndarray, target: int, kind: str, steps: int):
    """Deletion/insertion in float64 with the Keras model, written out plainly: pixel by pixel."""
    per_pixel = attributions.astype(np.float64).sum(axis=-1)
    ranked = sorted(np.ndindex(per_pixel.shape), key=lambda p: (-per_pixel[p], p[0] * per_pixel.shape[1] + p[1]))
    total = len(ranked)
    scores, fractions = [], []
    for step in range(steps + 1):
        count = int(round(step * total / steps))
        current = image.astype(np.float64).copy() if kind == "deletion" else np.zeros_like(image, np.float64)
        for row, col in ranked[:count]:
            current[row, col] = 0.0 if kind == "deletion" else image[row, col]
        scores.append(float(np.asarray(model(current[None].astype(np.float32), training=False))[0, target]))
        fractions.append(count / total)
    area = sum((scores[i] + scores[i + 1]) / 2 * (fractions[i + 1] - fractions[i]) for i in range(steps))
    return fractions, scores, area


def test_deletion_and_insertion_agree_with_a_plain_float64_computation(client, committed_model, validation_sample):
    from PIL import Image

    path = validation_sample[2][4]
    image = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
    body = client.post(
        "/explain/gradient-x-input?evaluate=deletion,insertion&evaluate_steps=8",
        content=path.read_bytes(),
        headers=JPEG,
    ).json()
    target, attributions = body["target"]["index"], array_of(body["attributions"])
    for kind in ("deletion", "insertion"):
        fractions, scores, area = reference_curve(committed_model.model, image, attributions, target, kind, 8)
        answer = body["evaluation"][kind]
        assert answer["fractions"] == pytest.approx(fractions)
        assert answer["scores"] == pytest.approx(scores, abs=1e-4)
        assert answer["area"] == pytest.approx(area, abs=1e-4)
    assert body["evaluation"]["sanity"] is None
    # A faithful map: the probability falls sooner as its top pixels go than it rises as they return.
    assert body["evaluation"]["deletion"]["area"] < body["evaluation"]["insertion"]["area"]


def test_the_sanity_check_tells_a_trained_model_from_its_own_copy(client, sample_jpeg, committed_store, tmp_path):
    import json
    import shutil

    from fastapi.testclient import TestClient
    from mindscope.app import create_app
    from mindscope.config import Settings
    from mindscope.engine.store import sha256_file

    from ..conftest import wait_ready

    url = "/explain/vanilla-gradients?evaluate=sanity"
    trained = client.post(url, content=sample_jpeg, headers=JPEG).json()["evaluation"]["sanity"]
    # The same entry whose "initial" weights are the trained ones: the check must see no difference.
    entry = tmp_path / "store" / "copy" / "1"
    shutil.copytree(committed_store.entry_dir(committed_store.resolve()), entry)
    import keras

    keras.saving.load_model(entry / "model.keras").save_weights(entry / "initial.weights.h5")
    metadata = json.loads((entry / "metadata.json").read_text())
    metadata["files"]["initial.weights.h5"]["sha256"] = sha256_file(entry / "initial.weights.h5")
    (entry / "metadata.json").write_text(json.dumps(metadata))
    with TestClient(create_app(Settings(model_store_dir=tmp_path / "store"))) as same:
        wait_ready(same)
        copied = same.post(url, content=sample_jpeg, headers=JPEG).json()["evaluation"]["sanity"]
    print(
        f"sanity rank correlation: trained vs initial {trained['rank_correlation']:.3f}, vs itself "
        f"{copied['rank_correlation']:.3f}"
    )
    assert copied["rank_correlation"] > 0.999
    assert trained["rank_correlation"] < 0.5


def test_evaluations_are_refused_clearly(client, sample_jpeg, tmp_path, committed_store):
    error = assert_error(
        client.post("/explain/occlusion?evaluate=deletion,truth", content=sample_jpeg, headers=JPEG),
        422,
        "invalid_input",
    )
    assert error["details"]["valid_evaluations"] == ["deletion", "insertion", "sanity"]


def test_integrated_gradients_take_the_same_evaluations(client, sample_jpeg):
    body = client.post(
        "/explain/integrated-gradients?steps=32&evaluate=deletion,insertion,sanity&evaluate_steps=4",
        content=sample_jpeg,
        headers=JPEG,
    ).json()
    evaluation = body["evaluation"]
    assert len(evaluation["deletion"]["scores"]) == len(evaluation["insertion"]["scores"]) == 5
    # Both curves start or end at the image itself, whose probability the answer gives.
    p = array_of(body["probabilities"])[body["target"]["index"]]
    assert evaluation["deletion"]["scores"][0] == pytest.approx(p, abs=1e-4)
    assert evaluation["insertion"]["scores"][-1] == pytest.approx(p, abs=1e-4)
    assert -1 <= evaluation["sanity"]["rank_correlation"] < 0.9
    assert (
        client.post("/explain/integrated-gradients?steps=8", content=sample_jpeg, headers=JPEG).json()["evaluation"]
        is None
    )


def test_the_png_draws_the_trust_scores_when_asked(client, sample_jpeg):
    """With evaluate, the picture gains a fourth panel: the curves (and the sanity check)."""
    import io

    from PIL import Image

    sizes = {}
    for query in ("", "&evaluate=deletion,insertion,sanity&evaluate_steps=4"):
        answer = client.post(f"/explain/gradient-x-input?format=png{query}", content=sample_jpeg, headers=JPEG)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        sizes[query] = Image.open(io.BytesIO(answer.content)).size
    plain, trusted = sizes.values()
    assert trusted[0] > plain[0] * 1.2 and trusted[1] == plain[1]


def test_integrated_gradients_take_smoothgrad_and_keep_completeness(client, committed_model, validation_sample):
    """samples > 0: the mean of each noisy copy's integrated gradients, as the engine computes them
    one by one, and the completeness check against the copies' mean score."""
    from mindscope.engine.explain.explanation import Smoothing
    from mindscope.engine.explain.integrated_gradients import attribute

    image = (validation_sample[0][0] / 255).astype(np.float32)
    body = {"instances": [image.tolist()], "value_range": "0-1"}
    url = "/explain/integrated-gradients?steps=16&samples=4&seed=7&target=3"
    answer = client.post(url, json=body).json()
    assert answer["smoothing"] == {"samples": 4, "noise": 0.15, "kind": "mean", "seed": 7}
    assert answer["gradient_evaluations"] == 1 + 4 * (16 + 2)
    assert answer["completeness"]["relative_delta"] < 0.01
    copies = Smoothing(4, 0.15, "mean", 7).images(image)
    runs = [attribute(committed_model.gradients, copy, target=3, steps=16) for copy in copies]
    expected = np.mean([run.attributions for run in runs], axis=0)
    np.testing.assert_allclose(array_of(answer["attributions"]), expected, rtol=1e-4, atol=1e-7)
    assert answer["completeness"]["output_at_input"] == pytest.approx(np.mean([r.output_at_input for r in runs]))
    plain = client.post("/explain/integrated-gradients?steps=16&target=3", json=body).json()
    assert plain["smoothing"] is None and plain["probabilities"] == answer["probabilities"]
    assert client.post(url, json=body).json()["attributions"] == answer["attributions"]  # the seed repeats it
    picture = client.post(url + "&format=png", json=body)
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"


def test_integrated_gradients_refuse_smoothing_that_breaks_completeness(client, sample_jpeg):
    square = assert_error(
        client.post("/explain/integrated-gradients?samples=2&smooth=square", content=sample_jpeg, headers=JPEG),
        422,
        "invalid_input",
    )
    assert square["details"]["valid_smooth"] == ["mean"]
    assert_error(
        client.post("/explain/integrated-gradients?samples=2&tolerance=0.01", content=sample_jpeg, headers=JPEG),
        422,
        "invalid_input",
    )
    too_many = assert_error(
        client.post("/explain/integrated-gradients?samples=64&steps=1024", content=sample_jpeg, headers=JPEG),
        422,
        "invalid_input",
    )
    assert too_many["details"]["max_rows"] == 16384


def test_occlusion_values_are_the_mean_fall_in_probability_computed_by_hand(client, sample_jpeg, committed_store):
    """Against Keras itself: with 8x8 patches every 4 pixels, each pixel's value is the mean over the
    patches covering it of p(target | image) - p(target | that patch set to 0.5)."""
    import io

    import keras
    from PIL import Image

    body = client.post(
        "/explain/occlusion?target=cat&size=8&stride=4&value=0.5", content=sample_jpeg, headers=JPEG
    ).json()
    assert body["values"] == "mean fall in the target's probability when a 8x8 patch of 0.5 covers the pixel"
    model = keras.saving.load_model(committed_store.entry_dir(committed_store.resolve()) / "model.keras")
    image = np.asarray(Image.open(io.BytesIO(sample_jpeg)).convert("RGB"), np.float32) / 255
    original = float(model(image[None])[0, 3])
    falls, covering = np.zeros((32, 32)), np.zeros((32, 32))
    for r in range(0, 25, 4):
        for c in range(0, 25, 4):
            hidden = image.copy()
            hidden[r : r + 8, c : c + 8] = 0.5
            falls[r : r + 8, c : c + 8] += original - float(model(hidden[None])[0, 3])
            covering[r : r + 8, c : c + 8] += 1
    np.testing.assert_allclose(array_of(body["attributions"])[..., 0], falls / covering, atol=2e-5)
    assert np.abs(array_of(body["attributions"])).max() <= 1  # probability units


def test_shap_over_http_equals_the_shap_library_on_the_keras_model(client, sample_jpeg, committed_store):
    """Independent of the service: shap's own PartitionExplainer on the Keras model loaded here."""
    import io

    import keras
    import shap
    from PIL import Image

    query = "max_evals=200&masker=constant&value=0.5&batch_size=10&target=cat"
    body = client.post(f"/explain/shap?{query}", content=sample_jpeg, headers=JPEG).json()
    model = keras.saving.load_model(committed_store.entry_dir(committed_store.resolve()) / "model.keras")
    image = np.asarray(Image.open(io.BytesIO(sample_jpeg)).convert("RGB"), np.float32) / 255
    explainer = shap.PartitionExplainer(
        lambda x: np.asarray(model(np.asarray(x, np.float32), training=False)), shap.maskers.Image(0.5, image.shape)
    )
    theirs = explainer(image[None], max_evals=200, batch_size=10, outputs=[3], silent=True).values[0][..., 0]
    ours = array_of(body["attributions"])
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.999
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # Shapley efficiency, checked in the answer as integrated gradients check completeness.
    efficiency = body["parameters"]["efficiency"]
    change = efficiency["output_at_input"] - efficiency["output_masked"]
    assert efficiency["attribution_sum"] == pytest.approx(change, abs=1e-6) and efficiency["delta"] < 1e-6
    assert body["evaluations"] == {"gradient": 0, "forward": 200 + 1}  # max_evals, and the prediction
    assert body["parameters"]["masker"] == "constant" and body["parameters"]["value"] == 0.5
    blurred = client.post("/explain/shap?max_evals=64", content=sample_jpeg, headers=JPEG).json()
    assert blurred["parameters"]["masker"] == "blur" and blurred["parameters"]["kernel"] == 8
