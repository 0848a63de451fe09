"""SHAP's Owen values against the `shap` library itself: its PartitionExplainer with an image
masker, on the same model, image, masker, max_evals and batch_size, at the same model rows."""

import numpy as np
import pytest
import shap
from mindscope.engine.explain.partition_shap import box_blur, owen_values, partition


@pytest.fixture(scope="module")
def case(committed_model, validation_sample):
    keras_model = committed_model.model
    rows: list[int] = []

    def forward(images):
        rows.append(len(images))
        return np.asarray(keras_model(np.asarray(images, np.float32), training=False))

    image = validation_sample[0][3].astype(np.float32) / 255
    target = int(np.argmax(forward(image[None])[0]))
    rows.clear()
    return forward, image, target, rows


def test_the_partition_is_shaps(case):
    _, image, _, _ = case
    theirs = shap.maskers.Image(0.5, image.shape).clustering
    ours = partition(image.shape)
    np.testing.assert_array_equal(ours.children, theirs[:, :2].astype(np.int64))
    np.testing.assert_array_equal(ours.sizes[ours.features :], theirs[:, 3].astype(np.int64))


def test_the_box_blur_is_opencvs(case):
    import cv2

    _, image, _, _ = case
    for kernel in (3, 4, 8):
        np.testing.assert_allclose(box_blur(image, kernel), cv2.blur(image, (kernel, kernel)), atol=1e-6)


@pytest.mark.parametrize(("masker", "max_evals", "batch_size"), [(0.5, 500, 64), ("blur(8,8)", 300, 10)])
def test_owen_values_equal_shaps_at_the_same_rows(case, masker, max_evals, batch_size):
    forward, image, target, rows = case
    explainer = shap.PartitionExplainer(forward, shap.maskers.Image(masker, image.shape))
    rows.clear()
    theirs = explainer(image[None], max_evals=max_evals, batch_size=batch_size, outputs=[target], silent=True)
    their_rows = sum(rows)
    hidden = np.full_like(image, masker) if isinstance(masker, float) else box_blur(image, 8)
    rows.clear()
    ours = owen_values(forward, image, hidden, target, max_evals, batch_size)
    assert sum(rows) == ours.evaluations <= their_rows
    # Exact but for float rounding: shap breaks ties between equal priorities at random, these in order.
    np.testing.assert_allclose(ours.values, theirs.values[0][..., 0], atol=1e-7)
    # Efficiency: the values sum to F(image) - F(all hidden).
    assert ours.values.sum() == pytest.approx(ours.output_at_input - ours.output_masked, abs=1e-9)
