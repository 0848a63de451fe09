"""Jobs against the in-process floor, and online latency with a job running.

    python bench/jobs_bench.py [--predict-images 10000] [--ig-images 2000] [--out docs/benchmarks.md]

1. A job's images/s, from the server's own start and end times, against the same work done in one
   process without the service: for predict, reading and decoding the files and the batched forward
   (64 a call); for integrated gradients (32 steps), reading, decoding and the runner's `explain`
   over the images, two at a time as the job does (and one at a time, whichever is faster).
2. Online p50 latency of /predict and of a single-image explanation (integrated gradients, 32 steps),
   sequential requests from one client, with the server idle and with an IG job running.

The images are copies of CIFAR-10 training images in class-named folders, in a temporary data root.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from reliability import IMAGE, REPO
from report import write_section  # bench/ is the script's folder
from serve_bench import _start as start_server

SECTION = "## Jobs: throughput against the in-process floor, and online latency beside a job"
DATA = REPO.parent / "shared" / "data" / "cifar10" / "train"
IG = {"steps": 32}


def data_root(folder: Path, count: int) -> Path:
    """`count` images, spread over the classes, copied into class-named folders."""
    classes = sorted(p.name for p in DATA.iterdir())
    per = -(-count // len(classes))
    copied = 0
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for path in sorted((DATA / name).iterdir())[:per]:
            if copied == count:
                return folder
            shutil.copy(path, folder / name / path.name)
            copied += 1
    return folder


def floor_predict(paths: list[Path]) -> tuple[float, float]:
    """(images/s reading + decoding + forward, images/s of the forward alone) in this process."""
    from mindscope.dataplane.decoding import DecodeLimits, decode_image_bytes
    from mindscope.engine.registry import ModelRegistry
    from mindscope.engine.store import ModelStore

    model = ModelRegistry(ModelStore(REPO / "model_store")).get()
    limits = DecodeLimits(model.input_shape, 4096 * 4096)
    model.predict(np.zeros((64, *model.input_shape), np.float32))
    started = time.perf_counter()
    pixels = []
    for start in range(0, len(paths), 64):
        batch = np.stack([decode_image_bytes(p.read_bytes(), limits).pixels for p in paths[start : start + 64]])
        model.predict(batch)
        pixels.append(batch)
    whole = time.perf_counter() - started
    started = time.perf_counter()
    for batch in pixels:
        model.predict(batch)
    return len(paths) / whole, len(paths) / (time.perf_counter() - started)


def floor_ig(paths: list[Path]) -> tuple[float, float]:
    """(images/s one at a time, images/s two at a time) of the runner's IG in this process."""
    from mindscope.dataplane.decoding import DecodeLimits, decode_image_bytes
    from mindscope.engine.explain.registry import method_named
    from mindscope.engine.explain.runner import explain
    from mindscope.engine.registry import ModelRegistry
    from mindscope.engine.store import ModelStore

    model = ModelRegistry(ModelStore(REPO / "model_store")).get()
    limits = DecodeLimits(model.input_shape, 4096 * 4096)
    method = method_named("integrated-gradients")
    params = method.parse(dict(IG))

    def one(path: Path) -> None:
        explain(model, method, decode_image_bytes(path.read_bytes(), limits).pixels, params)

    one(paths[0])
    started = time.perf_counter()
    for path in paths:
        one(path)
    alone = len(paths) / (time.perf_counter() - started)
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, paths))
    return alone, len(paths) / (time.perf_counter() - started)


def run_job(base: str, body: dict, poll_s: float = 0.5) -> tuple[float, dict]:
    """The job's images/s, followed as the SDK's AsyncJob.wait does: one kept-alive connection, a
    look every `poll_s`. (A new client per look costs the client a TLS context and a connection each
    time: on these 2 shared cores that took up to a fifth of a predict job's rate.)"""
    with httpx.Client(base_url=base, timeout=60) as client:
        job = client.post("/jobs", json=body).json()
        while True:
            state = client.get(f"/jobs/{job['id']}").json()
            if state["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(poll_s)
    from datetime import datetime

    seconds = (datetime.fromisoformat(state["finished"]) - datetime.fromisoformat(state["started"])).total_seconds()
    return state["items"]["done"] / seconds, state


def p50(base: str, path: str, body: bytes, count: int, every_s: float = 0.0) -> float:
    """Median ms of `count` requests from one client: back to back, or one every `every_s` seconds
    (a paced client leaves the model idle between requests: the spare time a job may take)."""
    times = []
    with httpx.Client(timeout=60) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.post(base + path, content=body, headers={"Content-Type": "image/jpeg"})
            took = time.perf_counter() - started
            times.append(took)
            assert response.status_code == 200, response.text
            if every_s > took:
                time.sleep(every_s - took)
    return statistics.median(times) * 1000


def done(base: str, job_id: str) -> int:
    return int(httpx.get(f"{base}/jobs/{job_id}", timeout=30).json()["items"]["done"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predict-images", type=int, default=10_000)
    parser.add_argument("--ig-images", type=int, default=2_000)
    parser.add_argument("--online", type=int, default=200, help="sequential requests per latency figure")
    parser.add_argument("--rounds", type=int, default=3, help="predict: floor and job rounds, taking turns")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "service"))
    with tempfile.TemporaryDirectory() as scratch:
        root = data_root(Path(scratch) / "root" / "set", args.predict_images)
        predict_paths = sorted(p for p in root.rglob("*.jpg"))
        ig_root = data_root(Path(scratch) / "root" / "ig", args.ig_images)
        ig_paths = sorted(p for p in ig_root.rglob("*.jpg"))
        env = {
            "MINDSCOPE_MODEL_STORE_DIR": str(REPO / "model_store"),
            "MINDSCOPE_DATA_ROOT": str(Path(scratch) / "root"),
            "MINDSCOPE_JOBS_DIR": str(Path(scratch) / "jobs"),
        }
        command = [sys.executable, "-m", "mindscope.cli", "serve", "--port", "{port}", "--grpc-port", "0"]
        process, base = start_server(command, env)
        try:
            # Side by side: the floor and the job take turns, three rounds; the medians are compared.
            floors, forwards, rates = [], [], []
            for _ in range(args.rounds):
                floor, forward = floor_predict(predict_paths)
                floors.append(floor)
                forwards.append(forward)
                rates.append(run_job(base, {"kind": "predict", "folder": "set"})[0])
            predict_floor, forward_only = statistics.median(floors), statistics.median(forwards)
            predict_rate = statistics.median(rates)
            ig_alone, ig_two = floor_ig(ig_paths)
            ig_job = {"kind": "explain", "method": "integrated-gradients", "parameters": IG, "folder": "ig"}
            ig_rate, _ = run_job(base, ig_job)
            body = IMAGE.read_bytes()
            ig_path = "/explain/integrated-gradients?steps=32"
            p50(base, "/predict", body, 20)  # warm
            idle_predict = p50(base, "/predict", body, args.online)
            idle_ig = p50(base, ig_path, body, args.online // 4)
            long_job = {
                "kind": "explain",
                "method": "integrated-gradients",
                "parameters": {"steps": 256},
                "folder": "ig",
            }
            paced_idle = p50(base, "/predict", body, args.online, every_s=0.05)
            job = httpx.post(f"{base}/jobs", json=long_job, timeout=60).json()
            while httpx.get(f"{base}/jobs/{job['id']}", timeout=30).json()["state"] != "running":
                time.sleep(0.1)
            before = done(base, job["id"])
            busy_predict = p50(base, "/predict", body, args.online)
            busy_ig = p50(base, ig_path, body, args.online // 4)
            during_closed = done(base, job["id"]) - before
            before, started = done(base, job["id"]), time.perf_counter()
            paced_busy = p50(base, "/predict", body, args.online, every_s=0.05)
            during_paced = (done(base, job["id"]) - before) / (time.perf_counter() - started)
            alone_started, alone_before = time.perf_counter(), done(base, job["id"])
            time.sleep(10)
            alone_rate = (done(base, job["id"]) - alone_before) / (time.perf_counter() - alone_started)
            httpx.delete(f"{base}/jobs/{job['id']}", timeout=30)
        finally:
            process.terminate()
            process.wait(60)
    ig_floor = max(ig_alone, ig_two)
    rows = [
        (
            "predict job",
            args.predict_images,
            f"{predict_rate:.0f}",
            f"{predict_floor:.0f}",
            predict_rate / predict_floor,
        ),
        ("IG 32 steps", args.ig_images, f"{ig_rate:.1f}", f"{ig_floor:.1f}", ig_rate / ig_floor),
    ]
    lines = [
        SECTION,
        "",
        f"`python bench/jobs_bench.py --ig-images {args.ig_images}` (one machine: 2 cores, no GPU; the committed "
        "CIFAR-10 model).",
        "A job's images/s come from the server's own start and end times; the bench follows it as the async SDK does",
        "(one kept-alive connection, GET /jobs/{id} every 0.5 s). The floor is the same work in one process",
        "without the service: for predict, reading and decoding the files and the batched forward (the forward alone:",
        f"{forward_only:.0f} img/s), the medians of {args.rounds} rounds with floor and job taking turns (each round's "
        f"job/floor: {', '.join(f'{r / f:.2f}' for r, f in zip(rates, floors, strict=True))});",
        f"for IG, the runner one image at a time ({ig_alone:.1f} img/s) or two at a time ({ig_two:.1f} img/s), the "
        "faster of the two.",
        "",
        "| job | images | job images/s | in-process floor images/s | job / floor |",
        "|---|---|---|---|---|",
        *[f"| {name} | {count} | {rate} | {floor} | {ratio:.2f}x |" for name, count, rate, floor, ratio in rows],
        "",
        "Online latency, one client, idle and while an IG job (256 steps an image) runs: back to back "
        f"({args.online} /predict, {args.online // 4} IG 32 steps), and paced (one /predict every 50 ms, the model",
        "idle in between: the spare time a job may take). The job's images/s: alone "
        f"{alone_rate:.2f}, beside the paced client {during_paced:.2f}; beside the back-to-back client it finished "
        f"{during_closed} images (it waits for a 20 ms lull on all of the model's lanes).",
        "",
        "| request | p50 idle ms | p50 with a job running ms | ratio |",
        "|---|---|---|---|",
        f"| /predict back to back | {idle_predict:.2f} | {busy_predict:.2f} | {busy_predict / idle_predict:.2f}x |",
        f"| IG 32 steps back to back | {idle_ig:.1f} | {busy_ig:.1f} | {busy_ig / idle_ig:.2f}x |",
        f"| /predict every 50 ms | {paced_idle:.2f} | {paced_busy:.2f} | {paced_busy / paced_idle:.2f}x |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_section(args.out, text)


if __name__ == "__main__":
    main()
