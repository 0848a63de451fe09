"""Feature visualizations: the images that most activate a layer's channels, labelled."""

from __future__ import annotations

import math
import textwrap
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
    columns = min(len(images), 5)
    rows = math.ceil(len(images) / columns)
    columns = math.ceil(len(images) / rows)  # balanced rows: 10 channels are 2 rows of 5
    width = max(2.6 * columns + 0.4, 8.0)  # room for the title however few the channels
    title = textwrap.fill(
        f"What {layer}'s channels look for: the input that maximizes each channel's mean activation "
        f"(gradient ascent, {steps} steps, Fourier parametrization, jitter; seed {seed}; "
        "pixels as the model sees them)",
        width=int(width * 11),
    )
    title_in = 0.45 + 0.22 * (title.count("\n") + 1)
    figure = new_figure(width, 2.8 * rows + 0.5 + title_in)
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
    figure.suptitle(title, fontsize=11)
    top = 1 - title_in / figure.get_figheight()
    # Panels keep their size; with fewer channels than a row holds, the row is centred.
    used = (2.6 * columns) / width
    left = (1 - used) / 2
    figure.subplots_adjust(
        left=left, right=1 - left, top=top, bottom=0.5 / figure.get_figheight(), wspace=0.15, hspace=0.55
    )
    return encode(figure)
