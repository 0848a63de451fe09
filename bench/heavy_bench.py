"""A real-size model through the explanation routes, before and after whole-request admission.

    python bench/heavy_bench.py [--old REV] [--out docs/benchmarks.md]

`keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=10)` (random weights:
this is about time) is imported with `mindscope import` into a temporary store and served by this
checkout and, with --old, by an older commit (a temporary git worktree, the same venv), one after
the other. Each server first answers a few warm-up requests (so its batchers have measured their
speed), then: one request of each kind at a time; then bursts of 3 concurrent Guided IG and of 8
concurrent XRAI. Every answer's status and seconds are recorded; the point is that every request is
answered or refused within 1 s, and none admitted gets 504.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from reliability import REPO
from report import write_section  # bench/ is the script's folder
from serve_bench import _start as start_server

SECTION = "## A real-size model: admission of whole explanations"
IMAGE = REPO / "examples" / "cat.jpg"
SINGLE = (
    ("/predict", "/predict"),
    ("Grad-CAM", "/explain/grad-cam"),
    ("IG 32 steps", "/explain/integrated-gradients?steps=32"),
    ("IG 128 steps", "/explain/integrated-gradients?steps=128"),
    ("occlusion 32x32 patch, stride 16", "/explain/occlusion?size=32&stride=16"),
    ("XRAI", "/explain/xrai"),
    ("Blur IG", "/explain/blur-ig"),
    ("Guided IG (200 steps)", "/explain/guided-ig"),
    ("IG 32 steps x 16 SmoothGrad samples", "/explain/integrated-gradients?steps=32&samples=16"),
)
BURSTS = (("3 concurrent Guided IG", "/explain/guided-ig", 3), ("8 concurrent XRAI", "/explain/xrai", 8))
WARM = (
    "/explain/integrated-gradients?steps=128",
    "/explain/guided-ig?steps=16",
    "/explain/occlusion?size=32&stride=16",
)


def build_store(folder: Path) -> Path:
    import keras

    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=10)
    path = folder / "resnet50.keras"
    model.save(path)
    store = folder / "store"
    command = [sys.executable, "-m", "mindscope.cli", "import", str(path), "--name", "resnet50", "--store", str(store)]
    subprocess.run(command, check=True, capture_output=True)
    return store


def call(base: str, path: str) -> tuple[int, float]:
    started = time.perf_counter()
    response = httpx.post(base + path, content=IMAGE.read_bytes(), headers={"Content-Type": "image/jpeg"}, timeout=120)
    took = time.perf_counter() - started
    if response.status_code == 503:  # what the refusal estimated, for the table
        ESTIMATES.append((path, response.json()["error"]["details"].get("estimate_s")))
    return response.status_code, took


ESTIMATES: list[tuple[str, float | None]] = []


def measure(base: str) -> dict[str, list[tuple[int, float]]]:
    ESTIMATES.clear()  # the last side measured keeps its refusals' estimates
    for path in WARM:
        call(base, path)
    found = {name: [call(base, path)] for name, path in SINGLE}
    for name, path, count in BURSTS:
        with ThreadPoolExecutor(count) as pool:
            found[name] = list(pool.map(lambda _, path=path: call(base, path), range(count)))
    return found


def serve(service: Path, store: Path) -> tuple[subprocess.Popen[bytes], str]:
    command = [sys.executable, "-m", "mindscope.cli", "serve", "--port", "{port}", "--grpc-port", "0"]
    return start_server(command, {"PYTHONPATH": str(service), "MINDSCOPE_MODEL_STORE_DIR": str(store)})


def cell(results: list[tuple[int, float]]) -> str:
    statuses = " ".join(str(status) for status, _ in results)
    seconds = [s for _, s in results]
    spread = f"{seconds[0]:.2f}" if len(seconds) == 1 else f"{min(seconds):.2f}-{max(seconds):.2f}"
    return f"{statuses} | {spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", help="an older commit to measure first (e.g. the one before admission)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    sides: dict[str, dict[str, list[tuple[int, float]]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        store = build_store(Path(scratch))
        trees = []
        if args.old:
            tree = Path(scratch) / "old"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.old], cwd=REPO, check=True)
            trees.append((f"before ({args.old})", tree / "service"))
        trees.append(("after (this checkout)", REPO / "service"))
        try:
            for label, service in trees:
                process, base = serve(service, store)
                try:
                    sides[label] = measure(base)
                finally:
                    process.terminate()
                    process.wait(60)
        finally:
            if args.old:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)
    labels = list(sides)
    header = "| request (ResNet50, one 224x224 image) | " + " | ".join(f"{label}: status | s" for label in labels)
    lines = [
        SECTION,
        "",
        "`python bench/heavy_bench.py" + (f" --old {args.old}" if args.old else "") + "` (one machine: 2 cores, "
        "no GPU). ResNet50 with random weights, imported; each server warmed up first (its batchers measured "
        "their speed). A burst's statuses in order of sending; seconds from first to last answer.",
        "",
        header + " |",
        "|---|" + "---|---|" * len(labels),
    ]
    for name in [n for n, _ in SINGLE] + [n for n, _, _ in BURSTS]:
        lines.append(f"| {name} | " + " | ".join(cell(sides[label][name]) for label in labels) + " |")
    after = sides[labels[-1]]
    refused_alone = [f"{path}: {estimate} s" for path, estimate in ESTIMATES if estimate is not None]
    every = [result for results in after.values() for result in results]
    slow_refusals = [s for status, s in every if status == 503 and s > 1.0]
    timeouts = sum(1 for status, _ in every if status == 504)
    lines += [
        "",
        f"After: {sum(1 for s, _ in every if s == 200)} answered, {sum(1 for s, _ in every if s == 503)} refused "
        f"(the slowest refusal {max([s for st, s in every if st == 503], default=0):.2f} s; "
        f"{len(slow_refusals)} over 1 s), {timeouts} x 504. The refusals' own estimates (whole request, "
        f"after what was booked): {'; '.join(refused_alone) or 'none'}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_section(args.out, text)


if __name__ == "__main__":
    main()
