"""Served throughput over the standard protocols against our own raw-body /predict, one server.

    apt install nghttp2-client   # h2load
    .venv/bin/python bench/protocols_bench.py [--out docs/benchmarks.md]

One `mindscope serve` (HTTP and gRPC), one image per request, at 1, 8 and 32 clients, all driven by
h2load (nghttp2's load generator, in C): HTTP/1.1 keep-alive connections for /predict and the V2
REST routes, HTTP/2 connections for gRPC, so every protocol is measured with the same lean client
on the same 2 cores. h2load does not read gRPC's status trailer, so each gRPC run is checked in the
service's own metrics (`grpc:ModelInfer`, status OK). Every configuration is measured once per round,
interleaved, for 3 rounds; the table gives medians and each one's ratio to /predict in the same round.
Writes its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from mindscope.protocols import open_inference_pb2 as pb  # noqa: E402
from report import write_section  # noqa: E402
from serve_bench import DEFAULT_IMAGE, REPO, _start, thread_cpu_s  # noqa: E402

MODEL = "cifar10-allcnn"
ROUNDS = 3
CONCURRENCY = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def v2_body(tensor: dict[str, Any], blob: bytes) -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(blob)}}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + blob, len(header)


def grpc_body(tensor: dict[str, Any], blob: bytes) -> bytes:
    """A ModelInferRequest as gRPC frames it on the wire: not compressed, 4-byte length, message."""
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    request.outputs.add(name="probabilities")
    request.raw_input_contents.append(blob)
    message = request.SerializeToString()
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_ok(base: str) -> float:
    metrics = httpx.get(f"{base}/metrics").text
    found = re.search(
        r'^mindscope_requests_total\{method="POST",route="grpc:ModelInfer",status="OK"\} (\S+)$', metrics, re.M
    )
    return float(found.group(1)) if found else 0.0


def h2load(config: dict[str, Any], clients: int, requests: int) -> list[str]:
    command = ["h2load", "-n", str(requests), "-d", str(config["body"])]
    command += [arg for header in config["headers"] for arg in ("-H", header)]
    if config["grpc"]:
        # One stream at a time per connection, like an HTTP/1.1 client; or every client's calls
        # multiplexed on one connection, as an app's calls share its channel.
        shared = config.get("shared", False)
        command += ["-c", "1" if shared else str(clients), "-m", str(clients) if shared else "1"]
    else:
        command += ["--h1", "-c", str(clients)]
    return [*command, config["url"]]


def measure(config: dict[str, Any], clients: int, server_pid: int, base: str, requests: int) -> dict[str, float]:
    subprocess.run(h2load(config, clients, 100), check=True, capture_output=True)  # warm-up
    ok_before, before = grpc_ok(base), thread_cpu_s(server_pid)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(h2load(config, clients, requests), check=True, capture_output=True, text=True).stdout
    after, ok_after = thread_cpu_s(server_pid), grpc_ok(base)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    succeeded = int(re.search(r"(\d+) succeeded", output).group(1))
    if succeeded != requests or (config["grpc"] and ok_after - ok_before != requests):
        raise RuntimeError(f"{config['url']}: not every request succeeded\n{output}")
    latency = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", output)
    return {
        "rps": float(re.search(r"finished in \S+, ([\d.]+) req/s", output).group(1)),
        "mean_ms": _ms(latency.group(3)),
        "max_ms": _ms(latency.group(2)),
        "server_ms": sum(after[t] - before.get(t, 0.0) for t in after) * 1000 / requests,
        "client_ms": (used.ru_utime + used.ru_stime - children.ru_utime - children.ru_stime) * 1000 / requests,
    }


def _ms(value: str) -> float:
    """h2load's durations: 812us, 4.21ms, 1.02s."""
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, default=REPO / "model_store")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--requests", type=int, default=600, help="requests per measurement")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()

    jpeg = args.image.read_bytes()
    pixels = (np.asarray(Image.open(args.image).convert("RGB"), np.float32) / 255)[None]
    raw = {"name": "image", "datatype": "FP32", "shape": [1, 32, 32, 3]}
    encoded = {"name": "image", "datatype": "BYTES", "shape": [1]}
    tensors = {
        "raw tensor": (raw, pixels.tobytes()),
        "encoded image": (encoded, len(jpeg).to_bytes(4, "little") + jpeg),
    }

    if shutil.which("h2load") is None:
        raise SystemExit("h2load is missing: apt install nghttp2-client")
    grpc_port = free_port()
    command = [str(Path(sys.executable).with_name("mindscope")), "serve", "--port", "{port}"]
    environment = {"MINDSCOPE_MODEL_STORE_DIR": str(args.store), "MINDSCOPE_GRPC_PORT": str(grpc_port)}
    process, base = _start(command, environment)
    grpc_url = f"http://127.0.0.1:{grpc_port}/inference.GRPCInferenceService/ModelInfer"
    grpc_headers = ["content-type: application/grpc", "te: trailers"]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "image.jpg").write_bytes(jpeg)
        configs: dict[str, dict[str, Any]] = {
            "/predict, raw JPEG body": {
                "url": f"{base}/predict",
                "body": work / "image.jpg",
                "headers": ["content-type: image/jpeg"],
                "grpc": False,
            }
        }
        for label, (tensor, blob) in tensors.items():
            body, header_length = v2_body(tensor, blob)
            path = work / f"v2-{label.replace(' ', '-')}.bin"
            path.write_bytes(body)
            configs[f"V2 REST binary, {label}"] = {
                "url": f"{base}/v2/models/{MODEL}/infer",
                "body": path,
                "headers": [
                    "content-type: application/octet-stream",
                    f"inference-header-content-length: {header_length}",
                ],
                "grpc": False,
            }
        for label, (tensor, blob) in tensors.items():
            path = work / f"grpc-{label.replace(' ', '-')}.bin"
            path.write_bytes(grpc_body(tensor, blob))
            configs[f"V2 gRPC, {label}"] = {"url": grpc_url, "body": path, "headers": grpc_headers, "grpc": True}
        configs["V2 gRPC, raw tensor, every client's calls on one connection"] = {
            **configs["V2 gRPC, raw tensor"],
            "shared": True,
        }
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        try:
            for round_index in range(ROUNDS):
                for clients in CONCURRENCY:
                    for label, config in configs.items():
                        measured = measure(config, clients, process.pid, base, args.requests)
                        results.setdefault((label, clients), []).append(measured)
                        print(f"round {round_index + 1} c={clients} {label}: {measured['rps']:.0f} req/s", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=60)

    reference = "/predict, raw JPEG body"
    lines = [
        "## Served over the standard protocols (one image per request, against /predict)",
        "",
        f"`python bench/protocols_bench.py`: one `mindscope serve` ({MODEL}) on loopback, every protocol "
        "driven by h2load (C): a keep-alive HTTP/1.1 connection per client for /predict and V2 REST, an "
        "HTTP/2 connection per client with one call at a time for gRPC (or, in the last row, every client's "
        f"calls multiplexed on one connection). {ROUNDS} rounds, every configuration once per round, "
        f"{args.requests} requests each; medians of the rounds, the ratio to /predict in the same round. "
        "Raw tensor: FP32 [1, 32, 32, 3] as binary data; encoded image: BYTES [1] holding the JPEG file that "
        "/predict gets as its body. CPU per request: the server (all threads) / h2load.",
        "",
        "| clients | protocol, input | requests/s | vs /predict | mean ms | max ms "
        "| CPU ms per request: server / load generator |",
        "|---|---|---|---|---|---|---|",
    ]
    for clients in CONCURRENCY:
        for label in configs:
            rounds = results[(label, clients)]
            ratios = [r["rps"] / ref["rps"] for r, ref in zip(rounds, results[(reference, clients)], strict=True)]
            median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
            lines.append(
                f"| {clients} | {label} | {median['rps']:.0f} | {statistics.median(ratios):.2f} | "
                f"{median['mean_ms']:.1f} | {median['max_ms']:.1f} | {median['server_ms']:.2f} / "
                f"{median['client_ms']:.2f} |"
            )
    text = "\n".join(lines)
    print(text)
    write_section(args.out, text)


if __name__ == "__main__":
    main()
