"""/predict with tracing and payload logging off and on, side by side: served p50 and p95 from one client.

    python bench/operations_bench.py [--requests 300] [--rounds 3] [--before REV] [--out docs/benchmarks.md]

`mindscope serve` processes on the committed model, each configured by its environment alone:
- before: the code at REV, from before tracing existed (a git worktree; left out without --before);
- off: this code, no `OTEL_*` and no payload log;
- tracing: `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans sent over OTLP/HTTP to a receiver on loopback;
- payload log: every request and response sent as a CloudEvent to a receiver on loopback;
- both.
The receivers are threading HTTP servers in this process. Rounds alternate between the servers; the
medians of the rounds are compared. "Off costs nothing" is before vs off, and the hooks' own cost
when off, timed in this process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
from reliability import IMAGE, REPO
from report import write_section  # bench/ is the script's folder
from serve_bench import _start as start_server

SECTION = "## Tracing and payload logging: /predict with each off and on"


class Sink(BaseHTTPRequestHandler):
    """Takes CloudEvents (202) and OTLP/HTTP exports (200, an empty ExportTraceServiceResponse)."""

    received = {"/events": 0, "/v1/traces": 0}

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        Sink.received[self.path] = Sink.received.get(self.path, 0) + 1
        traces = self.path == "/v1/traces"
        self.send_response(200 if traces else 202)
        if traces:
            self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
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


def hooks_when_off_us() -> float:
    """Microseconds of the tracing hooks one /predict passes through with tracing off: decode,
    render and a batcher's capture and record (sys.path holds this checkout's service/)."""
    sys.path.insert(0, str(REPO / "service"))
    from mindscope import tracing

    assert not tracing.enabled()

    def one_request() -> None:
        with tracing.span("decode"):
            pass
        traced = tracing.capture()
        if traced is not None:
            tracing.record(traced, 0, 0)
        with tracing.span("render", format="json"):
            pass

    count = 200_000
    return timeit.timeit(one_request, number=count) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="a git revision from before tracing, served as the baseline")
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    receiver = f"http://127.0.0.1:{sink.server_port}"
    command = [sys.executable, "-m", "mindscope.cli", "serve", "--port", "{port}", "--grpc-port", "0"]
    store = {"MINDSCOPE_MODEL_STORE_DIR": str(REPO / "model_store"), "PYTHONPATH": str(REPO / "service")}
    tracing_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    payload_env = {"MINDSCOPE_PAYLOAD_LOG_URL": f"{receiver}/events"}
    configs = {
        "off": store,
        "tracing": store | tracing_env,
        "payload log": store | payload_env,
        "both": store | tracing_env | payload_env,
    }
    worktree = None
    if args.before:
        worktree = Path(tempfile.mkdtemp(prefix="mindscope-before-")) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), args.before], check=True)
        configs = {"before": store | {"PYTHONPATH": str(worktree / "service")}} | configs
    servers = {name: start_server(command, env) for name, env in configs.items()}
    body = IMAGE.read_bytes()
    results: dict[str, list[list[float]]] = {name: [] for name in servers}
    try:
        for _, base in servers.values():
            latencies(base, body, 50)  # warm
        for _ in range(args.rounds):
            for name, (_, base) in servers.items():
                results[name].append(latencies(base, body, args.requests))
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(30)
        sink.shutdown()
        if worktree is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False)
    hooks_us = hooks_when_off_us()
    p50 = {k: statistics.median(statistics.median(r) for r in v) * 1000 for k, v in results.items()}
    p95 = {k: statistics.median(float(np.percentile(r, 95)) for r in v) * 1000 for k, v in results.items()}
    described = {
        "before": f"before tracing ({args.before})",
        "off": "off (tracing and payload logging)",
        "tracing": "tracing on (OTLP/HTTP, every request sampled)",
        "payload log": "payload logging on (all, bytes)",
        "both": "both on",
    }
    lines = [
        SECTION,
        "",
        f"`python bench/operations_bench.py --requests {args.requests} --rounds {args.rounds}"
        + (f" --before {args.before}`" if args.before else "`")
        + " (one machine: 2 cores, no GPU; the committed model). One client, sequential /predict of one JPEG, "
        f"rounds alternating between {len(servers)} servers configured only by their environment; the medians "
        f"of the rounds. The receivers, in the bench's process on the same cores, took "
        f"{Sink.received.get('/v1/traces', 0)} OTLP exports and {Sink.received.get('/events', 0)} CloudEvents.",
        "",
        "| configuration | p50 ms | p95 ms | p50 / off |",
        "|---|---|---|---|",
    ]
    for name in servers:
        lines.append(f"| {described[name]} | {p50[name]:.2f} | {p95[name]:.2f} | {p50[name] / p50['off']:.2f}x |")
    lines += [
        "",
        f"Tracing off: the hooks a /predict passes through cost {hooks_us:.2f} µs in all (timed in process), "
        f"{hooks_us / 10 / p50['off']:.3f}% of its p50.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_section(Path(args.out), text)


if __name__ == "__main__":
    main()
