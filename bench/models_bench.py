"""One row per shipped model: batched forward in process, served /predict, and integrated
gradients at 50 steps over HTTP, every model measured in the same run against the same server.

    python bench/models_bench.py [--store model_store] [--requests 600] [--out docs/benchmarks.md]

Prints the table and writes it into the "Per shipped model" section of docs/benchmarks.md.
Each model's newest version is measured; the models take turns, round by round, so a slower
stretch of a shared machine falls on all of them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import loadgen
import numpy as np
from mindscope.engine.loaded_model import load_model
from mindscope.engine.store import ModelRef, ModelStore
from reliability import IMAGE, JPEG, REPO, start_server
from report import write_section  # bench/ is the script's folder

SECTION = "## Per shipped model"
ROUNDS = 3
CLIENTS = 8
FORWARD_BATCH = 32


@dataclass
class Figures:
    ref: ModelRef
    accuracy: float | None
    parameters: int = 0
    forward: list[float] = field(default_factory=list)  # images/s per round, in process, batch 32
    served: list[float] = field(default_factory=list)  # requests/s per round, 8 clients
    explain: list[float] = field(default_factory=list)  # ms per IG request, over HTTP

    def row(self) -> str:
        accuracy = "-" if self.accuracy is None else f"{100 * self.accuracy:.1f}%"
        return (
            f"| {self.ref.label} | {self.parameters:,} | {accuracy} | {statistics.median(self.forward):.0f} | "
            f"{statistics.median(self.served):.0f} | {statistics.median(self.explain):.0f} |"
        )


def forward_rate(store: ModelStore, ref: ModelRef, repeats: int = 10) -> tuple[float, int]:
    """(images/s of one compiled call on a batch, the model's parameter count)."""
    loaded = load_model(store, ref)
    try:
        batch = np.random.default_rng(0).uniform(0, 1, (FORWARD_BATCH, *loaded.input_shape)).astype(np.float32)
        loaded.predict_now(batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            loaded.predict_now(batch)
            times.append(time.perf_counter() - start)
        return FORWARD_BATCH / statistics.median(times), int(loaded.model.count_params())
    finally:
        loaded.close()


def explain_ms(base: str, ref: ModelRef, image: bytes, repeats: int) -> float:
    url = f"/explain/integrated-gradients?steps=50&model={ref.name}&version={ref.version}"
    with httpx.Client(base_url=base, timeout=120) as http:
        http.post(url, content=image, headers=JPEG).raise_for_status()  # the first one compiles
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            http.post(url, content=image, headers=JPEG).raise_for_status()
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=REPO / "model_store")
    parser.add_argument("--requests", type=int, default=600, help="served /predict requests per model and round")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    store = ModelStore(args.store)
    image = IMAGE.read_bytes()
    figures = []
    for name in store.names():
        ref = ModelRef(name, store.versions(name)[-1])
        figures.append(Figures(ref, store.read_metadata(ref).get("validation_accuracy")))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    server = start_server(args.store, Path("/tmp") / "mindscope-models-bench.log")
    try:
        for round_ in range(ROUNDS):
            for model in figures:
                rate, model.parameters = forward_rate(store, model.ref)
                model.forward.append(rate)
                url = f"{server.base}/predict?model={model.ref.name}&version={model.ref.version}"
                if round_ == 0:  # load and warm the model in the server
                    httpx.post(url, content=image, headers=JPEG, timeout=180).raise_for_status()
                result = asyncio.run(loadgen.run(url, image, "image/jpeg", CLIENTS, args.requests))
                if result["failures"]:
                    raise RuntimeError(f"{model.ref.label}: failed requests {result['failures']}")
                model.served.append(float(result["requests_per_s"]))  # type: ignore[arg-type]
                model.explain.append(explain_ms(server.base, model.ref, image, repeats=5))
                print(
                    f"round {round_ + 1} {model.ref.label}: forward {model.forward[-1]:.0f} img/s, "
                    f"served {model.served[-1]:.0f} req/s, IG-50 {model.explain[-1]:.0f} ms",
                    flush=True,
                )
    finally:
        server.stop()
    text = "\n".join(
        [
            SECTION,
            "",
            f"`python bench/models_bench.py` ({started}): each stored model's newest version, medians of {ROUNDS}",
            f"rounds in which the models take turns. Forward: one compiled call on a batch of {FORWARD_BATCH} in",
            f"process. Served: `POST /predict?model=...` with one CIFAR-10 JPEG, {CLIENTS} keep-alive clients",
            f"(bench/loadgen.py), {args.requests} requests a round, one `mindscope serve` holding every model.",
            "IG: `POST /explain/integrated-gradients?steps=50`, one client, median of 5 per round.",
            "",
            "| model | parameters | held-out accuracy | forward images/s | served requests/s | IG 50 steps ms |",
            "|---|---|---|---|---|---|",
            *(model.row() for model in figures),
        ]
    )
    print(text)
    write_section(args.out, text)


if __name__ == "__main__":
    main()
