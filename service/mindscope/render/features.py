"""Feature visualizations: the images that most activate a layer's channels, labelled."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mindscope.render.figures import encode, new_figure


def feature_grid(
    layer: str,
    channels: Sequence[int],
    images: Sequence[np.ndarray],
    activations: Sequence[float],
    noise: Sequence[float],
    steps: int,
    seed: int,
    labels: Sequence[str] | None = None,
) -> bytes:
    """One panel per channel: its picture, titled with its mean activation there and on noise."""
    columns = min(len(images), 4)
    rows = math.ceil(len(images) / columns)
    figure = new_figure(2.6 * columns + 0.4, 2.8 * rows + 1.3)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    names = labels or [f"channel {c}" for c in channels]
    for ax, name, image, value, reference in zip(axes, names, images, activations, noise, strict=False):
        shown = np.clip(image, 0, 1).squeeze()
        ax.imshow(shown, cmap=None if shown.ndim == 3 else "gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=11)
        ax.set_xlabel(f"mean activation {value:.3g}\n(on noise {reference:.3g})", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(images) :]:
        ax.set_axis_off()
    figure.suptitle(
        f"What {layer}'s channels look for: the input that maximizes each channel's mean activation\n"
        f"(gradient ascent, {steps} steps, Fourier parametrization, jitter; seed {seed}; "
        "pixels as the model sees them)",
        fontsize=11,
    )
    top = 1 - 1.1 / figure.get_figheight()
    figure.subplots_adjust(left=0.02, right=0.98, top=top, bottom=0.08, wspace=0.15, hspace=0.55)
    return encode(figure)
