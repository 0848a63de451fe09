"""Many models, bounded memory: a server's resident memory as it serves more models than it keeps.

    python bench/residency_bench.py [--models 8] [--width 1024] [--keep 2] [--out docs/benchmarks.md]

A store of `--models` image classifiers of one shape (a small convolution, then a Dense layer
`--width` wide: 29.5 MB of weights each at 1024, little compute), served twice side by side: with no limit, and with
`MINDSCOPE_MAX_LOADED_MODELS=--keep`. Two rounds of one /predict to each model in turn; after each
request, the server's resident set (VmRSS) is read from /proc. Reported: the peak and final RSS of
each server, its loads and unloads, and the latency of a request that had to load its model beside
one whose model was in memory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from reliability import IMAGE, REPO
from report import write_section  # bench/ is the script's folder
from serve_bench import _start as start_server

SECTION = "## Many models, bounded memory: a server's RSS over more models than it keeps"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_store(root: Path, count: int, width: int) -> int:
    """`count` models in a store under `root`; returns one model's weight bytes."""
    sys.path.insert(0, str(REPO / "service"))
    import keras
    from mindscope.engine.importer import import_model

    size = 0
    for index in range(count):
        keras.utils.set_random_seed(index)
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.Conv2D(8, 3, activation="elu", name="conv")(inputs)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(width, activation="elu", name="hidden")(x)  # most of the weights
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="scores")(x))
        path = root / f"m{index}.keras"
        model.save(path)
        import_model(path, f"m{index}", root / "store")
        size = sum(int(w.numpy().nbytes) for w in model.weights)
    return size


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--keep", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mindscope-residency-"))
    size = build_store(root, args.models, args.width)
    names = [f"m{i}" for i in range(args.models)]
    command = [sys.executable, "-m", "mindscope.cli", "serve", "--port", "{port}", "--grpc-port", "0"]
    env = {"MINDSCOPE_MODEL_STORE_DIR": str(root / "store"), "MINDSCOPE_DEFAULT_MODEL": "m0"}
    servers = {
        "no limit": start_server(command, env | {"MINDSCOPE_JOBS_DIR": str(root / "jobs-a")}),
        f"keep {args.keep}": start_server(
            command, env | {"MINDSCOPE_JOBS_DIR": str(root / "jobs-b"), "MINDSCOPE_MAX_LOADED_MODELS": str(args.keep)}
        ),
    }
    body = IMAGE.read_bytes()
    rows = []
    try:
        for label, (process, base) in servers.items():
            start_rss = rss_mib(process.pid)
            samples, cold, warm = [], [], []
            with httpx.Client(base_url=base, timeout=300) as http:
                for _ in range(2):
                    for name in names:
                        loads = metric(base, "mindscope_model_loads_total")
                        started = time.perf_counter()
                        answer = http.post(
                            f"/predict?model={name}", content=body, headers={"Content-Type": "image/jpeg"}
                        )
                        took = time.perf_counter() - started
                        assert answer.status_code == 200, answer.text
                        (cold if metric(base, "mindscope_model_loads_total") > loads else warm).append(took)
                        samples.append(rss_mib(process.pid))
                resident = metric(base, "mindscope_models_resident")
                loads = metric(base, "mindscope_model_loads_total")
                unloads = metric(base, "mindscope_model_unloads_total")
            rows.append(
                (
                    label,
                    start_rss,
                    max(samples),
                    samples[-1],
                    int(resident),
                    int(loads),
                    int(unloads),
                    statistics.median(cold) * 1000 if cold else float("nan"),
                    statistics.median(warm) * 1000 if warm else float("nan"),
                )
            )
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(30)
    lines = [
        SECTION,
        "",
        f"`python bench/residency_bench.py --models {args.models} --width {args.width} --keep {args.keep}` (one "
        f"machine: 2 cores, no GPU). {args.models} models of one shape ({size / 1e6:.1f} MB of weights each), two "
        "servers side by side, two rounds of one /predict to each model in turn; RSS read after each request.",
        "",
        "| server | RSS at start MiB | peak RSS MiB | RSS at end MiB | resident at end | loads | unloads "
        "| p50 ms, request that loads | p50 ms, model in memory |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row[0]} | {row[1]:.0f} | {row[2]:.0f} | {row[3]:.0f} | {row[4]} | {row[5]} | {row[6]} "
            f"| {row[7]:.0f} | {row[8]:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    write_section(Path(args.out), text)


if __name__ == "__main__":
    main()
