"""The audit job: per image, the prediction, each chosen layer's channel peaks and, for a sample of
each class, the trust scores of each method; at the end, report.json and report.html (the figures
from the committed rows, the mistakes' maps, the channels' dataset examples with their
receptive-field patches beside their feature visualizations), and each channel's dataset examples
for GET /visualize/{layer}/{channel}?source=dataset.

Calibration: 10 equal-width confidence bins; the expected calibration error is the bins' |accuracy -
mean confidence| weighted by their share of the images (Guo et al. 2017)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mindscope.engine.embedding import receptive_box
from mindscope.engine.explain.method import Context
from mindscope.engine.explain.registry import method_named
from mindscope.engine.explain.runner import explain
from mindscope.engine.loaded_model import LoadedModel
from mindscope.engine.visualize import visualizer_for
from mindscope.jobs.indexes import thumbnail
from mindscope.jobs.spec import Auditing
from mindscope.jobs.store import ItemRow, JobRow
from mindscope.render.audit import confusion_png, data_url, example_panel, image_png, reliability_png, report_html

BINS = 10
MAP_METHODS = ("grad-cam", "integrated-gradients")  # the mistakes' maps


def sample(items: list[ItemRow], per_class: int) -> set[int]:
    """The items each method explains: the first `per_class` of each label, in item order (the same
    set after a restart)."""
    taken: dict[str, int] = {}
    chosen = set()
    for item in sorted(items, key=lambda i: i.n):
        if item.label is None or taken.get(item.label, 0) >= per_class:
            continue
        taken[item.label] = taken.get(item.label, 0) + 1
        chosen.add(item.n)
    return chosen


def trust_of(
    model: LoadedModel, auditing: Auditing, context: Context, pixels: np.ndarray, target: int
) -> dict[str, dict[str, float]]:
    """Each method's trust scores for the image's predicted class."""
    found: dict[str, dict[str, float]] = {}
    for method, explaining in auditing.methods:
        explained = explain(model, method, pixels, explaining.params, target, context, explaining.ask.evaluation())
        scores: dict[str, float] = {}
        if explained.evaluation is not None:
            scores |= {kind: float(curve.area) for kind, curve in explained.evaluation.curves.items()}
            if explained.evaluation.sanity is not None:
                scores["sanity"] = float(explained.evaluation.sanity)
        found[method.name] = scores
    return found


def calibration(confidences: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    edges = np.linspace(0, 1, BINS + 1)
    bins, ece = [], 0.0
    for k in range(BINS):
        inside = (confidences > edges[k]) & (confidences <= edges[k + 1]) if k else (confidences <= edges[1])
        count = int(inside.sum())
        accuracy = float(correct[inside].mean()) if count else None
        confidence = float(confidences[inside].mean()) if count else None
        if count:
            ece += count / len(confidences) * abs(accuracy - confidence)  # type: ignore[operator]
        bins.append(
            {
                "lower": float(edges[k]),
                "upper": float(edges[k + 1]),
                "count": count,
                "accuracy": accuracy,
                "confidence": confidence,
            }
        )
    return {"bins": bins, "ece": float(ece)}


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    array = np.asarray(values, np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0, "n": len(array)}


def build(
    job: JobRow,
    model: LoadedModel,
    auditing: Auditing,
    items: list[ItemRow],
    pixels_of: Callable[[ItemRow], np.ndarray],
) -> tuple[dict[str, Any], dict[str, bytes], dict[str, list[dict[str, Any]]]]:
    """(report.json's content, the page's pictures, each layer's channels' dataset examples)."""
    classes = list(model.class_names)
    done = [item for item in items if item.state == "succeeded" and item.result is not None]
    labelled = [item for item in done if item.label in classes]
    truth = np.asarray([classes.index(item.label) for item in labelled], np.int64)  # type: ignore[arg-type]
    predicted = np.asarray([item.result["class_index"] for item in labelled], np.int64)  # type: ignore[index]
    confidence = np.asarray([item.result["confidence"] for item in labelled], np.float64)  # type: ignore[index]
    correct = truth == predicted
    matrix = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    per_class = {
        name: {
            "images": int((truth == k).sum()),
            "correct": int(correct[truth == k].sum()),
            "accuracy": float(correct[truth == k].mean()) if (truth == k).any() else None,
        }
        for k, name in enumerate(classes)
    }
    figures: dict[str, bytes] = {}
    report: dict[str, Any] = {
        "job": job.id,
        "model": {"name": model.ref.name, "version": model.ref.version},
        "classes": classes,
        "images": len(labelled),
        "failed": sum(1 for item in items if item.state == "failed"),
        "unlabelled": len(done) - len(labelled),
        "accuracy": float(correct.mean()) if len(labelled) else 0.0,
        "per_class": per_class,
        "confusion": matrix.tolist(),
        "calibration": calibration(confidence, correct) if len(labelled) else {"bins": [], "ece": 0.0},
    }
    figures["confusion"] = confusion_png(matrix, classes)
    figures["reliability"] = reliability_png(report["calibration"]["bins"], report["calibration"]["ece"])

    order = np.argsort(-confidence, kind="stable")
    wrong = [labelled[k] for k in order if not correct[k]][: auditing.mistakes]
    unsure = [labelled[k] for k in order[::-1] if correct[k]][: auditing.mistakes]
    map_methods = [method_named(name) for name in MAP_METHODS]
    for section, shown in (("mistakes", wrong), ("unsure", unsure)):
        report[section] = []
        for k, item in enumerate(shown):
            result: dict[str, Any] = item.result
            probabilities = np.asarray(result["probabilities"])
            top3 = [
                {"class": classes[i], "probability": float(probabilities[i])} for i in np.argsort(-probabilities)[:3]
            ]
            report[section].append(
                {
                    "n": item.n,
                    "source": item.source,
                    "label": item.label,
                    "prediction": result["prediction"],
                    "confidence": result["confidence"],
                    "top3": top3,
                }
            )
            pixels = pixels_of(item)
            maps = [
                (
                    method.name,
                    explain(model, method, pixels, method.parse({}), result["class_index"]).explanation.attributions,
                )
                for method in map_methods
            ]
            title = f"{item.source}: label {item.label}, predicted {result['prediction']} ({result['confidence']:.2f})"
            figures[f"{section}-{k}"] = example_panel(pixels, maps, title)

    trust: dict[str, dict[str, dict[str, Any]]] = {}
    for method, _ in auditing.methods:
        trust[method.name] = {}
        for name in classes:
            rows = [
                item.result["trust"][method.name]  # type: ignore[index]
                for item in labelled
                if item.label == name and "trust" in (item.result or {})
            ]
            if rows:
                scores = sorted({score for row in rows for score in row})
                trust[method.name][name] = {
                    score: _stats([row[score] for row in rows if score in row]) for score in scores
                }
    report["trust"] = trust

    report["channels"] = {}
    dataset_examples: dict[str, list[dict[str, Any]]] = {}
    visualizer = visualizer_for(model)
    for layer in auditing.layers:
        available = model.layer(layer).output_shape[-1]
        channels = list(range(min(auditing.channels, available)))
        pictures = visualizer.visualize_many(layer, channels, auditing.visualization_steps, 0)
        report["channels"][layer] = []
        dataset_examples[layer] = []
        for channel, picture in zip(channels, pictures, strict=True):
            figures[f"feature-{layer}-{channel}"] = image_png(picture.image, 96)
            peaks = [(item.result["peaks"][layer][channel], item) for item in done]  # type: ignore[index]
            peaks.sort(key=lambda pair: -pair[0])
            shown_examples: list[dict[str, Any]] = []
            for k, (activation, item) in enumerate(peaks[: auditing.examples]):
                pixels = pixels_of(item)
                position = item.result["positions"][layer][channel]  # type: ignore[index]
                top, left, bottom, right = receptive_box(model, layer, pixels, channel, position)
                outlined = _outlined(pixels, (top, left, bottom, right))
                patch = pixels[top:bottom, left:right]
                figures[f"example-{layer}-{channel}-{k}"] = image_png(outlined, 96)
                figures[f"patch-{layer}-{channel}-{k}"] = image_png(patch, 48)
                shown_examples.append(
                    {
                        "n": item.n,
                        "source": item.source,
                        "label": item.label,
                        "activation": float(activation),
                        "box": [top, left, bottom, right],
                    }
                )
            report["channels"][layer].append({"channel": channel, "examples": shown_examples})
            dataset_examples[layer].append(
                {
                    "channel": channel,
                    "examples": [
                        example
                        | {
                            "image": data_url(image_png(thumbnail(pixels_of_n(done, example["n"], pixels_of)), 32)),
                            "patch": data_url(figures[f"patch-{layer}-{channel}-{k}"]),
                        }
                        for k, example in enumerate(shown_examples)
                    ],
                    "feature": data_url(figures[f"feature-{layer}-{channel}"]),
                    "job": job.id,
                }
            )
    return report, figures, dataset_examples


def pixels_of_n(items: list[ItemRow], n: int, pixels_of: Callable[[ItemRow], np.ndarray]) -> np.ndarray:
    return pixels_of(next(item for item in items if item.n == n))


def _outlined(pixels: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The image in RGB with the box drawn in orange, one pixel wide."""
    top, left, bottom, right = box
    shown = np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels[..., :3].copy()
    orange = np.asarray([1.0, 0.55, 0.0], np.float32)
    shown[top, left:right] = shown[bottom - 1, left:right] = orange
    shown[top:bottom, left] = shown[top:bottom, right - 1] = orange
    return shown


def write(
    folder: Path, report: dict[str, Any], figures: dict[str, bytes], atomic: Callable[[Path, bytes], None]
) -> None:
    atomic(folder / "report.json", json.dumps(report, indent=1).encode())
    atomic(folder / "report.html", report_html(report, figures).encode())
