"""Jobs on Ray, for work past one machine: with MINDSCOPE_RAY_ADDRESS set, a job's items go through
Ray Data's `map_batches` over actors that each load the model once (`ItemWorker`), and come back to
the service as they finish, which writes them exactly as the embedded runner does (the same maps,
answers and rows, committed item by item). The job's state stays in the service's database, so
progress, events, results, cancellation and resume are the same; Ray only computes.

What travels: each item's file bytes (or the array of a submitted image) go to the workers, and
each answer's map and record come back. The workers read the model store at the service's path
(MINDSCOPE_MODEL_STORE_DIR must be the same on every node: a shared or copied folder).
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mindscope.dataplane.decoding import DecodeLimits
from mindscope.engine.explain.method import Caps
from mindscope.engine.registry import ModelRegistry
from mindscope.engine.store import ModelStore
from mindscope.engine.work import RequestWork, request_work
from mindscope.errors import MindscopeError
from mindscope.jobs.items import ComputedItem, decode_item, explain_item, predict_rows
from mindscope.jobs.spec import JobRequest, parse_work


class ItemWorker:
    """A Ray actor: the job's model, loaded once; a batch of items in, their answers out."""

    def __init__(self, store_dir: str, spec: dict[str, Any], caps: dict[str, int], max_pixels: int) -> None:
        self.model = ModelRegistry(ModelStore(Path(store_dir))).get(spec["model"], spec["version"])
        fields = {k: v for k, v in spec.items() if k in ("kind", "model", "version", "method", "parameters")}
        self.work = parse_work(JobRequest.model_validate(fields), self.model, Caps(**caps))
        self.limits = DecodeLimits(self.model.input_shape, max_pixels)

    def _image(self, source: str, data: bytes, kind: str, info: str) -> tuple[np.ndarray, dict[str, Any]]:
        """The item's pixels and what was received (a file is decoded here, as the service would)."""
        if kind == "npy":
            import io

            return np.asarray(np.load(io.BytesIO(data), allow_pickle=False), np.float32), json.loads(info)
        decoded = decode_item(data, self.limits, source)
        return decoded.pixels, decoded.info.model_dump()

    def __call__(self, batch: Any) -> Any:
        import pandas as pd

        out: list[dict[str, Any]] = []
        images: list[tuple[int, np.ndarray, dict[str, Any]]] = []
        columns = (batch["n"], batch["source"], batch["data"], batch["kind"], batch["info"])
        for n, source, data, kind, info in zip(*columns, strict=True):
            began = time.perf_counter()
            try:
                images.append((int(n), *self._image(source, data, kind, info)))
            except MindscopeError as exc:
                out.append(_row(int(n), ComputedItem(None, exc.message, time.perf_counter() - began)))
        with request_work(RequestWork(background=True)):
            if self.work.kind == "predict" and images:
                computed = predict_rows(self.model, [pixels for _, pixels, _ in images], [i for _, _, i in images])
                out += [_row(n, item) for (n, _, _), item in zip(images, computed, strict=True)]
            else:
                for n, pixels, info in images:
                    out.append(_row(n, explain_item(self.model, self.work, pixels, info)))
        return pd.DataFrame(out)


def _row(n: int, item: ComputedItem) -> dict[str, Any]:
    return {
        "n": n,
        "result": None if item.result is None else json.dumps(item.result),
        "error": item.error,
        "seconds": item.seconds,
        "map": item.map_bytes,
        "answer": None if item.explained is None else pickle.dumps(item.explained, protocol=pickle.HIGHEST_PROTOCOL),
    }


def run_on_ray(
    address: str,
    items: Sequence[dict[str, Any]],
    worker_args: dict[str, Any],
    actors: int,
    cpus_per_actor: float,
    cancelled: Callable[[], bool],
) -> Iterator[tuple[int, ComputedItem]]:
    """Each item's answer as the actors finish them (in Ray's order, not the items')."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    dataset = ray.data.from_items(list(items))
    answered = dataset.map_batches(
        ItemWorker,
        fn_constructor_kwargs=worker_args,
        batch_size=8,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
    )
    for batch in answered.iter_batches(batch_size=1, batch_format="pandas"):
        for row in batch.to_dict("records"):  # type: ignore[union-attr]  # a pandas batch
            explained = None if row["answer"] is None else pickle.loads(row["answer"])  # noqa: S301 (our own)
            result = None if row["result"] is None else json.loads(row["result"])
            yield int(row["n"]), ComputedItem(result, row["error"], float(row["seconds"]), row["map"], explained)
        if cancelled():
            return
