"""Each explanation method, ours against PAIR saliency 0.2.1 on the same work, in one run.

    python bench/methods_bench.py [--store model_store] [--seconds 20] [--out docs/benchmarks.md]

Same model (the store's default), same image, same target, same parameters. Each side gets its
best configuration: PAIR's call_model_function runs a compiled (tf.function) gradient or forward
pass on whole batches (batch_size = every row of a path), ours runs through the served model's
batched gradient path as a request does. Prints the table and writes it into the "Explanation
methods against PAIR saliency" section of docs/benchmarks.md, with IG's time at equal accuracy
and SmoothGrad requests/s over HTTP at 1 and 8 clients (their rows share batches).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import loadgen
import numpy as np
import saliency.core as saliency
import tensorflow as tf
from mindscope.engine.explain.blur_ig import blur_integrated_gradients
from mindscope.engine.explain.explanation import Smoothing
from mindscope.engine.explain.grad_cam import grad_cam
from mindscope.engine.explain.gradients import vanilla_gradients
from mindscope.engine.explain.guided_ig import guided_integrated_gradients
from mindscope.engine.explain.integrated_gradients import attribute
from mindscope.engine.explain.occlusion import occlusion
from mindscope.engine.explain.xrai import xrai
from mindscope.engine.loaded_model import load_model
from mindscope.engine.store import ModelStore
from reliability import IMAGE, REPO, start_server
from report import write_section  # bench/ is the script's folder

SECTION = "## Explanation methods against PAIR saliency"
KEY = "target"


def paired_ms(ours: Callable[[], object], theirs: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median ms of each, timed in alternation (who goes first alternates too), so that the
    machine's drift and noise fall on both sides alike: at least `repeats` pairs and two seconds
    of calls, at most 200 pairs."""
    ours(), theirs()  # the first calls trace and allocate
    times: tuple[list[float], list[float]] = ([], [])
    spent, pairs = 0.0, 0
    while pairs < repeats or (spent < 2.0 and pairs < 200):
        order = ((0, ours), (1, theirs)) if pairs % 2 == 0 else ((1, theirs), (0, ours))
        for side, run in order:
            start = time.perf_counter()
            run()
            took = time.perf_counter() - start
            times[side].append(took)
            spent += took
        pairs += 1
    return 1000 * statistics.median(times[0]), 1000 * statistics.median(times[1])


def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()  # the first call traces and allocates
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def pair_model(loaded, layer: str) -> Callable[..., dict[str, np.ndarray]]:
    """PAIR's call_model_function over compiled TensorFlow functions of the same Keras model."""
    model = loaded.model
    shape = tf.TensorSpec([None, *loaded.input_shape], tf.float32)
    split = tf.keras.Model(model.input, [model.get_layer(layer).output, model.output])

    @tf.function(input_signature=[shape, tf.TensorSpec([], tf.int32)])
    def gradients(images, target):
        with tf.GradientTape() as tape:
            tape.watch(images)
            output = model(images, training=False)[:, target]
        return tape.gradient(output, images)

    @tf.function(input_signature=[shape, tf.TensorSpec([], tf.int32)])
    def layer_gradients(images, target):
        with tf.GradientTape() as tape:
            conv, probabilities = split(images, training=False)
            output = probabilities[:, target]
        return conv, tape.gradient(output, conv)

    @tf.function(input_signature=[shape])
    def forward(images):
        return model(images, training=False)

    def call(batch, call_model_args=None, expected_keys=None):
        images, target = tf.convert_to_tensor(np.asarray(batch, np.float32)), call_model_args[KEY]
        if saliency.base.INPUT_OUTPUT_GRADIENTS in expected_keys:
            return {saliency.base.INPUT_OUTPUT_GRADIENTS: gradients(images, target).numpy()}
        if saliency.base.OUTPUT_LAYER_VALUES in expected_keys:
            return {saliency.base.OUTPUT_LAYER_VALUES: forward(images).numpy()[:, target]}
        conv, grads = layer_gradients(images, target)
        return {
            saliency.base.CONVOLUTION_LAYER_VALUES: conv.numpy(),
            saliency.base.CONVOLUTION_OUTPUT_GRADIENTS: grads.numpy(),
        }

    return call


class NumpyTwoQuantile:
    """saliency 0.2.1's guided_ig calls np.quantile(..., interpolation=), gone in NumPy 2."""

    def __getattr__(self, name: str) -> object:
        return getattr(np, name)

    @staticmethod
    def quantile(values, q, interpolation="linear", **kwargs):
        return np.quantile(values, q, method=interpolation, **kwargs)


def rows(
    loaded, image: np.ndarray, target: int
) -> list[tuple[str, str, int, Callable[[], object], Callable[[], object]]]:
    """(method, work, model rows, ours, PAIR's) for each method."""
    import saliency.core.guided_ig as pair_guided_ig
    from saliency.core.xrai import XRAIParameters

    pair_guided_ig.np = NumpyTwoQuantile()  # type: ignore[assignment]
    call, args = pair_model(loaded, loaded.layers[-1].name), {KEY: target}
    gradients, layer = loaded.gradients, loaded.layers[-1].name
    layer_gradients = loaded.layer_gradients(layer)
    zeros = np.zeros_like(image)
    return [
        (
            "vanilla gradients",
            "1 gradient",
            1,
            lambda: vanilla_gradients(gradients, image, target),
            lambda: saliency.GradientSaliency().GetMask(image, call, args),
        ),
        (
            "SmoothGrad",
            "25 samples",
            25,
            lambda: vanilla_gradients(gradients, image, target, Smoothing(samples=25, kind="square")),
            lambda: saliency.GradientSaliency().GetSmoothedMask(image, call, args, nsamples=25),
        ),
        (
            "integrated gradients",
            "50 steps",
            50,
            lambda: attribute(gradients, image, target, steps=50),
            lambda: saliency.IntegratedGradients().GetMask(
                image, call, args, x_steps=50, x_baseline=zeros, batch_size=50
            ),
        ),
        (
            "Blur IG",
            "100 steps, max_sigma 50",
            100,
            lambda: blur_integrated_gradients(gradients, image, target, steps=100),
            lambda: saliency.BlurIG().GetMask(image, call, args, steps=100, batch_size=100),
        ),
        (
            "Guided IG",
            "200 steps",
            200,
            lambda: guided_integrated_gradients(gradients, image, target, steps=200),
            lambda: saliency.GuidedIG().GetMask(image, call, args, x_steps=200, x_baseline=zeros),
        ),
        (
            "Grad-CAM",
            f"layer {layer}",
            1,
            lambda: grad_cam(layer_gradients, layer, image, target),
            lambda: saliency.GradCam().GetMask(image, call, args),
        ),
        (
            "XRAI",
            "IG from 2 baselines (ours 32 Gauss-Legendre points, PAIR 100 uniform: the same regions)",
            2 * 34,  # ours
            lambda: xrai(gradients, image, target, steps=32),
            lambda: saliency.XRAI().GetMask(
                image, call, args, batch_size=100, extra_parameters=XRAIParameters(steps=100)
            ),
        ),
        (
            "occlusion",
            "4x4 patch, stride 1",
            29 * 29 + 1,
            lambda: occlusion(loaded.predict, image, target, size=4),
            lambda: saliency.Occlusion().GetMask(image, call, args, size=4),
        ),
    ]


def equal_accuracy(loaded, image: np.ndarray, target: int) -> list[str]:
    """IG: the fewest steps (doubling from 2) for a completeness error under 1%, ours and PAIR's,
    and the time of that call."""
    call, args, zeros = pair_model(loaded, loaded.layers[-1].name), {KEY: target}, np.zeros_like(image)
    ends = loaded.predict(np.stack([image, zeros]))[:, target].astype(np.float64)

    def error(attributions: np.ndarray) -> float:
        return abs(float(attributions.sum(dtype=np.float64)) - (ends[0] - ends[1])) / abs(ends[0] - ends[1])

    runs = {
        "mindscope (gauss_legendre)": lambda steps: (
            attribute(loaded.gradients, image, target, steps=steps).attributions
        ),
        "PAIR saliency (uniform steps)": lambda steps: saliency.IntegratedGradients().GetMask(
            image, call, args, x_steps=steps, x_baseline=zeros, batch_size=steps
        ),
    }
    lines = []
    for name, run in runs.items():
        steps = 2
        while error(run(steps)) >= 0.01 and steps < 1024:
            steps *= 2
        ms = median_ms(lambda s=steps, r=run: r(s), 10)
        lines.append(f"| {name} | {steps} | {error(run(steps)):.1e} | {ms:.0f} |")
    return lines


SHAP_SECTION = "## SHAP against the shap library"


def shap_rows(loaded, image: np.ndarray, target: int, repeats: int) -> list[str]:
    """Owen values, ours against shap's PartitionExplainer with an image masker: the same model
    (shap's model function is a compiled forward pass on whole batches, its best configuration; ours
    goes through the served model's forward batcher, as a request does), image, masker, max_evals and
    batch_size, timed in alternation. Rows are what each side's model function was given."""
    import shap
    from mindscope.engine.explain.partition_shap import box_blur, owen_values

    keras_model = loaded.model
    forward = tf.function(lambda x: keras_model(x, training=False), reduce_retracing=True)
    counted: list[int] = []

    def theirs_model(x: np.ndarray) -> np.ndarray:
        counted.append(len(x))
        return forward(tf.constant(np.asarray(x, np.float32))).numpy()

    def ours_model(x: np.ndarray) -> np.ndarray:
        counted.append(len(x))
        return loaded.predict(x)

    lines = []
    for masker, hidden, evals, batch in (
        (0.5, np.full_like(image, 0.5), 500, 64),
        ("blur(8,8)", box_blur(image, 8), 500, 64),
        ("blur(8,8)", box_blur(image, 8), 2000, 64),
    ):
        explainer = shap.PartitionExplainer(theirs_model, shap.maskers.Image(masker, image.shape))

        def ours(hidden=hidden, evals=evals, batch=batch):
            return owen_values(ours_model, image, hidden, target, evals, batch)

        def theirs(explainer=explainer, evals=evals, batch=batch):
            return explainer(image[None], max_evals=evals, batch_size=batch, outputs=[target], silent=True)

        counted.clear()
        ours()
        our_rows = sum(counted)
        counted.clear()
        theirs()
        their_rows = sum(counted)
        our_ms, their_ms = paired_ms(ours, theirs, repeats)
        line = (
            f"| {masker} | {evals} | {batch} | {our_rows} | {their_rows} | {our_ms:.1f} | {their_ms:.1f} "
            f"| {their_ms / our_ms:.2f}x |"
        )
        print(line, flush=True)
        lines.append(line)
    return lines


def smoothgrad_served(store: Path, image: bytes, seconds: float) -> list[str]:
    server = start_server(store, Path("/tmp") / "mindscope-methods-bench.log")
    url = f"{server.base}/explain/vanilla-gradients?samples=25&smooth=square"
    lines = []
    try:
        for clients in (1, 8):
            asyncio.run(loadgen.run(url, image, "image/jpeg", clients, clients * 2))  # warm
            total = max(clients * 4, int(seconds * 10))
            result = asyncio.run(loadgen.run(url, image, "image/jpeg", clients, total))
            if result["failures"]:
                raise RuntimeError(f"SmoothGrad at {clients} clients failed: {result['failures']}")
            latencies = sorted(result["latencies_s"])  # type: ignore[arg-type]
            lines.append(
                f"| {clients} | {result['requests_per_s']:.1f} | {1000 * latencies[len(latencies) // 2]:.0f} |"
            )
    finally:
        server.stop()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=REPO / "model_store")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=20, help="rough length of each SmoothGrad load")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--only-shap", action="store_true", help="only the SHAP section")
    args = parser.parse_args()
    store = ModelStore(args.store)
    ref = store.resolve()
    loaded = load_model(store, ref)
    image_bytes = IMAGE.read_bytes()
    from PIL import Image

    image = np.asarray(Image.open(IMAGE).convert("RGB"), np.float32) / 255.0
    target = int(np.argmax(loaded.predict(image[None])[0]))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    shap_table = shap_rows(loaded, image, target, args.repeats)
    write_section(
        args.out,
        "\n".join(
            [
                SHAP_SECTION,
                "",
                f"`python bench/methods_bench.py` ({started}), model {ref.label}, one CIFAR-10 image, its predicted",
                "class: Owen values over shap's image partition, ours (`engine/explain/partition_shap.py`,",
                "through the served model's forward batcher) and shap's `PartitionExplainer` with",
                "`shap.maskers.Image` (its model function a compiled forward pass on whole batches), the same",
                "masker, max_evals and batch_size; calls alternate, medians of each side. Both give the same",
                "values (tests/engine/test_partition_shap.py); rows are the images each side's model was given.",
                "",
                "| masker | max_evals | batch_size | mindscope rows | shap rows | mindscope ms | shap ms "
                "| mindscope faster by |",
                "|---|---|---|---|---|---|---|---|",
                *shap_table,
            ]
        ),
    )
    if args.only_shap:
        loaded.close()
        return
    table = []
    for method, work, count, ours, theirs in rows(loaded, image, target):
        our_ms, their_ms = paired_ms(ours, theirs, args.repeats)
        line = f"| {method} | {work} | {count} | {our_ms:.1f} | {their_ms:.1f} | {their_ms / our_ms:.2f}x |"
        print(line, flush=True)
        table.append(line)
    accuracy = equal_accuracy(loaded, image, target)
    loaded.close()
    served = smoothgrad_served(args.store, image_bytes, args.seconds)
    text = "\n".join(
        [
            SECTION,
            "",
            f"`python bench/methods_bench.py` ({started}), model {ref.label}, one CIFAR-10 image, its predicted",
            f"class; in process, after one warm-up call each, ours and PAIR's calls alternate (at least {args.repeats}",
            "pairs and 2 s of calls, at most 200 pairs) and the table gives each side's median. PAIR saliency's",
            "call_model_function runs compiled (tf.function) gradient, layer-gradient and forward functions of",
            "the same Keras model on whole batches (batch_size = every row of a path), its best configuration;",
            "ours runs through the served model's batched gradient path, as a request does. Model rows are",
            "the same on both sides but for XRAI, where each integrates with its own rule (ours 2 x (32 + 2)",
            "Gauss-Legendre rows, PAIR 2 x 100 uniform ones) and both give the same regions",
            "(tests/engine/test_explain_vs_saliency.py).",
            "",
            "| method | work | model rows | mindscope ms | PAIR saliency ms | mindscope faster by |",
            "|---|---|---|---|---|---|",
            *table,
            "",
            "Integrated gradients at equal accuracy: the fewest steps (doubling from 2) for a completeness",
            "error under 1%, and the time of that call.",
            "",
            "| implementation | steps | completeness error | ms |",
            "|---|---|---|---|",
            *accuracy,
            "",
            "SmoothGrad over HTTP (`POST /explain/vanilla-gradients?samples=25&smooth=square`, one JPEG,",
            "bench/loadgen.py keep-alive clients): concurrent requests' noisy rows share gradient batches.",
            "",
            "| clients | requests/s | p50 ms |",
            "|---|---|---|",
            *served,
        ]
    )
    print(text)
    write_section(args.out, text)


if __name__ == "__main__":
    main()
