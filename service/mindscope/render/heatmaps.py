"""Attribution pictures that read on their own: what was explained, how, and what the colours mean."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Normalize

from mindscope.render.figures import encode, new_figure

Sign = Literal["all", "positive", "negative", "absolute"]
_MEANING: dict[Sign, str] = {
    "all": "attribution (red raises, blue lowers p)",
    "positive": "attribution that raises p",
    "negative": "attribution that lowers p (magnitude)",
    "absolute": "|attribution|",
}


@dataclass(frozen=True)
class AttributionCaption:
    """What the picture explains, in words: the class, its score (probability or logit) at the
    input, and how it was computed."""

    label: str
    output: float
    method: str
    steps: int
    relative_delta: float
    score: str = "probability"
    headline: str = ""  # the title, for a method other than integrated gradients
    values: str = ""  # what a value of the map is, where it is not a plain attribution (occlusion, SHAP)
    scale: str = ""  # the colour bar's label for such values

    @property
    def symbol(self) -> str:
        return "p" if self.score == "probability" else "logit"


@dataclass(frozen=True)
class TrustCurve:
    """A deletion or insertion curve: the target's probability at each fraction of pixels."""

    kind: str  # "deletion" or "insertion"
    fractions: list[float]
    scores: list[float]
    area: float


@dataclass(frozen=True)
class Trust:
    """The scores `evaluate` computed, drawn as a fourth panel."""

    curves: tuple[TrustCurve, ...] = ()
    sanity: float | None = None  # rank correlation with the same method on the untrained model


_BETTER = {"deletion": "lower is better", "insertion": "higher is better"}
_COLOURS = {"deletion": "tab:red", "insertion": "tab:green"}


def attribution_map(
    attributions: np.ndarray, sign: Sign, clip_percentile: float
) -> tuple[np.ndarray, str, float, float]:
    """(H, W, C) attributions -> (H, W) map (summed over channels), colour map, low, high after
    clipping at the `clip_percentile` of its absolute values."""
    summed = attributions.sum(axis=-1)
    if sign == "positive":
        values, cmap = np.maximum(summed, 0), "inferno"
    elif sign == "negative":
        values, cmap = np.maximum(-summed, 0), "inferno"
    elif sign == "absolute":
        values, cmap = np.abs(summed), "inferno"
    else:
        values, cmap = summed, "RdBu_r"
    bound = float(np.percentile(np.abs(values), clip_percentile)) or 1e-12
    low = -bound if sign == "all" else 0.0
    return values, cmap, low, bound


def attribution_figure(
    image: np.ndarray,
    attributions: np.ndarray,
    caption: AttributionCaption,
    sign: Sign = "all",
    clip_percentile: float = 99.0,
    trust: Trust | None = None,
) -> bytes:
    """image, attributions: float32 (H, W, C) -> PNG (1200 x 470): input | heatmap with colour bar | overlay,
    titled with the class, its probability, the method, steps and completeness error; with `trust`,
    a fourth panel draws the deletion/insertion curves and states the sanity check (1600 x 470)."""
    values, cmap, low, high = attribution_map(attributions, sign, clip_percentile)
    panels = 4 if trust is not None else 3
    figure = new_figure(16.0 if panels == 4 else 12.0, 4.7)
    axes = figure.subplots(1, panels, gridspec_kw={"width_ratios": [1, 1.25, 1, 1.45][:panels]})
    shown = np.clip(image, 0, 1).squeeze()
    grey = None if shown.ndim == 3 else "gray"
    axes[0].imshow(shown, cmap=grey, vmin=0, vmax=1, interpolation="nearest")
    axes[0].set_title("input")
    heat = axes[1].imshow(values, cmap=cmap, norm=Normalize(low, high), interpolation="nearest")
    bar = figure.colorbar(heat, ax=axes[1], fraction=0.046, pad=0.04)
    # Small attributions (0.00015) as 1.5 with the power above: long tick labels ran into the overlay.
    bar.formatter.set_powerlimits((-2, 3))  # type: ignore[attr-defined]
    bar.update_ticks()
    if caption.values:
        symbol = f"{caption.symbol}({caption.label})"
        axes[1].set_title(
            "\n".join(textwrap.wrap(caption.values.replace("the target's probability", symbol), 44)), fontsize=9
        )
        bar.set_label(caption.scale.replace("the target's probability", symbol) or _MEANING[sign], fontsize=9)
    else:
        axes[1].set_title(f"attributions to {caption.symbol}({caption.label})")
        bar.set_label(_MEANING[sign], fontsize=9)
    axes[2].imshow(shown.mean(axis=-1) if shown.ndim == 3 else shown, cmap="gray", vmin=0, vmax=1)
    strength = np.clip(np.abs(values) / high, 0.0, 1.0)
    axes[2].imshow(values, cmap=cmap, norm=Normalize(low, high), alpha=0.8 * strength, interpolation="nearest")
    axes[2].set_title("overlay on the input (grey)")
    for ax in axes[:3]:
        ax.set_xticks([])
        ax.set_yticks([])
    if trust is not None:
        _trust_panel(axes[3], trust, caption.label)
    figure.suptitle(
        caption.headline
        or f"Integrated gradients: why '{caption.label}' ({caption.symbol} = {caption.output:.3f}) - "
        f"{caption.method}, {caption.steps} steps, completeness error {caption.relative_delta:.1e}",
        fontsize=12,
    )
    figure.text(
        0.5,
        0.015,
        ("Each pixel's attribution is summed over its colour channels. " if attributions.shape[-1] > 1 else "")
        + "Colours are clipped at the "
        f"{clip_percentile:g}th percentile of |{'value' if caption.values else 'attribution'}| ({high:.2e}): "
        "stronger pixels show at the end of the scale.",
        ha="center",
        fontsize=9,
    )
    # The trust panel's x-axis label needs the room above the footnote.
    bottom = 0.19 if panels == 4 else 0.1
    figure.subplots_adjust(left=0.02, right=0.98 if panels == 3 else 0.99, top=0.84, bottom=bottom, wspace=0.3)
    return encode(figure)


def _trust_panel(ax: Axes, trust: Trust, label: str) -> None:
    """The target's probability as the most-attributed pixels are removed (deletion) or added to a
    black image (insertion), with each curve's area; the sanity check's correlation in the title."""
    for found in trust.curves:
        ax.plot(
            found.fractions,
            found.scores,
            marker="o",
            markersize=3,
            color=_COLOURS.get(found.kind),
            label=f"{found.kind}: area {found.area:.3f} ({_BETTER.get(found.kind, '')})",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("fraction of pixels, most attributed first")
    ax.set_ylabel(f"p({label})")
    ax.grid(alpha=0.3)
    if trust.curves:
        ax.legend(fontsize=8, loc="best")
    title = "how far to trust the map"
    if trust.sanity is not None:
        title += f"\nsanity: rank corr. with untrained model {trust.sanity:.2f} (low is good)"
    ax.set_title(title, fontsize=9)
    if not trust.curves:
        ax.text(0.5, 0.5, "no curves asked\n(evaluate=deletion,insertion)", ha="center", va="center", fontsize=9)


def interior_strip(
    image: np.ndarray,
    alphas: np.ndarray,
    gradients: np.ndarray,
    outputs: np.ndarray,
    label: str,
    score: str = "probability",
) -> bytes:
    """image: float32 (H, W, C); gradients: float32 (A, H, W, C) -> PNG: the input, then one
    |gradient| map per alpha, each scaled to its own 99th percentile.

    The gradients shrink by orders of magnitude as alpha grows (saturation), which is the point of
    the figure, so a shared scale would hide them; each panel says its own scale.
    """
    panels = len(alphas) + 1
    columns = min(panels, 5)  # rows of five keep the labels readable at page width
    rows = -(-panels // columns)
    figure = new_figure(2.3 * columns + 0.9, 2.7 * rows + 0.9)
    axes = list(figure.subplots(rows, columns, squeeze=False).ravel())
    shown = np.clip(image, 0, 1).squeeze()
    axes[0].imshow(shown, cmap=None if shown.ndim == 3 else "gray", vmin=0, vmax=1, interpolation="nearest")
    axes[0].set_title("input", fontsize=11)
    heat = None
    symbol = "p" if score == "probability" else "logit"
    for ax, alpha, grads, output in zip(axes[1:], alphas, gradients, outputs, strict=False):
        magnitude = np.abs(grads).sum(axis=-1)
        high = float(np.percentile(magnitude, 99)) or 1e-12
        heat = ax.imshow(magnitude / high, cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"alpha = {alpha:.2f}, {symbol} = {output:.3f}", fontsize=11)
        ax.set_xlabel(f"p99 = {high:.1e}", fontsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[panels:]:
        ax.set_axis_off()
    top = 1 - 0.75 / figure.get_figheight()
    figure.subplots_adjust(left=0.01, right=0.92, top=top, bottom=0.06, wspace=0.08, hspace=0.35)
    if heat is not None:
        bar = figure.colorbar(heat, cax=figure.add_axes((0.935, 0.1, 0.012, top - 0.15)))
        bar.set_label("|gradient| / panel's p99", fontsize=9)
    figure.suptitle(
        f"Interior gradients of {symbol}({label}): |d {symbol} / d pixel| at alpha x input, summed over colour "
        "channels;\n"
        "each panel on its own scale (its 99th percentile below it)",
        fontsize=12,
    )
    return encode(figure)
