"""The registry: which models are in memory, which one serves by default, and readiness."""

from __future__ import annotations

import logging
import threading

from mindscope.engine.batching import BatchingConfig
from mindscope.engine.loaded_model import LoadedModel, load_model
from mindscope.engine.store import ModelRef, ModelStore
from mindscope.errors import MindscopeError, ModelIntegrityError

logger = logging.getLogger("mindscope")


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
    ) -> None:
        self.store = store
        self.forward_batching = forward_batching
        self.gradient_batching = gradient_batching
        self._loaded: dict[ModelRef, LoadedModel] = {}
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
        if ref in self._loaded:
            return self._loaded[ref]
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

    def _load(self, ref: ModelRef) -> LoadedModel:
        loaded = self._loaded.get(ref)
        if loaded is not None:
            return loaded
        with self._lock:
            if ref not in self._loaded:
                self._loaded[ref] = self._load_and_warm(ref)
            return self._loaded[ref]

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
        for loaded in self._loaded.values():
            loaded.close()

    def loaded(self) -> list[ModelRef]:
        return list(self._loaded)

    def loaded_models(self) -> list[LoadedModel]:
        return list(self._loaded.values())
