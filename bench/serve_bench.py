"""Benchmark the served model against itself in process, and our integrated gradients against peers.

    .venv-bench/bin/python bench/serve_bench.py      (make bench)

Everything is measured in one run on this machine, so compare ratios, not absolute figures.
Prints a Markdown report and writes it to docs/benchmarks.md with a plot in docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section  # noqa: E402

JPEG = {"Content-Type": "image/jpeg"}
ROUNDS = 3  # served measurements per concurrency, each paired with an in-process one
PEER_ROUNDS = 9  # integrated-gradients calls per implementation, in turn
FLOOR_REQUESTS = 20_000  # the bare app answers ~10k/s: enough seconds for per-thread CPU clocks
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "cifar10" / "train" / "cat" / "0000.jpg"


def timed(fn: Callable[[], object], repeats: int, warm: bool = True) -> list[float]:
    if warm:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


# --- the server -------------------------------------------------------------------------------


def start_server(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The service, as `mindscope serve` starts it, on a free port."""
    command = [str(Path(sys.executable).with_name("mindscope")), "serve", "--port", "{port}"]
    return _start(command, {"MINDSCOPE_MODEL_STORE_DIR": str(store)})


def start_floor_server(answer: bytes, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """bench/floor_app.py answering every request with `answer`, on a free port."""
    answer_file = workdir / "answer.json"
    answer_file.write_bytes(answer)
    return _start([sys.executable, str(Path(__file__).with_name("floor_app.py")), "{port}", str(answer_file)], {})


def start_minimal_server(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    """bench/minimal_app.py serving the store's default model, on a free port."""
    return _start([sys.executable, str(Path(__file__).with_name("minimal_app.py")), "{port}", str(store)], {})


def _start(command: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [part.format(port=port) for part in command]
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise TimeoutError("the server did not become ready")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) each thread of a process has used so far, by thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        used[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return used


@dataclass
class Load:
    requests_per_s: float
    latencies_s: list[float]
    loop_ms: float  # CPU per request: the server's event-loop thread (HTTP, routing, decode, JSON)
    other_threads_ms: float  # the server's other threads: the batcher and TensorFlow's
    loadgen_ms: float  # the load generator, which shares the machine


def run_loadgen(base: str, body_file: Path, concurrency: int, total: int) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).with_name("loadgen.py")), f"{base}/predict", str(body_file)]
    command += ["--concurrency", str(concurrency), "--total", str(total), "--warmup", "0"]
    result: dict[str, Any] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return result


def load(base: str, body_file: Path, concurrency: int, total: int, server_pid: int) -> Load:
    """`total` /predict calls from `concurrency` connections of bench/loadgen.py, run in its own
    process so that it shares neither this process's interpreter nor its GIL."""
    run_loadgen(base, body_file, concurrency, 50)  # warm-up, not counted
    before = thread_cpu_s(server_pid)
    result = run_loadgen(base, body_file, concurrency, total)
    after = thread_cpu_s(server_pid)
    if result["failures"]:
        raise RuntimeError(f"/predict failed under load: {result['failures']}")
    used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    loop = used.pop(server_pid, 0.0)  # uvicorn runs the event loop on the main thread
    per_request_ms = 1000 / total
    return Load(
        result["requests_per_s"],
        result["latencies_s"],
        loop * per_request_ms,
        sum(used.values()) * per_request_ms,
        result["cpu_s"] * per_request_ms,
    )


# --- integrated gradients by each implementation ------------------------------------------------


def completeness_error(attributions: np.ndarray, f_x: float, f_b: float) -> float:
    return abs(float(np.sum(attributions, dtype=np.float64)) - (f_x - f_b)) / abs(f_x - f_b)


def peer_runners(model, loaded, image: np.ndarray, target: int) -> dict[str, Callable[[int], np.ndarray]]:
    """name -> run(steps) returning attributions (32, 32, 3), for each peer that is installed."""
    import tensorflow as tf

    runners: dict[str, Callable[[int], np.ndarray]] = {}
    try:
        from alibi.explainers import IntegratedGradients as AlibiIG

        def alibi(steps: int) -> np.ndarray:
            explainer = AlibiIG(model, n_steps=steps, method="gausslegendre", internal_batch_size=steps + 2)
            explanation = explainer.explain(image[None], baselines=None, target=np.array([target]))
            return np.asarray(explanation.attributions[0][0])

        runners["alibi 0.9.6 (gausslegendre)"] = alibi
    except ImportError as exc:
        print(f"alibi not installed ({exc}); pip install -r bench/requirements-peers.txt", file=sys.stderr)
    try:
        from tf_explain.core.integrated_gradients import IntegratedGradients as TfExplainIG

        def tf_explain(steps: int) -> np.ndarray:
            interpolated = TfExplainIG.generate_interpolations(image[None], steps)
            grads = TfExplainIG.get_integrated_gradients(interpolated, model, target, steps)
            # tf-explain returns the averaged gradients; IG needs the (x - baseline) factor on top.
            return image * np.asarray(grads)[0]

        runners["tf-explain 0.3.1 (x (x) mean grads)"] = tf_explain
    except ImportError as exc:
        print(f"tf-explain not installed ({exc})", file=sys.stderr)
    try:
        import saliency.core as saliency

        # Saliency's best configuration, as a user who knows it would write it: a compiled gradient.
        @tf.function(input_signature=[tf.TensorSpec([None, *image.shape], tf.float32)])
        def gradient(images):
            with tf.GradientTape() as tape:
                tape.watch(images)
                output = model(images, training=False)[:, target]
            return tape.gradient(output, images)

        def call_model(images, call_model_args=None, expected_keys=None):
            grads = gradient(tf.convert_to_tensor(np.asarray(images), tf.float32))
            return {saliency.base.INPUT_OUTPUT_GRADIENTS: grads.numpy()}

        def pair(steps: int) -> np.ndarray:
            return saliency.IntegratedGradients().GetMask(
                image, call_model, x_baseline=np.zeros_like(image), x_steps=steps, batch_size=steps
            )

        runners["PAIR saliency 0.2.1 (compiled gradient)"] = pair
    except ImportError as exc:
        print(f"saliency not installed ({exc})", file=sys.stderr)
    return runners


def forward_now(loaded: Any, image: np.ndarray) -> tuple[float, float]:
    """(median seconds of a one-image forward, images/s of the faster of a 32- and a 256-image forward),
    measured now. Which batch size is faster changes from minute to minute on a shared machine."""
    one = statistics.median(timed(lambda: loaded.predict_now(image[None]), repeats=50))
    throughputs = []
    for size, repeats in ((32, 10), (256, 3)):
        batch = np.repeat(image[None], size, axis=0)
        throughputs.append(size / statistics.median(timed(lambda b=batch: loaded.predict_now(b), repeats=repeats)))
    return one, max(throughputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, default=REPO / "model_store")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--requests", type=int, default=1500, help="requests per concurrency level (all rounds)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()

    from mindscope.engine.explain.integrated_gradients import attribute
    from mindscope.engine.images import scale_to_unit, to_rgb_array
    from mindscope.engine.registry import ModelRegistry
    from mindscope.engine.store import ModelStore
    from PIL import Image

    loaded = ModelRegistry(ModelStore(args.store)).get()
    body = args.image.read_bytes()
    with Image.open(args.image) as picture:
        image = scale_to_unit(to_rgb_array(picture, (32, 32)))
    lines = [f"# Benchmarks\n\nModel {loaded.ref.label}, {os.cpu_count()} CPUs, one run of `make bench`.\n"]

    # In process: the compiled forward at several batch sizes.
    forward = {}
    for batch in (1, 32, 256):
        images = np.repeat(image[None], batch, axis=0)
        times = timed(lambda images=images: loaded.predict_now(images), repeats=max(5, 200 // batch))
        forward[batch] = (statistics.median(times), batch / statistics.median(times))
    lines += ["## In-process forward\n", "| batch | median ms | images/s |", "|---|---|---|"]
    lines += [f"| {b} | {t * 1000:.2f} | {ips:.0f} |" for b, (t, ips) in forward.items()]

    target = int(np.argmax(loaded.predict_now(image[None])[0][0]))

    # Over HTTP.
    process, base = start_server(args.store)
    try:
        # Served load alternates with the in-process forward it is compared with, in rounds, so that
        # each ratio compares the same moment of a noisy machine; the report gives their medians.
        rounds: dict[int, list[tuple[Load, float, float]]] = {}
        for concurrency in (1, 8, 32):
            rounds[concurrency] = []
            for _ in range(ROUNDS):
                one_s, batch_ips = forward_now(loaded, image)
                run = load(base, args.image, concurrency, args.requests // ROUNDS, process.pid)
                rounds[concurrency].append((run, one_s, batch_ips))
        # The floor (one in-process gradient call on the steps + 2 rows) and the served request
        # alternate, so that both see the same moment of a noisy machine; the ratio is a median
        # of per-pair ratios.
        floor, ig_http, ig_ratio = {}, {}, {}
        with httpx.Client(base_url=base, timeout=120) as client:
            for steps in (16, 50, 128):
                rows = np.repeat(image[None], steps + 2, axis=0)
                targets = np.full(steps + 2, target, np.int32)
                url = f"/explain/integrated-gradients?steps={steps}&target={target}"
                in_process = lambda r=rows, t=targets: loaded.gradients_now(r, t)  # noqa: E731
                served_ig = lambda url=url: client.post(url, content=body, headers=JPEG)  # noqa: E731
                in_process(), served_ig()  # warm
                pairs = [(timed(in_process, 1, warm=False)[0], timed(served_ig, 1, warm=False)[0]) for _ in range(30)]
                floor[steps] = statistics.median(f for f, _ in pairs)
                ig_http[steps] = statistics.median(h for _, h in pairs)
                ig_ratio[steps] = statistics.median(h / f for f, h in pairs)
        rss = peak_rss_mib(process.pid)
        answer = httpx.post(f"{base}/predict", content=body, headers=JPEG).content
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)

    # The same load on the work a /predict request cannot skip, paired with the in-process
    # forward like the service's rounds; then on a bare app that answers the same bytes.
    process, base = start_minimal_server(args.store)
    try:
        minimal = []
        for _ in range(ROUNDS):
            _, batch_ips = forward_now(loaded, image)
            minimal.append((load(base, args.image, 32, args.requests // ROUNDS, process.pid), batch_ips))
    finally:
        process.terminate()
        process.wait(timeout=60)
    with tempfile.TemporaryDirectory() as workdir:
        process, base = start_floor_server(answer, Path(workdir))
        try:
            floor_run = load(base, args.image, 32, FLOOR_REQUESTS, process.pid)
        finally:
            process.terminate()
            process.wait(timeout=60)

    lines += [
        "\n## Served over HTTP (/predict, raw JPEG body, keep-alive connections from bench/loadgen.py on loopback)\n",
        f"{ROUNDS} rounds per concurrency, each right after an in-process batched measurement (the faster of "
        "bs 32 and 256); ratios are medians of the rounds' ratios.\n",
        "| concurrency | requests/s | p50 ms | p99 ms | vs in-process batched throughput "
        "| CPU ms per request: server event loop / server's other threads (batcher, TensorFlow) / load generator |",
        "|---|---|---|---|---|---|",
    ]
    served = {}
    for concurrency, measured in rounds.items():
        runs = [run for run, _, _ in measured]
        latencies = [latency for run in runs for latency in run.latencies_s]
        rps = statistics.median(run.requests_per_s for run in runs)
        ratio = statistics.median(run.requests_per_s / batch_ips for run, _, batch_ips in measured)
        served[concurrency] = (rps, p(latencies, 50), p(latencies, 99))
        cpu = " / ".join(
            f"{statistics.mean(getattr(run, part) for run in runs):.2f}"
            for part in ("loop_ms", "other_threads_ms", "loadgen_ms")
        )
        lines.append(
            f"| {concurrency} | {rps:.0f} | {served[concurrency][1] * 1000:.1f} | "
            f"{served[concurrency][2] * 1000:.1f} | {ratio:.2f} | {cpu} |"
        )
    lines += budget_lines(rounds[32], minimal, floor_run)
    single = [(p(run.latencies_s, 50), one_s) for run, one_s, _ in rounds[1]]
    lines.append(
        "\nSingle-image p50 over HTTP minus the in-process single-image forward measured just before, per round: "
        + ", ".join(f"{(served_p50 - one_s) * 1000:+.1f} ms" for served_p50, one_s in single)
        + f" (median {statistics.median(served_p50 - one_s for served_p50, one_s in single) * 1000:+.1f} ms). "
        f"Peak RSS of the service: {rss:.0f} MiB.\n"
    )
    lines += [
        "## Integrated gradients latency (one image, Gauss-Legendre, black baseline)\n",
        "| steps | one gradient call in process (floor) ms | over HTTP ms | HTTP / floor (median of 30 pairs) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s} | {floor[s] * 1000:.0f} | {ig_http[s] * 1000:.0f} | {ig_ratio[s]:.2f} |" for s in floor]

    # Against the peers, in process, same model, same image, 50 steps, black baseline.
    f_x = float(loaded.predict_now(image[None])[0][0, target])
    f_b = float(loaded.predict_now(np.zeros_like(image)[None])[0][0, target])

    def ours(steps: int) -> np.ndarray:
        return attribute(loaded.gradients_now, image, target, None, steps, "gauss_legendre", steps + 2).attributions

    runners = {"mindscope (gauss_legendre)": ours, **peer_runners(loaded.model, loaded, image, target)}
    lines += [
        "\n## Integrated gradients against peers (in process, 50 steps, black baseline)\n",
        f"Median of {PEER_ROUNDS} calls each, the implementations taking turns call by call.\n",
        "| implementation | median ms | relative completeness error | gradient evaluations for error < 1% |",
        "|---|---|---|---|",
    ]
    # The implementations take turns, call by call, so the machine's drift falls on all alike.
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for runner in runners.values():
        runner(50)  # traces and allocates
    for _ in range(PEER_ROUNDS):
        for name, runner in runners.items():
            samples[name] += timed(lambda runner=runner: runner(50), repeats=1, warm=False)
    peer_times = {}
    for name, runner in runners.items():
        times = samples[name]
        error = completeness_error(runner(50), f_x, f_b)
        needed = next(
            (s for s in (4, 8, 16, 32, 64, 128, 256, 512) if completeness_error(runner(s), f_x, f_b) < 0.01), None
        )
        peer_times[name] = statistics.median(times)
        lines.append(f"| {name} | {peer_times[name] * 1000:.0f} | {error:.2e} | {needed or '> 512'} (fixed steps) |")
    adaptive = attribute(
        loaded.gradients_now, image, target, None, 4, "gauss_legendre", 64, tolerance=0.01, max_steps=1024
    )
    lines.append(
        f"| mindscope `tolerance=0.01` (from 4 steps, doubling) | - | {adaptive.relative_delta:.2e} | "
        f"{adaptive.gradient_evaluations} (ended at {adaptive.steps} steps) |"
    )
    alibi_name = next((n for n in peer_times if n.startswith("alibi")), None)
    if alibi_name:
        speedup = peer_times[alibi_name] / peer_times["mindscope (gauss_legendre)"]
        lines.append(f"\nmindscope vs alibi at 50 steps: {speedup:.2f}x faster.")

    report = "\n".join(lines) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, report)
    plot(served, forward, args.out.with_suffix(".png"), loaded.ref.label)


def write_report(path: Path, report: str) -> None:
    """Put this script's preamble and sections into `path`, keeping the sections the other
    bench scripts wrote there (write_section: each in its place, or at the end)."""
    preamble, *sections = re.split(r"^(?=## )", report, flags=re.M)
    document = path.read_text() if path.exists() else ""
    start = document.find("\n## ")
    path.write_text(preamble.rstrip("\n") + "\n\n" + (document[start + 1 :] if start >= 0 else ""))
    for section in sections:
        write_section(path, section.strip("\n"))


def budget_lines(
    measured: list[tuple[Load, float, float]], minimal: list[tuple[Load, float]], floor_run: Load
) -> list[str]:
    """What the served/in-process ratio at 32 clients could be on these cores, from CPU per request."""
    runs = [run for run, _, _ in measured]
    model_ms = statistics.mean(run.other_threads_ms for run in runs)
    loop_ms = statistics.mean(run.loop_ms for run in runs)
    loadgen_ms = statistics.mean(run.loadgen_ms for run in runs)
    in_process = statistics.median(batch_ips for _, _, batch_ips in measured)
    measured_ratio = statistics.median(run.requests_per_s / batch_ips for run, _, batch_ips in measured)
    cores = os.cpu_count() or 1

    def best(front_end_ms: float, model_ms: float = model_ms, reference: float = in_process) -> float:
        """The ratio to `reference` images/s if every core were busy and a request cost `model_ms`
        plus `front_end_ms` of CPU."""
        return cores * 1000 / (model_ms + front_end_ms) / reference

    floor_ms = floor_run.loop_ms + floor_run.loadgen_ms
    service_ms = loop_ms + loadgen_ms
    lean = [run for run, _ in minimal]
    lean_ms = statistics.mean(run.loop_ms + run.loadgen_ms for run in lean)
    lean_model_ms = statistics.mean(run.other_threads_ms for run in lean)
    lean_rps = statistics.median(run.requests_per_s for run in lean)
    lean_ratio = statistics.median(run.requests_per_s / batch_ips for run, batch_ips in minimal)
    lean_reference = statistics.median(batch_ips for _, batch_ips in minimal)
    return [
        "\n### The CPU budget at 32 clients\n",
        f"In process, the batched forward measured before these rounds ran at {in_process:.0f} images/s: "
        f"{cores * 1000 / in_process:.2f} ms of the machine's CPU per image with every core busy. "
        f"Served, each request cost the machine {model_ms:.2f} ms of CPU in the model's threads, {loop_ms:.2f} ms "
        f"on the event loop (HTTP, routing, middlewares, decode, JSON, log, metrics) and {loadgen_ms:.2f} ms in the "
        "load generator.\n",
        "The same load, with the same pairing, on bench/minimal_app.py: the service's codec, batcher, model and "
        "JSON on the same uvicorn, and nothing else (no routing, API key, limits, request id, log or metrics): "
        f"{lean_rps:.0f} requests/s against an in-process {lean_reference:.0f} images/s, "
        f"{statistics.mean(run.loop_ms for run in lean):.2f} ms on its event loop, "
        f"{lean_model_ms:.2f} ms in the model's threads and "
        f"{statistics.mean(run.loadgen_ms for run in lean):.2f} ms in the load generator per request. "
        "On bench/floor_app.py, a bare app that answers the same bytes with nothing to do: "
        f"{floor_run.requests_per_s:.0f} requests/s, {floor_run.loop_ms:.2f} ms on its event loop and "
        f"{floor_run.loadgen_ms:.2f} ms in the load generator per request.\n",
        "| if a request cost the machine | served / in-process batched, every core busy |",
        "|---|---|",
        f"| the service's model CPU alone ({model_ms:.2f} ms) | {best(0):.2f} |",
        f"| that plus the bare app's loop and load generator ({floor_ms:.2f} ms) | {best(floor_ms):.2f} |",
        f"| the minimal app's model CPU, loop and load generator ({lean_model_ms:.2f} + {lean_ms:.2f} ms) "
        f"| {best(lean_ms, lean_model_ms, lean_reference):.2f} |",
        f"| the service's model CPU, loop and load generator ({model_ms:.2f} + {service_ms:.2f} ms) "
        f"| {best(service_ms):.2f} |",
        f"| measured: the minimal app | {lean_ratio:.2f} |",
        f"| measured: this service | {measured_ratio:.2f} |",
    ]


def plot(
    served: dict[int, tuple[float, float, float]],
    forward: dict[int, tuple[float, float]],
    path: Path,
    model: str = "",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    levels = list(served)
    left.bar([str(c) for c in levels], [served[c][0] for c in levels], label="served /predict")
    best = max((32, 256), key=lambda size: forward[size][1])
    left.axhline(forward[best][1], color="tab:orange", linestyle="--", label=f"in-process bs {best}")
    left.set_xlabel("concurrent clients (keep-alive connections, one JPEG per request)")
    left.set_ylabel("images/s")
    left.set_title("throughput: served vs the model alone")
    left.legend(loc="center left")
    right.plot(levels, [served[c][1] * 1000 for c in levels], marker="o", label="p50")
    right.plot(levels, [served[c][2] * 1000 for c in levels], marker="o", label="p99")
    right.set_xlabel("concurrent clients")
    right.set_ylabel("latency per request, ms")
    right.set_title("served /predict latency")
    right.legend()
    figure.suptitle(f"mindscope POST /predict on this machine ({model}, {os.cpu_count()} CPUs, make bench)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
