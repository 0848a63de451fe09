"""/predict with payload logging off and on, side by side: served p50 and p95 from one client.

    python bench/payload_bench.py [--requests 500] [--out docs/benchmarks.md]

Two `mindscope serve` processes on the committed model: one without payload logging, one sending
every request and response to a receiver on loopback (a threading HTTP server in this process that
answers 202). Rounds alternate between them; the medians of the rounds are compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
from reliability import IMAGE, REPO
from report import write_section  # bench/ is the script's folder
from serve_bench import _start as start_server

SECTION = "## Payload logging: /predict with it off and on"


class Sink(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        Sink.received += 1
        self.send_response(202)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def latencies(base: str, body: bytes, count: int) -> list[float]:
    times = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(count):
            started = time.perf_counter()
            answer = client.post("/predict", content=body, headers={"Content-Type": "image/jpeg"})
            times.append(time.perf_counter() - started)
            assert answer.status_code == 200
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    command = [sys.executable, "-m", "mindscope.cli", "serve", "--port", "{port}", "--grpc-port", "0"]
    store = {"MINDSCOPE_MODEL_STORE_DIR": str(REPO / "model_store")}
    off, off_base = start_server(command, store)
    on, on_base = start_server(
        command, store | {"MINDSCOPE_PAYLOAD_LOG_URL": f"http://127.0.0.1:{sink.server_port}/events"}
    )
    body = IMAGE.read_bytes()
    results: dict[str, list[list[float]]] = {"off": [], "on": []}
    try:
        for base in (off_base, on_base):
            latencies(base, body, 50)  # warm
        for _ in range(args.rounds):
            results["off"].append(latencies(off_base, body, args.requests))
            results["on"].append(latencies(on_base, body, args.requests))
    finally:
        off.terminate()
        on.terminate()
        sink.shutdown()
    p50 = {k: statistics.median(statistics.median(r) for r in v) * 1000 for k, v in results.items()}
    p95 = {k: statistics.median(float(np.percentile(r, 95)) for r in v) * 1000 for k, v in results.items()}
    lines = [
        SECTION,
        "",
        f"`python bench/payload_bench.py --requests {args.requests}` (one machine: 2 cores, no GPU; the committed "
        f"model). One client, sequential /predict of one JPEG, {args.rounds} rounds alternating between a server "
        "without payload logging and one sending every request and response as a CloudEvent to a receiver on "
        f"loopback ({Sink.received} events received); the medians of the rounds.",
        "",
        "| payload logging | p50 ms | p95 ms |",
        "|---|---|---|",
        f"| off | {p50['off']:.2f} | {p95['off']:.2f} |",
        f"| on (all, bytes) | {p50['on']:.2f} | {p95['on']:.2f} |",
        "",
        f"On / off: p50 {p50['on'] / p50['off']:.2f}x, p95 {p95['on'] / p95['off']:.2f}x.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_section(Path(args.out), text)


if __name__ == "__main__":
    main()
