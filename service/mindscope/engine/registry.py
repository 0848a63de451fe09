"""The registry: which models are in memory, which one serves by default, and readiness.

A store may hold more models than fit in memory. A model is loaded on its first request (or at
start: the default, and those `preload` names), warmed up, and kept while it is among the most
recently used; past `max_models` resident, or past `memory_bytes` of their weights, the least
recently used is unloaded (ModelMesh's and Triton's explicit model control are the anchors). The
serving default is never unloaded, so readiness holds. A request for a model being loaded waits
for that one load, within its deadline; loads run one at a time on a thread of their own, so a
request that gives up does not cancel a load the next one will use.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from mindscope.engine.batching import BatchingConfig
from mindscope.engine.loaded_model import LoadedModel, load_model
from mindscope.engine.store import ModelRef, ModelStore
from mindscope.engine.work import current_work
from mindscope.errors import MindscopeError, ModelIntegrityError, ModelPinned

logger = logging.getLogger("mindscope")


@dataclass(frozen=True)
class Residency:
    """How many models stay in memory: at most `max_models`, and at most `memory_bytes` of their
    weights (0: no limit); the serving default always stays."""

    max_models: int = 0
    memory_bytes: int = 0


@dataclass
class ResidencyStats:
    loads: int = 0
    unloads: int = 0
    load_seconds: float = 0.0  # summed over loads, warm-up included
    failed_loads: int = 0


def _retire(models: list[LoadedModel]) -> None:
    """Close unloaded models off the caller's thread: each lane finishes the calls queued on it
    (a request still holding the model runs later calls in its own thread), then the memory is
    collected and handed back to the system."""
    if not models:
        return

    def close() -> None:
        for model in models:
            model.close(wait=True)
        models.clear()  # the last references the registry held
        release_memory()

    threading.Thread(target=close, name="model-unloader", daemon=True).start()


def release_memory() -> None:
    """Collect reference cycles, and hand the freed heap back to the system (glibc keeps freed
    memory for reuse otherwise, so the process's resident set would not fall)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator decides
        pass


def resident_bytes(loaded: LoadedModel) -> int:
    """The bytes of a loaded model's weights: served, learned and from before training (what
    grows with the model; TensorFlow's compiled graphs and buffers come on top)."""
    total = 0
    if loaded.saved_model is not None:
        total += sum(
            int(np.prod(v.shape)) * v.dtype.size for pairs in loaded.saved_model.variables.values() for _, v in pairs
        )
    models = [loaded.model] + ([loaded.learned[0]] if loaded.learned is not None else [])
    for model in models:
        total += sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)
    for stored in (loaded.initial_weights, loaded.learned[1] if loaded.learned is not None else None):
        if stored is not None:
            total += sum(array.nbytes for arrays in stored.values() for array in arrays)
    return total


class ModelRegistry:
    """The models held in memory, loaded once each, looked up by exact name and version.

    Requests that name no version get the *serving default*: the store's default entry as of the
    last successful `reload_default`. A newer version dropped into the store is loaded and warmed
    beside it first and swapped in only when that worked, so a corrupt new version never replaces
    a working one.

    The registry is the one owner of readiness: `ready` once a default serves and until shutdown
    begins; `load_error` says why nothing serves when the first load failed.
    """

    def __init__(
        self,
        store: ModelStore,
        forward_batching: BatchingConfig | None = None,
        gradient_batching: BatchingConfig | None = None,
        residency: Residency | None = None,
    ) -> None:
        self.store = store
        self.forward_batching = forward_batching
        self.gradient_batching = gradient_batching
        self.residency = residency or Residency()
        self.stats = ResidencyStats()
        self._loaded: OrderedDict[ModelRef, LoadedModel] = OrderedDict()  # least recently used first
        self._sizes: dict[ModelRef, int] = {}
        self._loading: dict[ModelRef, Future[LoadedModel]] = {}
        self._held: dict[ModelRef, int] = {}  # models a job runs on: never unloaded meanwhile
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self._failed: dict[ModelRef, str] = {}
        self._incomplete: dict[ModelRef, tuple[tuple[tuple[str, int, int], ...], ModelIntegrityError]] = {}
        self._default: LoadedModel | None = None
        self._load_error: str | None = None
        self._stopping = False
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """A default model is loaded, warmed up and serving, and shutdown has not begun."""
        return self._default is not None and not self._stopping

    @property
    def load_error(self) -> str | None:
        """Why no default serves, when its load failed; None while loading or serving."""
        return None if self._default is not None else self._load_error

    def stop_serving(self) -> None:
        """Shutdown has begun: readiness ends, requests in flight finish."""
        self._stopping = True

    def get(self, name: str | None = None, version: int | None = None) -> LoadedModel:
        """The model, loading it first if need be (disk and compilation: seconds, off the event loop).

        A model named without a version is its newest *complete* version in the store, looked up on
        every request (no reload needed); a version whose files do not all match their digests yet
        (being copied in) is passed over for the one before, and tried again once its files change.
        The serving default changes only through `reload_default`."""
        serving = self.serving_for(name, version)
        if serving is not None:
            return serving
        newest = self.store.resolve(name, version)
        if version is not None or name is None:
            return self._load(newest)
        first_error: ModelIntegrityError | None = None
        for candidate in reversed(self.store.versions(newest.name)):
            ref = ModelRef(newest.name, candidate)
            try:
                return self._load_unless_incomplete(ref)
            except ModelIntegrityError as exc:
                first_error = first_error or exc
        assert first_error is not None  # resolve() found at least one version
        raise first_error

    def _load_unless_incomplete(self, ref: ModelRef) -> LoadedModel:
        """`_load`, remembering a failure until the entry's files change (no digest per request)."""
        loaded = self._resident(ref)
        if loaded is not None:
            return loaded
        files = self.store.file_stamp(ref)
        failed = self._incomplete.get(ref)
        if failed is not None and failed[0] == files:
            raise failed[1]
        try:
            return self._load(ref)
        except ModelIntegrityError as exc:
            if failed is None:
                logger.warning("passing over %s until its files change: %s", ref.label, exc.message)
            self._incomplete[ref] = (files, exc)
            raise

    def serving_for(self, name: str | None = None, version: int | None = None) -> LoadedModel | None:
        """The serving default when the request asks for it (no name, or its name and no version);
        no disk access, so it may run on the event loop."""
        serving = self._default if not self._stopping else None
        if serving is not None and version is None and name in (None, serving.ref.name):
            return serving
        return None

    def _resident(self, ref: ModelRef) -> LoadedModel | None:
        """The model if it is in memory, marked as the most recently used."""
        loaded = self._loaded.get(ref)
        if loaded is not None:
            with self._lock:
                if ref in self._loaded:
                    self._loaded.move_to_end(ref)
        return loaded

    def _load(self, ref: ModelRef) -> LoadedModel:
        """The model, from memory, or from the one load of it in progress or started now; the wait
        is bounded by the request's deadline, and giving up leaves the load running."""
        loaded = self._resident(ref)
        if loaded is not None:
            return loaded
        with self._lock:
            loaded = self._loaded.get(ref)
            if loaded is not None:
                return loaded
            shared = self._loading.get(ref)
            if shared is None:
                shared = self._loading[ref] = self._loader.submit(self._load_resident, ref)
        mine: Future[LoadedModel] = Future()  # a waiter's own: its deadline cancels it, not the load
        shared.add_done_callback(lambda done: _pass_on(done, mine))
        return current_work().wait(mine)

    def _load_resident(self, ref: ModelRef) -> LoadedModel:
        """On the loader thread: load and warm `ref`, then make room for it."""
        try:
            started = time.perf_counter()
            try:
                loaded = self._load_and_warm(ref)
            except BaseException:
                self.stats.failed_loads += 1
                raise
            took = time.perf_counter() - started
            size = resident_bytes(loaded)
            with self._lock:
                self._loaded[ref] = loaded
                self._sizes[ref] = size
                self.stats.loads += 1
                self.stats.load_seconds += took
                evicted = self._evictions(ref)
            logger.info("loaded %s in %.2f s (%.1f MB of weights)", ref.label, took, size / 1e6)
            for old in evicted:
                logger.info("unloaded %s (least recently used)", old.ref.label)
            _retire(evicted)
            return loaded
        finally:
            with self._lock:
                self._loading.pop(ref, None)

    def _evictions(self, keep: ModelRef) -> list[LoadedModel]:
        """Under the lock: take the least recently used models out until the limits hold, never
        the serving default or `keep` (a single model over the budget is still served)."""
        limits, evicted = self.residency, []

        def over() -> bool:
            count = limits.max_models and len(self._loaded) > limits.max_models
            memory = limits.memory_bytes and sum(self._sizes.values()) > limits.memory_bytes
            return bool(count or memory)

        pinned = {keep, *self._held} | ({self._default.ref} if self._default is not None else set())
        for ref in [r for r in self._loaded if r not in pinned]:
            if not over():
                break
            evicted.append(self._loaded.pop(ref))
            self._sizes.pop(ref, None)
            self.stats.unloads += 1
        if over():
            logger.warning(
                "%d models (%.1f MB of weights) stay over the limits: the rest are the serving default, the newest "
                "and those jobs run on",
                len(self._loaded),
                sum(self._sizes.values()) / 1e6,
            )
        return evicted

    @contextlib.contextmanager
    def held(self, name: str | None = None, version: int | None = None) -> Iterator[LoadedModel]:
        """The model, kept in memory until the block ends (a job runs on it)."""
        while True:
            model = self.get(name, version)
            with self._lock:
                if self._loaded.get(model.ref) is model:  # not unloaded since `get` returned it
                    self._held[model.ref] = self._held.get(model.ref, 0) + 1
                    break
        try:
            yield model
        finally:
            with self._lock:
                self._held[model.ref] -= 1
                if not self._held[model.ref]:
                    del self._held[model.ref]

    def unload(self, name: str) -> list[ModelRef]:
        """Take every resident version of `name` out of memory (Triton's explicit unload); the
        serving default is refused. Returns the versions unloaded."""
        self.store.resolve(name)  # 404 for a model the store does not hold
        serving = self._default.ref if self._default is not None else None
        if serving is not None and serving.name == name:
            raise ModelPinned(
                f"{serving.label} is the serving default and stays loaded (readiness depends on it); "
                "set MINDSCOPE_DEFAULT_MODEL to another model to unload this one",
                model=serving.label,
            )
        with self._lock:
            if any(ref.name == name for ref in self._held):
                raise ModelPinned(f"a job is running on {name}; it stays loaded until the job ends", model=name)
            refs = [ref for ref in self._loaded if ref.name == name]
            taken = [self._loaded.pop(ref) for ref in refs]
            for ref in refs:
                self._sizes.pop(ref, None)
            self.stats.unloads += len(taken)
        for old in taken:
            logger.info("unloaded %s (asked for)", old.ref.label)
        _retire(taken)
        return refs

    def preload(self, names: list[str]) -> None:
        """Load the newest complete version of each of `names` now (at start); a failure is logged."""
        for name in names:
            try:
                self.get(name)
            except MindscopeError as exc:
                logger.error("could not preload %s: %s", name, exc.message)

    @property
    def resident_bytes(self) -> int:
        return sum(self._sizes.values())

    def _load_and_warm(self, ref: ModelRef) -> LoadedModel:
        """A loaded, warmed-up model; any failure is a ModelIntegrityError saying what went wrong
        (an unexpected one would otherwise leave readiness at "loading" for ever)."""
        loaded = None
        try:
            loaded = load_model(self.store, ref, self.forward_batching, self.gradient_batching)
            loaded.warm_up()
            return loaded
        except MindscopeError:
            raise
        except Exception as exc:  # a model file Keras or TensorFlow cannot build or run
            logger.exception("loading %s failed", ref.label)
            if loaded is not None:
                loaded.close()
            raise ModelIntegrityError(f"{ref.label} cannot be served: {type(exc).__name__}: {exc}") from exc

    def reload_default(self) -> tuple[ModelRef, bool]:
        """Load the store's current default if it is new and swap it in: (serving ref, changed).

        Raises the load's MindscopeError when the new entry fails; the previous default keeps
        serving and the failed entry is not retried.
        """
        ref = self.store.resolve()
        serving = self._default
        if serving is not None and (ref == serving.ref or ref in self._failed):
            return serving.ref, False
        try:
            candidate = self._load(ref)
        except MindscopeError as exc:
            self._failed[ref] = exc.message
            self._load_error = exc.message
            keeping = "nothing serves yet" if serving is None else f"{serving.ref.label} keeps serving"
            logger.error("refused %s: %s (%s)", ref.label, exc.message, keeping)
            raise
        self._default = candidate
        return ref, True

    @property
    def serving(self) -> ModelRef | None:
        return None if self._default is None else self._default.ref

    def close(self) -> None:
        self._loader.shutdown(wait=True)
        for loaded in list(self._loaded.values()):
            loaded.close()

    def loaded(self) -> list[ModelRef]:
        return list(self._loaded)

    def loaded_models(self) -> list[LoadedModel]:
        return list(self._loaded.values())


def _pass_on(done: Future[LoadedModel], waiter: Future[LoadedModel]) -> None:
    """The shared load's outcome to one waiter that is still waiting."""
    if done.cancelled():  # the loader shut down
        waiter.cancel()
        return
    try:
        error = done.exception()
        if error is None:
            waiter.set_result(done.result())
        else:
            waiter.set_exception(error)
    except InvalidStateError:  # the waiter gave up (deadline or cancel) first
        pass
