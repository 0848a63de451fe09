"""What a channel looks for: the image that most activates it, by gradient ascent (Olah et al.
2017, "Feature Visualization").

The image is parametrized in Fourier space (Lucid's `fft_image`: each frequency scaled by
1/frequency, so ascent moves low frequencies first and the result is not high-frequency noise)
and, for RGB models, in decorrelated colour (Lucid's colour-correlation square root), then
squashed into [0, 1] by a sigmoid. Every step jitters the image by up to `jitter` pixels (a random
roll), so the ascent cannot exploit pixel-exact patterns, and maximizes the channel's mean
activation with Adam. The start comes from `seed`: the same request gives the same picture, and
the service caches it per model version.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from mindscope.engine.layer_paths import tap
from mindscope.engine.loaded_model import LoadedModel
from mindscope.engine.work import current_work

# Lucid's square root of the colour correlation of ImageNet photographs (its `color_correlation_svd_sqrt`).
_CORRELATION = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
COLOR_SQRT = (_CORRELATION / np.max(np.linalg.norm(_CORRELATION, axis=0))).astype(np.float32)


@dataclass(frozen=True)
class Visualization:
    layer: str
    channel: int
    image: np.ndarray  # float32 (H, W, C) in [0, 1], the model's input shape
    activation: float  # the channel's mean activation on it
    steps: int
    seed: int


LEARNING_RATE = 0.2


class _Adam:
    """Adam (Kingma & Ba) on a numpy array, ascending: a few kilobytes of parameters, so numpy
    between compiled gradient calls keeps the compiled function free of optimizer variables."""

    def __init__(self, shape: tuple[int, ...], rate: float, beta1: float = 0.9, beta2: float = 0.999) -> None:
        self.rate, self.beta1, self.beta2, self.t = rate, beta1, beta2, 0
        self.m: np.ndarray = np.zeros(shape, np.float32)
        self.v: np.ndarray = np.zeros(shape, np.float32)

    def ascend(self, values: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * gradient
        self.v = self.beta2 * self.v + (1 - self.beta2) * gradient * gradient
        m_hat, v_hat = self.m / (1 - self.beta1**self.t), self.v / (1 - self.beta2**self.t)
        return (values + self.rate * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(np.float32)


def _frequencies(height: int, width: int) -> np.ndarray:
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    return np.sqrt(fx * fx + fy * fy)


class Visualizer:
    """Gradient ascent for one model's layers, each compiled once; results cached."""

    def __init__(self, loaded: LoadedModel, cache_size: int = 256) -> None:
        self.loaded = loaded
        height, width, channels = loaded.input_shape
        self.shape = (height, width, channels)
        frequencies = _frequencies(height, width)
        self._scale = tf.constant((1.0 / np.maximum(frequencies, 1.0 / max(height, width)))[None].astype(np.float32))
        self._lock = threading.Lock()
        self._steps: dict[str, Any] = {}
        self._cache: OrderedDict[tuple[Any, ...], Visualization] = OrderedDict()
        self._cache_size = cache_size

    def image(self, spectra: tf.Tensor) -> tf.Tensor:
        """Parameters (N, 2, C, H, W//2+1) -> images (N, H, W, C) in [0, 1]."""
        height, width, channels = self.shape
        complex_spectra = tf.complex(spectra[:, 0], spectra[:, 1]) * tf.cast(self._scale, tf.complex64)
        pixels = tf.signal.irfft2d(complex_spectra, fft_length=[height, width])  # (N, C, H, W)
        pixels = tf.transpose(pixels, [0, 2, 3, 1]) / 4.0
        if channels == 3:
            pixels = tf.reshape(tf.reshape(pixels, [-1, 3]) @ tf.constant(COLOR_SQRT.T), tf.shape(pixels))
        return tf.sigmoid(pixels)

    def _step_fn(self, layer: str) -> Any:
        with self._lock:
            step = self._steps.get(layer)
            if step is not None:
                return step
            tapped = tap(self.loaded.model, [layer])
            preprocess = self.loaded.input_spec.apply

            def objective(images: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:
                """Each image's mean activation of its own channel: (N,)."""
                (output,) = tapped(preprocess(images))
                selected = tf.gather(output, channels, axis=-1, batch_dims=1)  # (N, h, w)
                return tf.reduce_mean(tf.reshape(selected, [tf.shape(selected)[0], -1]), axis=1)

            @tf.function
            def step(spectra: tf.Tensor, channels: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
                with tf.GradientTape() as tape:
                    tape.watch(spectra)
                    images = tf.roll(self.image(spectra), shift, axis=[1, 2])
                    # Rows do not interact, so the gradient of the sum is each row's own.
                    total = tf.reduce_sum(objective(images, channels))
                return tape.gradient(total, spectra)

            self._steps[layer] = (step, tf.function(objective))
            return self._steps[layer]

    def visualize(self, layer: str, channel: int, steps: int = 256, seed: int = 0, jitter: int = 2) -> Visualization:
        return self.visualize_many(layer, [channel], steps, seed, jitter)[0]

    def visualize_many(
        self, layer: str, channels: list[int], steps: int = 256, seed: int = 0, jitter: int = 2
    ) -> list[Visualization]:
        """Each channel's picture: the cached ones as they are, the others in one batched ascent.

        Every channel's ascent starts from `seed`'s start and takes `seed`'s jitters, so a channel's
        picture is the same whichever others it is computed with (to float rounding)."""
        found: dict[int, Visualization] = {}
        with self._lock:
            for channel in channels:
                cached = self._cache.get((layer, channel, steps, seed, jitter))
                if cached is not None:
                    self._cache.move_to_end((layer, channel, steps, seed, jitter))
                    found[channel] = cached
        missing = list(dict.fromkeys(c for c in channels if c not in found))
        if missing:
            for result in self._ascend(layer, missing, steps, seed, jitter):
                found[result.channel] = result
                with self._lock:
                    self._cache[(layer, result.channel, steps, seed, jitter)] = result
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        return [found[channel] for channel in channels]

    def _ascend(self, layer: str, channels: list[int], steps: int, seed: int, jitter: int) -> list[Visualization]:
        step, objective = self._step_fn(layer)
        height, width, colours = self.shape
        rng = np.random.default_rng(seed)
        start = rng.normal(0, 0.01, (2, colours, height, width // 2 + 1)).astype(np.float32)
        spectra = np.repeat(start[None], len(channels), axis=0)
        adam = _Adam(spectra.shape, LEARNING_RATE)
        work = current_work()
        targets = tf.constant(channels, tf.int32)
        for _ in range(steps):
            work.check()
            shift = rng.integers(-jitter, jitter + 1, 2).astype(np.int32) if jitter else np.zeros(2, np.int32)
            gradient = step(tf.constant(spectra), targets, tf.constant(shift))
            spectra = adam.ascend(spectra, gradient.numpy())
        images = self.image(tf.constant(spectra))
        activations = objective(images, targets).numpy()
        return [
            Visualization(layer, channel, image, float(activation), steps, seed)
            for channel, image, activation in zip(channels, images.numpy(), activations, strict=True)
        ]

    def activation(self, layer: str, channel: int, images: np.ndarray) -> np.ndarray:
        """The channel's mean activation on each of float32 (N, H, W, C) images."""
        _, objective = self._step_fn(layer)
        channels = tf.constant(np.full(len(images), channel, np.int32))
        return np.asarray(objective(tf.constant(np.asarray(images, np.float32)), channels), np.float64)


_VISUALIZERS_LOCK = threading.Lock()


def visualizer_for(loaded: LoadedModel) -> Visualizer:
    """The model's visualizer (compiled ascent steps and cached pictures), made on first use."""
    with _VISUALIZERS_LOCK:
        visualizer = loaded.extensions.get("visualizer")
        if visualizer is None:
            visualizer = loaded.extensions["visualizer"] = Visualizer(loaded)
        return visualizer


def noise_image(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Uniform noise in [0, 1], the reference a channel's picture is compared with."""
    return np.random.default_rng(seed).uniform(0, 1, (1, *shape)).astype(np.float32)
