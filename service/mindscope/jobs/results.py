"""A job's results as tables: one row per item, built from the committed rows when asked for (so a
partial job's table holds what has finished), as Parquet (pyarrow) or CSV, and a zip of it all with
the maps."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

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
