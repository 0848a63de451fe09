"""Explanations under load: integrated gradients with 1,024 steps from 1 to 32 concurrent clients,
against a real `mindscope serve`, as a bounded burst (every client sends one request at the same
moment) and as a steady closed loop (each client sends its next request when its answer is in).

    python bench/explain_load.py [--seconds 30] [--out docs/benchmarks.md]

Prints a table and writes it into the "Explanations under load" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from reliability import IMAGE, JPEG, REPO, Server, start_server  # bench/ is the script's folder
from report import write_section

PATH = "/explain/integrated-gradients?steps=1024"
CLIENTS = (1, 2, 4, 8, 16, 32)
SECTION = "## Explanations under load"


@dataclass
class Outcome:
    status: int
    seconds: float


@dataclass
class LoadResult:
    mode: str
    clients: int
    wall_s: float
    outcomes: list[Outcome]
    gradient_rows: float

    def row(self) -> str:
        done = [o.seconds for o in self.outcomes if o.status == 200]
        refused = [o.seconds for o in self.outcomes if o.status == 503]
        late = sum(o.status == 504 for o in self.outcomes)
        other = len(self.outcomes) - len(done) - len(refused) - late
        p50 = f"{np.percentile(done, 50):.2f}" if done else "-"
        p99 = f"{np.percentile(done, 99):.2f}" if done else "-"
        slowest_503 = f"{max(refused):.2f}" if refused else "-"
        return (
            f"| {self.mode} | {self.clients} | {len(done) / self.wall_s:.2f} | {len(refused)} | {slowest_503} | {late} "
            f"| {other} | {p50} | {p99} | {self.gradient_rows / self.wall_s:.0f} |"
        )


HEADER = (
    "| load | clients | completed/s | 503 | slowest 503 (s) | 504 | other | p50 completed (s) | p99 completed (s) "
    "| gradient rows/s |\n|---|---|---|---|---|---|---|---|---|---|"
)


def _post(http: httpx.Client, image: bytes) -> Outcome:
    start = time.perf_counter()
    try:
        status = http.post(PATH, content=image, headers=JPEG).status_code
    except httpx.TransportError:
        status = 0
    return Outcome(status, time.perf_counter() - start)


def _gradient_rows(server: Server) -> float:
    lines = httpx.get(f"{server.base}/metrics", timeout=30).text.splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("mindscope_batch_rows_total{") and 'kind="gradients"' in line
    )


def burst(server: Server, image: bytes, clients: int) -> LoadResult:
    """Every client posts one request at the same moment."""
    barrier = threading.Barrier(clients)

    def one(_: int) -> Outcome:
        with httpx.Client(base_url=server.base, timeout=180) as http:
            barrier.wait()
            return _post(http, image)

    before = _gradient_rows(server)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(one, range(clients)))
    wall = time.perf_counter() - start
    return LoadResult("burst", clients, wall, outcomes, _gradient_rows(server) - before)


def closed_loop(server: Server, image: bytes, clients: int, seconds: float) -> LoadResult:
    """Each client sends its next request as soon as its previous answer is in, for `seconds`;
    a refused client waits the Retry-After it was given, as a well-behaved client would."""
    deadline = time.monotonic() + seconds
    outcomes: list[Outcome] = []

    def client(_: int) -> None:
        with httpx.Client(base_url=server.base, timeout=180) as http:
            while time.monotonic() < deadline:
                outcome = _post(http, image)
                outcomes.append(outcome)
                if outcome.status == 503:
                    time.sleep(1.0)

    before = _gradient_rows(server)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    return LoadResult("closed loop", clients, wall, outcomes, _gradient_rows(server) - before)


def measure(server: Server, image: bytes, seconds: float) -> list[LoadResult]:
    results = []
    for clients in CLIENTS:
        results.append(burst(server, image, clients))
        print(results[-1].row(), flush=True)
    for clients in CLIENTS:
        results.append(closed_loop(server, image, clients, seconds))
        print(results[-1].row(), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=REPO / "model_store")
    parser.add_argument("--seconds", type=float, default=30, help="length of each closed-loop run")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    image = IMAGE.read_bytes()
    log = Path("/tmp") / "mindscope-explain-load.log"
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    server = start_server(args.store, log)
    try:
        _post(httpx.Client(base_url=server.base, timeout=180), image)  # warm-up: compile the gradient path
        results = measure(server, image, args.seconds)
    finally:
        server.stop()
    text = "\n".join(
        [
            SECTION,
            "",
            f"`python bench/explain_load.py` ({started}): `POST {PATH}` with one CIFAR-10 JPEG, against a real",
            "`mindscope serve` with default settings (30 s deadline). Burst: every client sends one request at",
            "the same moment. Closed loop: each client sends its next request when its answer is in, for",
            f"{args.seconds:.0f} s, and waits 1 s (the Retry-After) after a 503. Times are each request's,",
            "from the client.",
            "",
            HEADER,
            *(result.row() for result in results),
        ]
    )
    print(text)
    write_section(args.out, text)


if __name__ == "__main__":
    main()
