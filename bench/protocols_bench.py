"""Served throughput over the standard protocols against our own raw-body /predict, one server.

    .venv/bin/python bench/protocols_bench.py [--out docs/benchmarks.md]

One `mindscope serve` (HTTP and gRPC), one image per request, from load generators in their own
processes (bench/loadgen.py for HTTP, bench/grpc_loadgen.py for gRPC) at 1, 8 and 32 clients.
Every configuration is measured once per round, interleaved, for 3 rounds; the table gives medians
and each configuration's ratio to /predict measured in the same round. Writes its section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

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


def grpc_request(tensor: dict[str, Any], blob: bytes) -> bytes:
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    request.outputs.add(name="probabilities")
    request.raw_input_contents.append(blob)
    return request.SerializeToString()


def measure(command: list[str], server_pid: int, requests: int) -> dict[str, float]:
    subprocess.run([*command, "--total", "50", "--warmup", "0"], check=True, capture_output=True)
    before = thread_cpu_s(server_pid)
    result = json.loads(
        subprocess.run([*command, "--total", str(requests), "--warmup", "0"], check=True, capture_output=True).stdout
    )
    after = thread_cpu_s(server_pid)
    if result["failures"]:
        raise RuntimeError(f"{command[2]} failed under load: {result['failures']}")
    server_cpu = sum(after[t] - before.get(t, 0.0) for t in after)
    return {
        "rps": result["requests_per_s"],
        "p50": float(np.percentile(result["latencies_s"], 50)) * 1000,
        "p99": float(np.percentile(result["latencies_s"], 99)) * 1000,
        "server_ms": server_cpu * 1000 / requests,
        "client_ms": result["cpu_s"] * 1000 / requests,
    }


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

    grpc_port = free_port()
    command = [str(Path(sys.executable).with_name("mindscope")), "serve", "--port", "{port}"]
    process, base = _start(
        command, {"MINDSCOPE_MODEL_STORE_DIR": str(args.store), "MINDSCOPE_GRPC_PORT": str(grpc_port)}
    )
    here = Path(__file__).resolve().parent
    python = sys.executable
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "image.jpg").write_bytes(jpeg)
        configs: dict[str, list[str]] = {
            "/predict, raw JPEG body": [python, str(here / "loadgen.py"), f"{base}/predict", str(work / "image.jpg")]
        }
        for label, (tensor, blob) in tensors.items():
            body, header_length = v2_body(tensor, blob)
            path = work / f"v2-{label.replace(' ', '-')}.bin"
            path.write_bytes(body)
            header = f"Inference-Header-Content-Length: {header_length}"
            configs[f"V2 REST binary, {label}"] = [
                python, str(here / "loadgen.py"), f"{base}/v2/models/{MODEL}/infer", str(path),
                "--content-type", "application/octet-stream", "--header", header,
            ]  # fmt: skip
        for label, (tensor, blob) in tensors.items():
            path = work / f"grpc-{label.replace(' ', '-')}.bin"
            path.write_bytes(grpc_request(tensor, blob))
            configs[f"V2 gRPC, {label}"] = [python, str(here / "grpc_loadgen.py"), f"127.0.0.1:{grpc_port}", str(path)]
        # How an app calls gRPC: its concurrent calls share one channel (one HTTP/2 connection).
        shared = [*configs["V2 gRPC, raw tensor"], "--connections", "1"]
        configs["V2 gRPC, raw tensor, clients sharing one connection"] = shared
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        try:
            for round_index in range(ROUNDS):
                for concurrency in CONCURRENCY:
                    for label, config in configs.items():
                        measured = measure([*config, "--concurrency", str(concurrency)], process.pid, args.requests)
                        results.setdefault((label, concurrency), []).append(measured)
                        print(
                            f"round {round_index + 1} c={concurrency} {label}: {measured['rps']:.0f} req/s", flush=True
                        )
        finally:
            process.terminate()
            process.wait(timeout=60)

    reference = "/predict, raw JPEG body"
    lines = [
        "## Served over the standard protocols (one image per request, against /predict)",
        "",
        f"`python bench/protocols_bench.py`: one `mindscope serve` ({MODEL}), HTTP on loopback from "
        "bench/loadgen.py and gRPC from bench/grpc_loadgen.py (the request "
        "serialized once; a connection per client unless the row says otherwise), each in its own process; "
        f"{ROUNDS} rounds, every configuration once per round, "
        f"{args.requests} requests each. Medians of the rounds; the ratio is to /predict in the same round. "
        "Raw tensor: FP32 [1, 32, 32, 3] as binary data; encoded image: BYTES [1] holding the JPEG file that "
        "/predict gets as its body. CPU per request: the server (all threads) / the load generator.",
        "",
        "| clients | protocol, input | requests/s | vs /predict | p50 ms | p99 ms "
        "| CPU ms per request: server / load generator |",
        "|---|---|---|---|---|---|---|",
    ]
    for concurrency in CONCURRENCY:
        for label in configs:
            rounds = results[(label, concurrency)]
            ratios = [r["rps"] / ref["rps"] for r, ref in zip(rounds, results[(reference, concurrency)], strict=True)]
            median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
            lines.append(
                f"| {concurrency} | {label} | {median['rps']:.0f} | {statistics.median(ratios):.2f} | "
                f"{median['p50']:.1f} | {median['p99']:.1f} | {median['server_ms']:.2f} / {median['client_ms']:.2f} |"
            )
    text = "\n".join(lines)
    print(text)
    write_section(args.out, text)


if __name__ == "__main__":
    main()
