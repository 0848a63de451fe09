"""Grad-CAM (Selvaraju et al. 2017): a layer's channels weighted by the mean gradient of the
target's score over each channel, summed, kept where positive, and upsampled (bilinear) to the
input. Any layer of the model with a spatial output, by default the last one; a layer inside a
nested model is read through the nested model's output instead (its gradient needs the layer in
the graph the score is computed on).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import Field
from skimage.transform import resize

from mindscope.engine.explain.explanation import NO_SMOOTHING, Explanation, Smoothing, smoothed
from mindscope.engine.explain.method import Context, Method, MethodParams, ModelPort
from mindscope.engine.work import current_work

# (images (N, H, W, C), targets (N,)) -> (the layer's activations (N, h, w, c), d F[target] / d them, F (N, K))
LayerGradientFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def cam(activations: np.ndarray, gradients: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One (h, w, c) layer output and its gradients -> float32 (H, W, 1) map, >= 0."""
    weights = gradients.astype(np.float64).mean(axis=(0, 1))
    weighted = np.maximum(np.tensordot(activations.astype(np.float64), weights, axes=([2], [0])), 0.0)
    return resize(weighted, size, order=1, mode="edge", anti_aliasing=False)[..., None].astype(np.float32)


def grad_cam(
    layer_gradients: LayerGradientFn,
    layer: str,
    image: np.ndarray,
    target: int,
    smoothing: Smoothing = NO_SMOOTHING,
    internal_batch_size: int = 64,
) -> Explanation:
    size = image.shape[:2]

    def batched(images: np.ndarray) -> tuple[np.ndarray, int, int]:
        maps = []
        for start in range(0, len(images), internal_batch_size):
            current_work().check()
            rows = images[start : start + internal_batch_size]
            activations, grads, _ = layer_gradients(rows, np.full(len(rows), target, np.int32))
            maps += [cam(a, g, size) for a, g in zip(activations, grads, strict=True)]
        return np.stack(maps), len(images), 0

    return smoothed("grad-cam", image, target, smoothing, batched, {"layer": layer})


class GradCamParams(MethodParams):
    layer: str | None = Field(
        None, max_length=200, description="a layer of the model with a spatial output; default: the last one"
    )


class GradCam(Method):
    name = "grad-cam"
    title = "Grad-CAM"
    summary = "Grad-CAM: a layer's channels weighted by their mean gradient, kept where positive, upsampled"
    Params = GradCamParams
    sign = "positive"
    signed = False

    def layer_name(self, port: ModelPort, params: GradCamParams) -> str:
        """The layer asked for, or the outer model's last layer with a spatial output."""
        outer = [info.name for info in port.layers if "/" not in info.name]
        if params.layer is not None or not outer:  # no layers: `layer` says why (a SavedModel's graph)
            return port.layer(params.layer or "last").name
        return outer[-1]

    def check(self, port: ModelPort, params: MethodParams, context: Context) -> None:
        assert isinstance(params, GradCamParams)
        port.layer_gradients(self.layer_name(port, params), context.score)  # a nested layer is refused here

    def rows(self, port: ModelPort, params: MethodParams, context: Context) -> int:
        return 1

    def run(
        self, port: ModelPort, image: np.ndarray, target: int, params: MethodParams, context: Context
    ) -> Explanation:
        assert isinstance(params, GradCamParams)
        layer = self.layer_name(port, params)
        gradients = port.layer_gradients(layer, context.score)
        return grad_cam(gradients, layer, image, target, context.smoothing, context.caps.rows_per_chunk)
