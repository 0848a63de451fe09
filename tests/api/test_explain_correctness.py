"""Every method of the registry, over HTTP, equals an independent computation: PAIR saliency on
the Keras model through this suite's own GradientTape (tests/reference.py), or the shap library
(tests/api/test_explain_methods.py). A new method fails here until it has its reference."""

import io

import numpy as np
import pytest
import saliency.core as saliency
from mindscope.engine.explain.registry import METHODS
from PIL import Image

from ..reference import TARGET_KEY, NumpyTwoQuantile, keras_call_model_function
from .helpers import array_of

JPEG = {"Content-Type": "image/jpeg"}
CHECKED_ELSEWHERE = {"shap": "test_explain_methods.py::test_shap_over_http_equals_the_shap_library_on_the_keras_model"}


def correlation(a, b) -> float:
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])


@pytest.fixture(scope="module")
def case(committed_model, sample_jpeg):
    image = np.asarray(Image.open(io.BytesIO(sample_jpeg)).convert("RGB"), np.float32) / 255
    call = keras_call_model_function(committed_model.model)
    probabilities = np.asarray(committed_model.model(image[None], training=False))[0]
    target = int(np.argmax(probabilities))
    return image, call, {TARGET_KEY: target}, target


def ask(client, sample_jpeg, method: str, query: str) -> np.ndarray:
    body = client.post(f"/explain/{method}?{query}", content=sample_jpeg, headers=JPEG).json()
    return array_of(body["attributions"])


def covering(size: int, shape=(32, 32)) -> np.ndarray:
    counts = np.zeros(shape)
    for r in range(shape[0] - size + 1):
        for c in range(shape[1] - size + 1):
            counts[r : r + size, c : c + size] += 1
    return counts


def reference(method: str, image, call, args, monkeypatch):
    """(query, PAIR's map, how they must agree) for each method."""
    zeros = np.zeros_like(image)
    if method == "vanilla-gradients":
        return "sign=all", saliency.GradientSaliency().GetMask(image, call, args), 0.9999
    if method == "gradient-x-input":
        return "", saliency.GradientSaliency().GetMask(image, call, args) * image, 0.9999
    if method == "integrated-gradients":
        theirs = saliency.IntegratedGradients().GetMask(image, call, args, x_steps=256, x_baseline=zeros, batch_size=64)
        return "steps=64", theirs, 0.99
    if method == "blur-ig":
        return "steps=40&max_sigma=8", saliency.BlurIG().GetMask(image, call, args, max_sigma=8, steps=40), 0.999
    if method == "guided-ig":
        import saliency.core.guided_ig as pair_guided_ig

        monkeypatch.setattr(pair_guided_ig, "np", NumpyTwoQuantile())
        theirs = saliency.GuidedIG().GetMask(image, call, args, x_steps=40, x_baseline=zeros, max_dist=0.1)
        return "steps=40&max_dist=0.1", theirs, 0.999
    if method == "grad-cam":
        return "layer=conv9", saliency.GradCam().GetMask(image, call, args, three_dims=False)[..., None], 0.99
    if method == "occlusion":
        theirs = saliency.Occlusion().GetMask(image, call, args, size=6, value=0.5)[..., :1] / covering(6)[..., None]
        return "size=6&stride=1&value=0.5", theirs, 0.99999
    if method == "xrai":
        from saliency.core.xrai import XRAIParameters

        theirs = saliency.XRAI().GetMask(image, call, args, batch_size=100, extra_parameters=XRAIParameters(steps=100))
        return "steps=32", theirs[..., None], 0.95  # each side integrates with its own rule; the same regions
    raise AssertionError(f"{method} has no independent reference here; add one")


@pytest.mark.parametrize("method", [m.name for m in METHODS if m.name not in CHECKED_ELSEWHERE])
def test_the_answer_equals_an_independent_computation(client, sample_jpeg, case, monkeypatch, method):
    image, call, args, target = case
    query, theirs, agreement = reference(method, image, call, args, monkeypatch)
    ours = ask(client, sample_jpeg, method, f"{query}&target={target}".lstrip("&"))
    assert ours.shape == theirs.shape
    assert correlation(ours, theirs) >= agreement, method
    if method in ("vanilla-gradients", "gradient-x-input", "occlusion"):  # the same arithmetic: the same values
        np.testing.assert_allclose(ours, theirs, atol=1e-5 * max(1.0, float(np.abs(theirs).max())))
