"""A job's results as tables: one row per item, built from the committed rows when asked for (so a
partial job's table holds what has finished), as Parquet (pyarrow) or CSV, and a zip of it all with
the maps."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from mindscope.jobs.store import ItemRow, JobRow

# Every column, in order, with its type: a table has them all whatever the job's kind.
SCHEMA = pa.schema(
    [
        ("n", pa.int64()),
        ("source", pa.string()),
        ("label", pa.string()),
        ("state", pa.string()),
        ("prediction", pa.string()),
        ("confidence", pa.float64()),
        ("correct", pa.bool_()),
        ("target", pa.int64()),
        ("target_label", pa.string()),
        ("target_probability", pa.float64()),
        ("completeness_error", pa.float64()),
        ("deletion_area", pa.float64()),
        ("insertion_area", pa.float64()),
        ("sanity_rank_correlation", pa.float64()),
        ("gradient_evaluations", pa.int64()),
        ("seconds", pa.float64()),
        ("error", pa.string()),
        ("map", pa.string()),
    ]
)


def table_rows(job: JobRow, items: list[ItemRow], folder: Path) -> list[dict[str, Any]]:
    rows = []
    for item in items:
        result = item.result or {}
        prediction = result.get("prediction")
        has_map = job.kind == "explain" and item.state == "succeeded" and (folder / "maps" / f"{item.n}.npy").exists()
        rows.append(
            {
                "n": item.n,
                "source": item.source,
                "label": item.label,
                "state": item.state,
                "prediction": prediction,
                "confidence": result.get("confidence"),
                "correct": None if item.label is None or prediction is None else item.label == prediction,
                "target": result.get("target"),
                "target_label": result.get("target_label"),
                "target_probability": result.get("target_probability"),
                "completeness_error": result.get("completeness_error"),
                "deletion_area": result.get("deletion_area"),
                "insertion_area": result.get("insertion_area"),
                "sanity_rank_correlation": result.get("sanity_rank_correlation"),
                "gradient_evaluations": result.get("gradient_evaluations"),
                "seconds": item.seconds,
                "error": item.error,
                "map": f"maps/{item.n}.npy" if has_map else None,
            }
        )
    return rows


def as_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(as_table(rows), buffer)
    return buffer.getvalue()


def csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pa_csv.write_csv(as_table(rows), buffer)
    return buffer.getvalue()


def zip_bytes(job: JobRow, rows: list[dict[str, Any]], folder: Path, described: dict[str, Any]) -> bytes:
    """results.parquet, results.csv, job.json and maps/<n>.npy, as the results layout names them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("job.json", json.dumps(described, indent=2))
        archive.writestr("results.parquet", parquet_bytes(rows))
        archive.writestr("results.csv", csv_bytes(rows))
        for row in rows:
            if row["map"] is not None:
                archive.write(folder / row["map"], row["map"])
    return buffer.getvalue()


def tcav_report(job: JobRow, items: list[ItemRow], class_names: tuple[str, ...]) -> dict[str, Any]:
    """A tcav job's scores from its finished rows (so far): per layer, the concept's TCAV scores against
    each random set, the random-vs-random ones, and the t-test (`engine.concepts`)."""
    from mindscope.engine.concepts import ALPHA, layer_score

    parameters = job.spec["parameters"]
    rows = [item.result["tcav"] for item in items if item.state == "succeeded" and item.result]
    layers = list(rows[0]) if rows else []
    threshold = ALPHA / max(len(layers), 1)
    scored = []
    for layer in layers:
        concept = np.asarray([row[layer]["concept"] for row in rows])
        random = np.asarray([row[layer]["random"] for row in rows])
        score = layer_score(layer, concept, random, threshold)
        scored.append(
            {
                "layer": layer,
                "significant": score.significant,
                "score": score.mean if score.significant else None,
                "mean": score.mean,
                "std": score.std,
                "random_mean": score.random_mean,
                "random_std": score.random_std,
                "p_value": score.p_value,
                "scores": score.scores,
                "random_scores": score.random_scores,
            }
        )
    target = parameters["target"]
    target_name = class_names[int(target)] if str(target).lstrip("-").isdigit() else str(target)
    return {
        "job": job.id,
        "state": job.state,
        "concept": parameters["concept"],
        "target": target_name,
        "images": len(rows),
        "runs": parameters.get("runs", 10),
        "alpha": threshold,
        "layers": scored,
    }
