"""Example-based explanations on a 50,000-image index: building it, query latency, recall@10.

    python bench/examples_bench.py [--images 50000] [--queries 300] [--out docs/benchmarks.md]

1. An `index` job over the CIFAR-10 training images (../shared/data/cifar10/train, read in place
   as the server's data root) on `mindscope serve`: images/s from the server's start and end times.
2. Served query latency, POST /explain/examples?k=10 from one client, sequential: through the index's
   HNSW graph (usearch) and with exact=true (one matrix product over every vector).
3. Recall@10 of the graph against exact search, for queries that are near-duplicates of indexed
   images (resized to 40x40 and recompressed as JPEG quality 70) and for the same number of
   indexed images themselves; and the search alone in this process (no HTTP, no model), per query.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from reliability import REPO
from report import write_section  # bench/ is the script's folder
from serve_bench import _start as start_server

SECTION = "## Example-based explanations: a 50,000-image index"
DATA = REPO.parent / "shared" / "data" / "cifar10"


def near_duplicate(path: Path) -> bytes:
    picture = Image.open(path).convert("RGB").resize((40, 40), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50_000, help="index this many (all 50,000 by default)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "service"))
    paths = sorted((DATA / "train").rglob("*.jpg"))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        root = DATA
        folder = "train"
        if args.images < len(paths):  # a subset: links to the chosen images in a data root of its own
            root = Path(scratch) / "root"
            chosen = sorted(rng.choice(len(paths), args.images, replace=False))
            for k in chosen:
                link = root / "train" / paths[k].parent.name / paths[k].name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(paths[k])
            paths = [paths[k] for k in chosen]
        env = {
            "MINDSCOPE_MODEL_STORE_DIR": str(REPO / "model_store"),
            "MINDSCOPE_DATA_ROOT": str(root),
            "MINDSCOPE_JOBS_DIR": str(Path(scratch) / "jobs"),
        }
        command = [sys.executable, "-m", "mindscope.cli", "serve", "--port", "{port}", "--grpc-port", "0"]
        process, base = start_server(command, env)
        try:
            with httpx.Client(base_url=base, timeout=120) as client:
                job = client.post("/jobs", json={"kind": "index", "folder": folder, "parameters": {"name": "train"}})
                job_id = job.json()["id"]
                while (state := client.get(f"/jobs/{job_id}").json())["state"] not in ("succeeded", "failed"):
                    time.sleep(1)
                assert state["state"] == "succeeded", state
                took = (
                    datetime.fromisoformat(state["finished"]) - datetime.fromisoformat(state["started"])
                ).total_seconds()
                build_rate = state["items"]["done"] / took
                listing = client.get("/explain/examples").json()
                info, version = listing["indexes"][0], listing["model"]["version"]
                grid = client.post(
                    "/explain/examples?index=train&k=9&format=png",
                    content=(REPO / "examples" / "cat.jpg").read_bytes(),
                    headers={"Content-Type": "image/jpeg"},
                )
                (REPO / "docs" / "images" / "examples.png").write_bytes(grid.content)
                queries = [paths[k] for k in rng.choice(len(paths), args.queries, replace=False)]
                timings: dict[str, list[float]] = {"graph": [], "exact": []}
                recall_dup, recall_self, found_dup = [], [], 0
                jpeg = {"Content-Type": "image/jpeg"}
                for kind, make in (("near-duplicate", near_duplicate), ("indexed", Path.read_bytes)):
                    for path in queries:
                        body = make(path)
                        rows = {}
                        for search, exact in (("graph", "false"), ("exact", "true")):
                            started = time.perf_counter()
                            answer = client.post(
                                f"/explain/examples?index=train&k=10&exact={exact}", content=body, headers=jpeg
                            )
                            timings[search].append(time.perf_counter() - started)
                            assert answer.status_code == 200, answer.text
                            rows[search] = [n["row"] for n in answer.json()["neighbours"]]
                            if kind == "near-duplicate" and search == "graph":
                                source = f"train/{path.parent.name}/{path.name}"
                                found_dup += source in [n["source"] for n in answer.json()["neighbours"][:3]]
                        recall = len(set(rows["graph"]) & set(rows["exact"])) / 10
                        (recall_dup if kind == "near-duplicate" else recall_self).append(recall)
        finally:
            process.terminate()
            process.wait(60)
        # The search alone, in this process, on the index the job wrote.
        from mindscope.jobs.indexes import IndexStore

        store = IndexStore(Path(scratch) / "jobs" / "indexes")
        index = store.get(listing["model"]["name"], version, "train")
        vectors = np.asarray(index.vectors[rng.choice(index.info.count, 1000, replace=False)])
        alone = {}
        for search, exact in (("graph", False), ("exact", True)):
            started = time.perf_counter()
            for vector in vectors:
                index.search(vector, 10, exact=exact)
            alone[search] = (time.perf_counter() - started) / len(vectors) * 1000
    p50 = {k: statistics.median(v) * 1000 for k, v in timings.items()}
    p95 = {k: float(np.percentile(v, 95)) * 1000 for k, v in timings.items()}
    lines = [
        SECTION,
        "",
        f"`python bench/examples_bench.py --images {args.images} --queries {args.queries}` (one machine: 2 cores, no "
        "GPU; the committed CIFAR-10 model).",
        f"The index job embedded {info['count']} CIFAR-10 training images at {info['layer']} ({info['dimensions']} "
        f"values an image) at **{build_rate:.0f} images/s** (reading, decoding, the forward to the layer, thumbnails, "
        f"and the {info['search']} index written at the end), from the server's own start and end times.",
        "",
        "| search | served p50 ms | served p95 ms | search alone, ms a query |",
        "|---|---|---|---|",
        f"| HNSW graph (usearch, connectivity 16, expansion 128) | {p50['graph']:.1f} | {p95['graph']:.1f} | "
        f"{alone['graph']:.3f} |",
        f"| exact (`exact=true`: one matrix product) | {p50['exact']:.1f} | {p95['exact']:.1f} | "
        f"{alone['exact']:.3f} |",
        "",
        f"Served: one client, sequential, k=10, {2 * args.queries} queries each (a JPEG body decoded, predicted, "
        "embedded, searched, 10 thumbnails encoded). Alone: 1,000 indexed vectors searched in the bench's process.",
        "",
        "| queries | recall@10 of the graph against exact search |",
        "|---|---|",
        f"| {args.queries} near-duplicates (resized to 40x40, JPEG quality 70) | {np.mean(recall_dup):.3f} |",
        f"| {args.queries} indexed images | {np.mean(recall_self):.3f} |",
        "",
        f"The near-duplicates found their original among the graph's first 3 in {found_dup} of {args.queries}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_section(args.out, text)


if __name__ == "__main__":
    main()
