"""An audit's report as one self-contained HTML file: the style inline, every picture a data: URL,
no script, no font or image fetched from anywhere, so it opens offline and can be mailed. Each
figure the page states carries `data-key`, the path of the same number in report.json, so what the
page says can be checked against the JSON."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from mindscope.render.figures import encode, new_figure
from mindscope.render.heatmaps import attribution_map

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ddd; padding: .25em .6em; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; font-size: .9em; max-width: 60em; }
.examples td { vertical-align: top; text-align: center; font-size: .8em; }
img.pixel { image-rendering: pixelated; }
"""


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def image_png(pixels: np.ndarray, size: int = 96) -> bytes:
    """float (H, W, C) in [0, 1] or uint8 -> a PNG of it, scaled up without smoothing to `size` px."""
    array = pixels if pixels.dtype == np.uint8 else np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = array[..., 0]
    picture = Image.fromarray(array)
    scale = max(1, size // max(picture.width, picture.height))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def reliability_png(bins: Sequence[dict[str, Any]], ece: float) -> bytes:
    """The reliability diagram: accuracy against confidence per bin, the diagonal of perfect calibration,
    and how many images each bin holds. PNG 560x460."""
    figure = new_figure(5.6, 4.6)
    axes = figure.subplots()
    centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
    widths = [b["upper"] - b["lower"] for b in bins]
    accuracies = [b["accuracy"] if b["count"] else 0.0 for b in bins]
    axes.bar(centres, accuracies, width=widths, edgecolor="black", color="tab:blue", label="accuracy in the bin")
    axes.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    for centre, b in zip(centres, bins, strict=True):
        if b["count"]:
            axes.text(centre, 0.02, str(b["count"]), ha="center", fontsize=7, color="white", rotation=90)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence (the top class's probability)")
    axes.set_ylabel("accuracy")
    axes.set_title(f"Reliability diagram (expected calibration error {ece:.3f})\nbar labels: images in the bin")
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return encode(figure)


def confusion_png(matrix: np.ndarray, classes: Sequence[str]) -> bytes:
    """Rows: the true class; columns: the predicted; each row as fractions of its images. PNG 640x560."""
    counts = np.asarray(matrix, np.float64)
    totals = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure = new_figure(6.4, 5.6)
    axes = figure.subplots()
    shown = axes.imshow(counts / totals, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if counts[i, j]:
                colour = "white" if counts[i, j] / totals[i, 0] > 0.5 else "black"
                axes.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7, color=colour)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("Confusion matrix (counts; colour: share of the true class)", fontsize=9)
    figure.colorbar(shown, ax=axes, label="fraction of the row")
    figure.tight_layout()
    return encode(figure)


def example_panel(image: np.ndarray, maps: Sequence[tuple[str, np.ndarray]], title: str) -> bytes:
    """The image and, per method, its map (attribution summed over channels, red positive, blue
    negative, clipped at the 99th percentile of |value|) over the image. PNG about 300 px a panel."""
    figure = new_figure(2.6 * (1 + len(maps)), 2.9)
    axes = figure.subplots(1, 1 + len(maps), squeeze=False)[0]
    shown = np.clip(image, 0, 1)
    shown = shown[..., 0] if shown.shape[-1] == 1 else shown
    axes[0].imshow(shown, cmap="gray", interpolation="nearest")
    axes[0].set_title("input", fontsize=9)
    for ax, (name, attributions) in zip(axes[1:], maps, strict=True):
        values, cmap, low, high = attribution_map(attributions, "all", 99.0)
        ax.imshow(shown, cmap="gray", interpolation="nearest")
        drawn = ax.imshow(values, cmap=cmap, vmin=low, vmax=high, alpha=0.6, interpolation="nearest")
        figure.colorbar(drawn, ax=ax, fraction=0.046, pad=0.02, label="attribution")
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return encode(figure)


def _num(value: float | None, key: str, digits: int = 3) -> str:
    text = "–" if value is None else f"{value:.{digits}f}"
    return f'<td class="num" data-key="{html.escape(key)}">{text}</td>'


def report_html(report: dict[str, Any], figures: dict[str, bytes]) -> str:
    """The page: `report` (report.json's content) and its pictures (`figures`: PNG bytes by name)."""
    e = html.escape
    classes: list[str] = report["classes"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Audit of {e(report['model']['name'])} v{report['model']['version']}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Audit of {e(report['model']['name'])} version {report['model']['version']}</h1>",
        '<p class="note">mindscope audit job <code>' + e(report["job"]) + "</code>: "
        f'<span data-key="images">{report["images"]}</span> labelled images '
        f'(<span data-key="failed">{report["failed"]}</span> could not be read); accuracy '
        f'<b data-key="accuracy">{report["accuracy"]:.3f}</b>.</p>',
        '<section id="accuracy"><h2>Accuracy per class</h2><table><tr><th>class</th><th>images</th>'
        "<th>correct</th><th>accuracy</th></tr>",
    ]
    for name in classes:
        row = report["per_class"][name]
        if not row["images"]:
            continue
        parts.append(
            f"<tr><td>{e(name)}</td>"
            f'<td class="num" data-key="per_class.{e(name)}.images">{row["images"]}</td>'
            f'<td class="num" data-key="per_class.{e(name)}.correct">{row["correct"]}</td>'
            + _num(row["accuracy"], f"per_class.{name}.accuracy")
            + "</tr>"
        )
    parts += [
        "</table></section>",
        '<section id="confusion"><h2>Confusion matrix</h2>',
        f'<img alt="confusion matrix" src="{data_url(figures["confusion"])}"></section>',
        '<section id="calibration"><h2>Calibration</h2>',
        '<p class="note">Expected calibration error (ECE, 10 equal-width confidence bins, weighted by the '
        f'images in each): <b data-key="calibration.ece">{report["calibration"]["ece"]:.4f}</b>.</p>',
        f'<img alt="reliability diagram" src="{data_url(figures["reliability"])}"></section>',
    ]
    for section, title, note in (
        ("mistakes", "The most confident mistakes", "wrong answers, the most confident first"),
        ("unsure", "The least confident correct answers", "right answers, the least confident first"),
    ):
        parts.append(f'<section id="{section}"><h2>{title}</h2>')
        parts.append(f'<p class="note">{note}; maps of the predicted class.</p>')
        for k, shown in enumerate(report[section]):
            top3 = ", ".join(f"{t['class']} {t['probability']:.2f}" for t in shown["top3"])
            parts.append(
                f'<figure data-key="{section}.{k}.source">'
                f'<img alt="{e(shown["source"])}" src="{data_url(figures[f"{section}-{k}"])}">'
                f"<figcaption>{e(shown['source'])}: label {e(str(shown['label']))}, predicted "
                f"{e(shown['prediction'])} ({shown['confidence']:.2f}); top 3: {e(top3)}</figcaption></figure>"
            )
        parts.append("</section>")
    parts.append(
        '<section id="trust"><h2>How far to trust the explanations, class by class</h2>'
        '<p class="note">Mean ± standard deviation over the images explained (n). Deletion: the area under '
        "the class's probability as the most attributed pixels are removed (lower is better); insertion: as "
        "they are added to a blurred image (higher is better); sanity: the rank correlation with the same "
        "method on the untrained network (lower is better).</p>"
    )
    for method, per_class in report["trust"].items():
        scores = sorted({score for row in per_class.values() for score in row})
        parts.append(f"<h3>{e(method)}</h3><table><tr><th>class</th>")
        parts += [f"<th>{e(score)}</th><th>± std</th><th>n</th>" for score in scores]
        parts.append("</tr>")
        for name, row in per_class.items():
            parts.append(f"<tr><td>{e(name)}</td>")
            for score in scores:
                cell = row.get(score, {"mean": None, "std": None, "n": 0})
                key = f"trust.{method}.{name}.{score}"
                parts.append(_num(cell["mean"], f"{key}.mean") + _num(cell["std"], f"{key}.std"))
                parts.append(f'<td class="num" data-key="{e(key)}.n">{cell["n"]}</td>')
            parts.append("</tr>")
        parts.append("</table>")
    parts.append("</section>")
    parts.append(
        '<section id="channels"><h2>What each channel responds to</h2><p class="note">For each channel: its '
        "feature visualization (gradient ascent from noise) beside the dataset images that activate it most, "
        "each with its receptive-field patch (the input pixels that move the channel's strongest unit) outlined "
        "and cut out.</p>"
    )
    for layer, channels in report["channels"].items():
        parts.append(f'<h3>{e(layer)}</h3><table class="examples">')
        for channel in channels:
            number = channel["channel"]
            parts.append(
                f'<tr><th>channel {number}</th><td><img class="pixel" alt="feature visualization" '
                f'src="{data_url(figures[f"feature-{layer}-{number}"])}"><br>feature visualization</td>'
            )
            for k, example in enumerate(channel["examples"]):
                parts.append(
                    f'<td><img class="pixel" alt="{e(example["source"])}" '
                    f'src="{data_url(figures[f"example-{layer}-{number}-{k}"])}"> '
                    f'<img class="pixel" alt="patch" src="{data_url(figures[f"patch-{layer}-{number}-{k}"])}">'
                    f"<br>{e(example['source'])}<br>peak "
                    f'<span data-key="channels.{e(layer)}.{number}.{k}.activation">'
                    f"{example['activation']:.2f}</span></td>"
                )
            parts.append("</tr>")
        parts.append("</table>")
    parts += ["</section>", "</body></html>"]
    return "\n".join(parts)
