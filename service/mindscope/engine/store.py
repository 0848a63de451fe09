"""The model store: `<root>/<name>/<integer version>/` holding one trained model and what explains it.

An entry holds `model.keras` (serving form, no optimizer state), `initial.weights.h5` (the same
network before its first training step), `history.json` and `metadata.json`, which lists the
SHA-256 of every other file. A model trained with BatchNorm also keeps the network as the
optimizer trained it, BatchNorm unfolded (`learned.keras`, and `learned-initial.weights.h5` from
before its first step), for the weight histograms: the served kernels have BatchNorm folded in.
`metadata.json` is written last, so a directory without it is not an entry; loading refuses any
file whose digest does not match.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from mindscope.engine.layer_paths import find_layer, weighted_layer_names
from mindscope.engine.saved_model import SAVED_MODEL_DIR, SAVED_MODEL_FILE, load_saved_model
from mindscope.errors import ModelIntegrityError, ModelNotFound

MODEL_FILE = "model.keras"
INITIAL_WEIGHTS_FILE = "initial.weights.h5"
LEARNED_MODEL_FILE = "learned.keras"
LEARNED_INITIAL_FILE = "learned-initial.weights.h5"
HISTORY_FILE = "history.json"
METADATA_FILE = "metadata.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoreEntryFiles:
    serving_model: keras.Model
    initial_model: keras.Model | None  # None: an imported model whose weights before training are unknown
    history: list[dict[str, float]]
    # The network as trained, when serving changed its form (BatchNorm folded into the kernels):
    # after training, and with the weights it started from.
    learned_model: keras.Model | None = None
    learned_initial_model: keras.Model | None = None


def write_store_entry(out_dir: Path, files: StoreEntryFiles, metadata: dict[str, Any]) -> Path:
    """Write a complete entry to `out_dir` (which must not exist yet) atomically; return it."""

    def write(staging: Path) -> list[str]:
        files.serving_model.save(staging / MODEL_FILE)
        written = [MODEL_FILE, HISTORY_FILE]
        if files.initial_model is not None:
            files.initial_model.save_weights(staging / INITIAL_WEIGHTS_FILE)
            written.append(INITIAL_WEIGHTS_FILE)
        if files.learned_model is not None:
            files.learned_model.save(staging / LEARNED_MODEL_FILE)
            written.append(LEARNED_MODEL_FILE)
        if files.learned_initial_model is not None:
            files.learned_initial_model.save_weights(staging / LEARNED_INITIAL_FILE)
            written.append(LEARNED_INITIAL_FILE)
        (staging / HISTORY_FILE).write_text(json.dumps(files.history, indent=2) + "\n")
        return written

    return _write_entry(out_dir, write, metadata)


def write_saved_model_entry(out_dir: Path, saved_model: Path, metadata: dict[str, Any]) -> Path:
    """Write an entry holding a copy of the SavedModel directory `saved_model` (every file of it
    digested in metadata.json, as a Keras entry's files are) atomically; return it."""

    def write(staging: Path) -> list[str]:
        shutil.copytree(saved_model, staging / SAVED_MODEL_DIR, symlinks=False)
        (staging / HISTORY_FILE).write_text("[]\n")
        copied = sorted(p for p in (staging / SAVED_MODEL_DIR).rglob("*") if p.is_file())
        return [str(p.relative_to(staging)) for p in copied] + [HISTORY_FILE]

    return _write_entry(out_dir, write, {**metadata, "format": "saved_model"})


def _write_entry(out_dir: Path, write: Callable[[Path], list[str]], metadata: dict[str, Any]) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new version number")
    if not out_dir.name.isdigit():
        raise ValueError(f"the last part of {out_dir} must be an integer version, e.g. .../cifar10/1")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    staging.chmod(0o755)
    try:
        written = write(staging)
        full = {
            "name": out_dir.parent.name,
            "version": int(out_dir.name),
            **metadata,
            "framework": _framework(),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "files": {
                name: {"sha256": sha256_file(staging / name), "bytes": (staging / name).stat().st_size}
                for name in written
            },
        }
        (staging / METADATA_FILE).write_text(json.dumps(full, indent=2) + "\n")
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _framework() -> dict[str, str]:
    """Keras's version and its backend's (tensorflow, jax or torch): the format is the same."""
    backend = keras.backend.backend()
    module = importlib.import_module(backend)
    return {"keras": keras.__version__, "backend": backend, backend: str(module.__version__)}


def parse_version(version: str | None) -> int | None:
    """A model version as every protocol spells it (a path segment, a gRPC field): None when empty,
    else a positive integer, or 404 saying so."""
    if version is None or version == "":
        return None
    if not version.isdigit() or int(version) < 1:
        raise ModelNotFound(f"model versions are positive integers; got {version!r}")
    return int(version)


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


class ModelStore:
    """Read access to a store directory; names and versions are matched exactly, never as paths."""

    def __init__(self, root: Path, default_name: str | None = None) -> None:
        self.root = Path(root)
        self.default_name = default_name

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _NAME.match(p.name) and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        if not _NAME.match(name):
            return []
        model_dir = self.root / name
        if not model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and (p / METADATA_FILE).is_file())

    def resolve(self, name: str | None = None, version: int | None = None) -> ModelRef:
        """The entry a request means: the default name when none, the highest version when none."""
        names = self.names()
        if name is None:
            if self.default_name is not None:
                name = self.default_name
            elif len(names) == 1:
                name = names[0]
            elif not names:
                raise ModelNotFound(f"the model store at {self.root.name}/ holds no models", available=[])
            else:
                name = self.most_accurate(names)
        if name not in names:
            raise ModelNotFound(f"no model named {name!r}", available=names)
        versions = self.versions(name)
        if version is None:
            return ModelRef(name, versions[-1])
        if version not in versions:
            raise ModelNotFound(f"model {name!r} has no version {version}", available_versions=versions)
        return ModelRef(name, version)

    def most_accurate(self, names: list[str]) -> str:
        """Of several stored models, the one whose newest version has the best held-out accuracy
        (`validation_accuracy` in its metadata; a model without one comes last, ties by name)."""

        def accuracy(name: str) -> float:
            path = self.root / name / str(self.versions(name)[-1]) / METADATA_FILE
            try:
                value = json.loads(path.read_text()).get("validation_accuracy")
            except (OSError, ValueError):
                return -1.0
            return float(value) if isinstance(value, int | float) else -1.0

        return max(sorted(names), key=accuracy)

    def entry_dir(self, ref: ModelRef) -> Path:
        return self.root / ref.name / str(ref.version)

    def file_stamp(self, ref: ModelRef) -> tuple[tuple[str, int, int], ...]:
        """Each file of the entry with its size and modification time: changes when a copy moves on."""
        folder = self.entry_dir(ref)
        try:
            return tuple(
                sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))
            )
        except OSError:
            return ()

    def read_metadata(self, ref: ModelRef) -> dict[str, Any]:
        path = self.entry_dir(ref) / METADATA_FILE
        try:
            metadata: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelIntegrityError(f"{ref.label}: {METADATA_FILE} cannot be read ({exc})") from exc
        return metadata

    def verify(self, ref: ModelRef) -> dict[str, Any]:
        """Check every file's SHA-256 against metadata.json; return the metadata."""
        metadata = self.read_metadata(ref)
        files = metadata.get("files")
        model_file = f"{SAVED_MODEL_DIR}/{SAVED_MODEL_FILE}" if is_saved_model_entry(metadata) else MODEL_FILE
        if not isinstance(files, dict) or model_file not in files:
            raise ModelIntegrityError(f"{ref.label}: {METADATA_FILE} lists no file digests")
        for file_name, expected in files.items():
            path = self.entry_dir(ref) / file_name
            if not path.is_file():
                raise ModelIntegrityError(f"{ref.label}: {file_name} is missing", file=file_name)
            actual = sha256_file(path)
            if actual != expected["sha256"]:
                raise ModelIntegrityError(
                    f"{ref.label}: {file_name} does not match its SHA-256 in {METADATA_FILE}; "
                    "the file is corrupt or was replaced, retrain or restore it",
                    file=file_name,
                    expected_sha256=expected["sha256"],
                    actual_sha256=actual,
                )
        return metadata

    def load(self, ref: ModelRef) -> tuple[keras.Model, dict[str, Any]]:
        """Verify, then load the serving model with `safe_mode=True` (no Lambda or custom code)."""
        metadata = self.verify(ref)
        if is_saved_model_entry(metadata):
            return self.load_saved_model(ref, metadata), metadata
        try:
            model = keras.saving.load_model(self.entry_dir(ref) / MODEL_FILE, compile=False, safe_mode=True)
        except Exception as exc:
            raise ModelIntegrityError(f"{ref.label}: {MODEL_FILE} cannot be loaded safely ({exc})") from exc
        return model, metadata

    def load_saved_model(self, ref: ModelRef, metadata: dict[str, Any]) -> keras.Model:
        """A verified SavedModel entry as a one-layer Keras model over its serving signature."""
        try:
            return load_saved_model(self.entry_dir(ref) / SAVED_MODEL_DIR, metadata.get("signature", "serving_default"))
        except Exception as exc:
            raise ModelIntegrityError(f"{ref.label}: its SavedModel cannot be loaded ({exc})") from exc

    def load_initial_weights(self, ref: ModelRef, model: keras.Model) -> dict[str, list[np.ndarray]] | None:
        """Each layer's weights before training, from the entry's verified `initial.weights.h5` read
        into a copy of `model`; None when the entry has none (an imported model may not)."""
        if INITIAL_WEIGHTS_FILE not in self.read_metadata(ref).get("files", {}):
            return None
        return self._weights_of(ref, model, INITIAL_WEIGHTS_FILE)

    def load_learned(self, ref: ModelRef) -> tuple[keras.Model, dict[str, list[np.ndarray]] | None] | None:
        """The network as the optimizer trained it (BatchNorm unfolded) and its weights before
        training, from the verified `learned.keras` and `learned-initial.weights.h5`; None when the
        entry has no such form (its served weights are the learned ones, or it predates them)."""
        files = self.read_metadata(ref).get("files", {})
        if LEARNED_MODEL_FILE not in files:
            return None
        path = self.entry_dir(ref) / LEARNED_MODEL_FILE
        try:
            learned = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:
            raise ModelIntegrityError(f"{ref.label}: {LEARNED_MODEL_FILE} cannot be loaded safely ({exc})") from exc
        initial = self._weights_of(ref, learned, LEARNED_INITIAL_FILE) if LEARNED_INITIAL_FILE in files else None
        return learned, initial

    def _weights_of(self, ref: ModelRef, model: keras.Model, file_name: str) -> dict[str, list[np.ndarray]]:
        """Each layer's weights from `file_name` of the entry, read into a copy of `model`."""
        copy = keras.models.clone_model(model)
        try:
            copy.load_weights(self.entry_dir(ref) / file_name)
        except Exception as exc:
            raise ModelIntegrityError(f"{ref.label}: {file_name} cannot be loaded ({exc})") from exc
        return {path: find_layer(copy, path).get_weights() for path in weighted_layer_names(copy)}


def is_saved_model_entry(metadata: dict[str, Any]) -> bool:
    return metadata.get("format") == "saved_model"
