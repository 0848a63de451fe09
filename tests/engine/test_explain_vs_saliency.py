"""Each explanation method against PAIR saliency (github.com/PAIR-code/saliency, a test-only
dependency), on the committed model, the same image and the same parameters.

PAIR's methods get the model through their `call_model_function`; for the gradient methods it
hands them the model's own compiled gradient, for Grad-CAM a Keras sub-model and a GradientTape
written here, for occlusion the model's forward pass. What is compared is each method's own
arithmetic: the maps must correlate at 0.99 or more (Pearson, over every value of the map).
"""

import numpy as np
import pytest
import saliency.core as saliency
from mindscope.engine.explain.blur_ig import blur, blur_integrated_gradients
from mindscope.engine.explain.explanation import Smoothing
from mindscope.engine.explain.grad_cam import grad_cam
from mindscope.engine.explain.gradients import vanilla_gradients
from mindscope.engine.explain.guided_ig import guided_integrated_gradients
from mindscope.engine.explain.integrated_gradients import attribute
from mindscope.engine.explain.occlusion import occlusion
from scipy import ndimage

from ..reference import TARGET_KEY, NumpyTwoQuantile, keras_call_model_function


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])


@pytest.fixture(scope="module")
def case(committed_model, validation_sample):
    image = validation_sample[0][3].astype(np.float32) / 255
    target = int(np.argmax(committed_model.predict(image[None])[0]))
    return committed_model, image, target


def pair_model(loaded):
    """PAIR's call_model_function over the same Keras model, by this test's own tape (tests/reference.py)."""
    return keras_call_model_function(loaded.model)


def test_vanilla_gradients_match(case):
    loaded, image, target = case
    ours = vanilla_gradients(loaded.gradients, image, target)
    theirs = saliency.GradientSaliency().GetMask(image, pair_model(loaded), {TARGET_KEY: target})
    assert ours.attributions.shape == image.shape and ours.gradient_evaluations == 1
    assert correlation(ours.attributions, theirs) > 0.999


def test_integrated_gradients_match(case):
    loaded, image, target = case
    ours = attribute(loaded.gradients, image, target, steps=64)
    theirs = saliency.IntegratedGradients().GetMask(
        image, pair_model(loaded), {TARGET_KEY: target}, x_steps=256, x_baseline=np.zeros_like(image), batch_size=64
    )
    assert correlation(ours.attributions, theirs) > 0.99


def test_blur_ig_matches(case):
    loaded, image, target = case
    ours = blur_integrated_gradients(loaded.gradients, image, target, steps=40, max_sigma=8)
    theirs = saliency.BlurIG().GetMask(
        image, pair_model(loaded), {TARGET_KEY: target}, max_sigma=8, steps=40, batch_size=20
    )
    assert ours.gradient_evaluations == 40
    assert correlation(ours.attributions, theirs) > 0.999


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.7, 12.5, 50.0, 50.01])
@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 20, 1)])
def test_blur_is_scipys_gaussian_filter(sigma, shape):
    """Blur IG blurs with two small matrix products; they compute scipy's filter (zeros beyond
    the edges, the kernel cut at 4 sigma) to float32 rounding."""
    image = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    expected = ndimage.gaussian_filter(image, sigma=[sigma, sigma, 0], mode="constant")
    np.testing.assert_allclose(blur(image, sigma), expected, rtol=0, atol=2e-7)


def test_guided_ig_matches(case, monkeypatch):
    import saliency.core.guided_ig as pair_guided_ig

    monkeypatch.setattr(pair_guided_ig, "np", NumpyTwoQuantile())
    loaded, image, target = case
    ours = guided_integrated_gradients(loaded.gradients, image, target, steps=40, fraction=0.25, max_dist=0.1)
    theirs = saliency.GuidedIG().GetMask(
        image, pair_model(loaded), {TARGET_KEY: target}, x_steps=40, x_baseline=np.zeros_like(image), max_dist=0.1
    )
    assert ours.gradient_evaluations == 40
    assert correlation(ours.attributions, theirs) > 0.999


def test_grad_cam_matches(case):
    loaded, image, target = case
    ours = grad_cam(loaded.layer_gradients("conv9"), "conv9", image, target)
    theirs = saliency.GradCam().GetMask(image, pair_model(loaded), {TARGET_KEY: target}, three_dims=False)
    assert ours.attributions.shape == (*image.shape[:2], 1)
    assert correlation(ours.attributions[..., 0], theirs) > 0.99


def test_occlusion_matches(case):
    loaded, image, target = case
    ours = occlusion(loaded.predict, image, target, size=6, stride=1, value=0.5)
    theirs = saliency.Occlusion().GetMask(image, pair_model(loaded), {TARGET_KEY: target}, size=6, value=0.5)
    assert ours.forward_evaluations == 27 * 27 + 1
    # PAIR sums the falls of the patches over a pixel; ours is their mean: times the patch count.
    covering = np.zeros((32, 32))
    for r in range(27):
        for c in range(27):
            covering[r : r + 6, c : c + 6] += 1
    np.testing.assert_allclose(ours.attributions[..., 0] * covering, theirs[..., 0], atol=1e-5)


def test_smoothgrad_agrees_in_expectation(case):
    """SmoothGrad is random. The statistic: with 64 samples each, ours (seeded) and PAIR's
    (numpy's global generator, seeded) average the same noisy gradients, so their maps correlate
    far better with each other than either does with the plain gradient they smooth."""
    loaded, image, target = case
    ours = vanilla_gradients(loaded.gradients, image, target, Smoothing(samples=64, noise=0.15, seed=1))
    np.random.seed(2)
    theirs = saliency.GradientSaliency().GetSmoothedMask(
        image, pair_model(loaded), {TARGET_KEY: target}, stdev_spread=0.15, nsamples=64, magnitude=False
    )
    plain = vanilla_gradients(loaded.gradients, image, target).attributions
    assert ours.gradient_evaluations == 64
    agreement = correlation(ours.attributions, theirs)
    print(f"smoothgrad: ours vs PAIR {agreement:.3f}, ours vs plain {correlation(ours.attributions, plain):.3f}")
    assert agreement > 0.8
    assert agreement > correlation(theirs, plain) + 0.1
    squares = vanilla_gradients(loaded.gradients, image, target, Smoothing(samples=64, kind="square", seed=1))
    np.random.seed(2)
    pair_squares = saliency.GradientSaliency().GetSmoothedMask(
        image, pair_model(loaded), {TARGET_KEY: target}, stdev_spread=0.15, nsamples=64, magnitude=True
    )
    assert correlation(squares.attributions, pair_squares) > 0.8
    # The same seed gives the same answer.
    again = vanilla_gradients(loaded.gradients, image, target, Smoothing(samples=64, noise=0.15, seed=1))
    np.testing.assert_array_equal(again.attributions, ours.attributions)


def test_xrai_ranks_the_same_regions(case):
    """Given the same pixel attributions, our region ranking is PAIR's exactly; with each side's
    own integrated gradients (ours: Gauss-Legendre, 32 steps; PAIR: 100 uniform steps), the top
    regions covering 30% of the image are the same pixels to within a few percent."""
    from mindscope.engine.explain.xrai import rank_regions, regions, xrai
    from saliency.core.xrai import XRAIParameters

    loaded, image, target = case
    ours = xrai(loaded.gradients, image, target, steps=32)
    assert ours.attributions.shape == (32, 32, 1) and ours.regions.max() == ours.details["regions"]
    pair = saliency.XRAI()
    theirs = pair.GetMaskWithDetails(
        image, pair_model(loaded), {TARGET_KEY: target}, batch_size=100, extra_parameters=XRAIParameters(steps=100)
    )
    # The same attribution in: the same map and the same ranks out.
    base = np.stack([ours_ig(loaded, image, target, value) for value in (image.min(), image.max())]).mean(axis=0)
    gains, ranks = rank_regions(base.max(axis=-1).astype(np.float64), regions(image))
    same = pair.GetMaskWithDetails(
        image,
        pair_model(loaded),
        {TARGET_KEY: target},
        base_attribution=base,
        extra_parameters=XRAIParameters(return_xrai_segments=True),
    )
    np.testing.assert_allclose(gains, same.attribution_mask, rtol=1e-6)
    np.testing.assert_array_equal(ranks, same.segments)
    # End to end: the top 30% of the image by region gain.
    top_ours = ours.attributions[..., 0] >= np.quantile(ours.attributions, 0.7)
    top_theirs = theirs.attribution_mask >= np.quantile(theirs.attribution_mask, 0.7)
    overlap = (top_ours & top_theirs).sum() / max(top_ours.sum(), top_theirs.sum())
    agreement = correlation(ours.attributions[..., 0], theirs.attribution_mask)
    print(f"xrai: top-30% overlap {overlap:.3f}, map correlation {agreement:.3f}")
    assert overlap > 0.9
    assert agreement > 0.95


def ours_ig(loaded, image, target, value):
    return attribute(loaded.gradients, image, target, np.full_like(image, value), steps=32).attributions
