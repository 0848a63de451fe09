"""The nearest dataset images of a query, as one picture: the query first, then its neighbours, each
titled with its rank, label and cosine distance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mindscope.render.figures import encode, new_figure


def examples_grid(
    query: np.ndarray,
    thumbnails: Sequence[np.ndarray],
    captions: Sequence[str],
    title: str,
    columns: int = 5,
    first_label: str = "query",
) -> bytes:
    """query: float (H, W, C) in [0, 1]; thumbnails: uint8 (h, w, 3) -> PNG, 1.6 in a cell."""
    cells = 1 + len(thumbnails)
    columns = min(columns, cells)
    rows = -(-cells // columns)
    figure = new_figure(max(1.6 * columns + 0.2, 7.2), 1.95 * rows + 0.7)  # wide enough for a two-line title
    grid = figure.subplots(rows, columns, squeeze=False)
    pictures = [np.clip(query, 0, 1), *thumbnails]
    labels = [first_label, *captions]
    for k, axes in enumerate(grid.flat):
        axes.set_xticks([])
        axes.set_yticks([])
        if k >= cells:
            axes.axis("off")
            continue
        picture = pictures[k]
        axes.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", interpolation="nearest")
        axes.set_title(labels[k], fontsize=8)
        if k == 0:
            for spine in axes.spines.values():
                spine.set_edgecolor("tab:orange")
                spine.set_linewidth(2.5)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return encode(figure)
