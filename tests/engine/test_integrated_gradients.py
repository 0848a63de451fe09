"""Integrated gradients: maths on functions with known integrals, then on the committed model."""

import numpy as np
import pytest
import tensorflow as tf
from mindscope.engine.explain.integrated_gradients import attribute, gaussian_blur, interior_gradients, make_baseline
from mindscope.engine.work import RequestWork, request_work
from mindscope.errors import DeadlineExceeded, InvalidInput, RequestCancelled

SHAPE = (4, 4, 3)


def quadratic_model(weights: np.ndarray):
    """F_k(x) = sum(weights[k] * x^2): IG_i = weights[k]_i * (x_i^2 - x'_i^2) exactly."""

    def gradient_fn(images, targets):
        outputs = np.einsum("khwc,nhwc->nk", weights, images**2)
        return (2 * weights[targets] * images).astype(np.float32), outputs.astype(np.float32)

    return gradient_fn


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(3, *SHAPE))
    return quadratic_model(weights), weights, rng.uniform(size=SHAPE).astype(np.float32)


@pytest.mark.parametrize("method", ["gauss_legendre", "riemann_trapezoid", "riemann_midpoint"])
def test_attributions_equal_the_exact_integral(setup, method):
    gradient_fn, weights, image = setup
    baseline = np.full(SHAPE, 0.25, np.float32)
    result = attribute(gradient_fn, image, target=1, baseline=baseline, steps=2, method=method)
    # The gradient is linear in alpha, so every one of these rules integrates it exactly.
    np.testing.assert_allclose(result.attributions, weights[1] * (image**2 - baseline**2), rtol=1e-5, atol=1e-6)
    assert result.relative_delta < 1e-5


def test_left_riemann_is_biased_and_reports_it(setup):
    gradient_fn, _, image = setup
    result = attribute(gradient_fn, image, target=0, steps=4, method="riemann_left")
    # The left sum of the integrand 2a over n points is 1 - 1/n: short by exactly 1/n.
    assert result.relative_delta == pytest.approx(1 / 4, rel=1e-4)


def test_default_target_is_the_predicted_class(setup):
    gradient_fn, weights, image = setup
    predicted = int(np.argmax(np.einsum("khwc,hwc->k", weights, image**2)))
    assert attribute(gradient_fn, image, steps=4).target == predicted


def test_chunking_does_not_change_the_result(setup):
    gradient_fn, _, image = setup
    one = attribute(gradient_fn, image, target=2, steps=33, internal_batch_size=64)
    chunked = attribute(gradient_fn, image, target=2, steps=33, internal_batch_size=5)
    np.testing.assert_array_equal(one.attributions, chunked.attributions)


def test_tolerance_doubles_steps_until_met():
    """F = sum(x^4): a degree-3 gradient the trapezoid rule integrates only approximately."""

    def gradient_fn(images, targets):
        return (4 * images**3).astype(np.float32), np.sum(images**4, axis=(1, 2, 3))[:, None].astype(np.float32)

    image = np.ones(SHAPE, np.float32)
    loose = attribute(gradient_fn, image, target=0, steps=3, method="riemann_trapezoid")
    refined = attribute(
        gradient_fn, image, target=0, steps=3, method="riemann_trapezoid", tolerance=1e-3, max_steps=512
    )
    assert loose.relative_delta > 1e-3 >= refined.relative_delta
    assert refined.steps in (6, 12, 24, 48, 96, 192, 384)
    assert refined.gradient_evaluations == 2 + sum(3 * 2**k for k in range(int(np.log2(refined.steps // 3)) + 1))
    capped = attribute(gradient_fn, image, target=0, steps=3, method="riemann_trapezoid", tolerance=1e-9, max_steps=24)
    assert capped.steps == 24 and capped.relative_delta > 1e-9


def test_a_cancelled_or_late_request_stops_between_chunks(setup):
    gradient_fn, _, image = setup
    calls = []
    work = RequestWork()

    def cancelling(images, targets):
        calls.append(len(images))
        if len(calls) == 2:
            work.cancel("client disconnected")
        return gradient_fn(images, targets)

    with request_work(work), pytest.raises(RequestCancelled):
        attribute(cancelling, image, target=0, steps=100, internal_batch_size=10)
    assert calls == [10, 10]  # of 11 chunks, none after the cancellation

    now = [0.0]

    def outlives_the_deadline(images, targets):
        calls.append(len(images))
        if len(calls) == 3:  # this chunk is still running when the request's time runs out
            now[0] += 60
        return gradient_fn(images, targets)

    calls.clear()
    with request_work(RequestWork(timeout_s=60, clock=lambda: now[0])), pytest.raises(DeadlineExceeded):
        attribute(outlives_the_deadline, image, target=0, steps=100, internal_batch_size=10)
    assert calls == [10, 10, 10]  # one deadline for all 11 chunks: none starts after it passed


def test_unknown_method_and_mismatched_baseline_are_input_errors(setup):
    gradient_fn, _, image = setup
    with pytest.raises(InvalidInput):
        attribute(gradient_fn, image, method="simpson")
    with pytest.raises(InvalidInput):
        attribute(gradient_fn, image, baseline=np.zeros((2, 2, 3)))


def test_baselines():
    image = np.random.default_rng(0).uniform(size=(32, 32, 3)).astype(np.float32)
    assert make_baseline("black", image).max() == 0 and make_baseline("white", image).min() == 1
    blurred = make_baseline("blur", image)
    assert blurred.shape == image.shape and blurred.std() < image.std() / 3
    assert gaussian_blur(np.full((8, 8, 3), 0.5, np.float32), 2.0) == pytest.approx(0.5)
    noise = make_baseline("uniform-noise", image)
    assert 0 <= noise.min() and noise.max() <= 1
    np.testing.assert_array_equal(noise, make_baseline("uniform-noise", image))
    with pytest.raises(InvalidInput):
        make_baseline("grey", image)


def test_completeness_on_the_committed_model(committed_model, validation_sample):
    image = validation_sample[0][0].astype(np.float32) / 255
    result = attribute(committed_model.gradients, image, steps=64, method="gauss_legendre")
    assert result.relative_delta < 0.01
    assert result.output_at_input == pytest.approx(float(result.scores[result.target]))


def test_matches_a_float64_reference(committed_model, validation_sample):
    """A slow reference: the same net in float64, 256 Gauss-Legendre points, one gradient at a time."""
    image = validation_sample[0][1].astype(np.float32) / 255
    ours = attribute(committed_model.gradients, image, steps=64, method="gauss_legendre")

    import keras
    from mindscope.training.network import build_serving_model, widths_of

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        reference_model = build_serving_model(widths_of(committed_model.model), len(committed_model.class_names))
    finally:
        keras.config.set_dtype_policy(previous)
    reference_model.set_weights(committed_model.model.get_weights())
    x = image.astype(np.float64)
    nodes, weights = np.polynomial.legendre.leggauss(256)
    total = np.zeros_like(x)
    for alpha, weight in zip((nodes + 1) / 2, weights / 2, strict=True):
        point = tf.constant((alpha * x)[None])
        with tf.GradientTape() as tape:
            tape.watch(point)
            output = reference_model(point)[0, ours.target]
        total += weight * tape.gradient(output, point).numpy()[0]
    reference = x * total
    scale = np.abs(reference).max()
    assert np.abs(ours.attributions - reference).max() < 0.02 * scale
    assert np.corrcoef(ours.attributions.ravel(), reference.ravel())[0, 1] > 0.999


def test_interior_gradients_evaluate_each_alpha(committed_model, validation_sample):
    image = validation_sample[0][2].astype(np.float32) / 255
    alphas = np.array([0.1, 0.5, 1.0])
    result = interior_gradients(committed_model.gradients, image, alphas)
    assert result.gradients.shape == (3, 32, 32, 3)
    expected = committed_model.predict(alphas[:, None, None, None].astype(np.float32) * image[None])[:, result.target]
    np.testing.assert_allclose(result.outputs, expected, rtol=1e-5, atol=1e-6)


def test_logit_and_probability_rows_share_a_batch_and_each_gets_its_own_gradient(committed_model, validation_sample):
    """The committed model ends in a Softmax layer, so its logits are the Softmax's input."""
    import keras

    model = committed_model.model
    logits_of = keras.Model(model.input, model.get_layer("probabilities").input)
    images = validation_sample[0][:2].astype(np.float32) / 255
    point = tf.constant(images)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(point)
        logits = logits_of(point, training=False)
        probabilities = tf.nn.softmax(logits)
        on_logit, on_probability = logits[0, 3], probabilities[1, 5]
    assert committed_model.scores == ("probability", "logit")
    grads, scores = committed_model.gradients_now(images, np.array([3, 5]), np.array([1, 0]))
    np.testing.assert_allclose(scores[0], logits[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores[1], probabilities[1].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[0], tape.gradient(on_logit, point)[0].numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads[1], tape.gradient(on_probability, point)[1].numpy(), rtol=1e-4, atol=1e-7)

    result = attribute(committed_model.gradients_for("logit"), images[0], steps=64)
    assert result.relative_delta < 0.01
    assert result.output_at_input == pytest.approx(float(logits[0, result.target]), abs=1e-4)
