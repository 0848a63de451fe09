"""Nearest-neighbour indexes of a dataset's embeddings, kept with the model version that embedded
them: `<jobs dir>/indexes/<model>/<version>/<name>/`, written by an `index` job and read by
`POST /explain/examples`.

An index folder holds `vectors.npy` (float32, one unit-length row per image: cosine distance is
1 - the dot product), `thumbs.npy` (uint8 thumbnails, at most THUMB pixels a side), `items.json`
(each row's source and label), `meta.json`, and, past EXACT_UP_TO images, `graph.usearch`: an HNSW
graph of usearch (Unum's single-header HNSW library, with wheels for every platform, the index saved
as one file; hnswlib ships no wheels and faiss-cpu is an 18 MB wheel for the same graph). Up to
EXACT_UP_TO images a query is answered exactly, by one matrix product over the vectors (under a
millisecond at 20,000 x 128); past it, by the graph, whose recall against exact search
`bench/examples_bench.py` measures. A folder is written whole under a temporary name and renamed
into place, so a reader sees the old index or the new one, never part of one.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from mindscope.errors import InvalidInput, UnknownIndex

EXACT_UP_TO = 20_000
THUMB = 32
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# The graph's build and search effort: recall@10 against exact search is in docs/benchmarks.md.
CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 128


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(
            "an index needs a name of 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
            'e.g. {"name": "cifar-train"}',
            name=name,
        )
    return name


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """float32 (H, W, C) in [0, 1] -> uint8 (THUMB, THUMB, 3) RGB, the image scaled to fit, centred on black."""
    image = np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    picture = Image.fromarray(image[..., :3])
    picture.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (THUMB, THUMB))
    canvas.paste(picture, ((THUMB - picture.width) // 2, (THUMB - picture.height) // 2))
    return np.asarray(canvas)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class IndexInfo:
    name: str
    model: str
    version: int
    layer: str
    count: int
    dimensions: int
    search: Literal["exact", "hnsw"]
    job: str | None
    created: float


@dataclass(frozen=True)
class Neighbour:
    row: int
    source: str
    label: str | None
    distance: float
    thumbnail: np.ndarray


class DatasetIndex:
    """One index in memory: its vectors, rows and, past EXACT_UP_TO, its graph."""

    def __init__(self, folder: Path) -> None:
        self.info = IndexInfo(**json.loads((folder / "meta.json").read_text()))
        items = json.loads((folder / "items.json").read_text())
        self.sources: list[str] = items["sources"]
        self.labels: list[str | None] = items["labels"]
        self.vectors = np.load(folder / "vectors.npy", mmap_mode="r")
        self.thumbs = np.load(folder / "thumbs.npy", mmap_mode="r")
        self.graph: Any = None
        if self.info.search == "hnsw":
            from usearch.index import Index

            self.graph = Index.restore(str(folder / "graph.usearch"), view=True)

    def search(self, vector: np.ndarray, k: int, exact: bool = False) -> list[Neighbour]:
        """The `k` rows nearest `vector` (cosine distance), nearest first."""
        query = unit_rows(vector[None])[0]
        k = min(k, self.info.count)
        if self.graph is None or exact:
            distances = 1.0 - np.asarray(self.vectors) @ query
            rows = np.argpartition(distances, k - 1)[:k] if k < len(distances) else np.arange(len(distances))
            rows = rows[np.argsort(distances[rows], kind="stable")]
            found = [(int(row), float(distances[row])) for row in rows]
        else:
            matches = self.graph.search(query, k)
            found = [(int(key), float(distance)) for key, distance in zip(matches.keys, matches.distances, strict=True)]
        return [
            Neighbour(row, self.sources[row], self.labels[row], max(0.0, distance), np.asarray(self.thumbs[row]))
            for row, distance in found
        ]


class IndexStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[Path, tuple[float, DatasetIndex]] = {}
        self._lock = threading.Lock()

    def folder(self, model: str, version: int, name: str) -> Path:
        return self.root / model / str(version) / check_name(name)

    def write(
        self,
        info: IndexInfo,
        vectors: np.ndarray,
        sources: list[str],
        labels: list[str | None],
        thumbs: np.ndarray,
    ) -> Path:
        """The index, written whole beside its place and renamed into it (replacing one of the same name)."""
        target = self.folder(info.model, info.version, info.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".incoming-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            vectors = unit_rows(vectors)
            np.save(staging / "vectors.npy", vectors)
            np.save(staging / "thumbs.npy", np.asarray(thumbs, np.uint8))
            (staging / "items.json").write_text(json.dumps({"sources": sources, "labels": labels}))
            if info.search == "hnsw":
                from usearch.index import Index

                graph = Index(
                    ndim=vectors.shape[1],
                    metric="cos",
                    dtype="f32",
                    connectivity=CONNECTIVITY,
                    expansion_add=EXPANSION_ADD,
                    expansion_search=EXPANSION_SEARCH,
                )
                graph.add(np.arange(len(vectors), dtype=np.uint64), vectors)
                graph.save(str(staging / "graph.usearch"))
            (staging / "meta.json").write_text(json.dumps(asdict(info)))
            old = None
            if target.exists():
                old = target.parent / f".outgoing-{uuid.uuid4().hex}"
                target.rename(old)
            staging.rename(target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def listed(self, model: str, version: int) -> list[IndexInfo]:
        folder = self.root / model / str(version)
        if not folder.is_dir():
            return []
        found = []
        for meta in sorted(folder.glob("*/meta.json")):
            if not meta.parent.name.startswith("."):
                found.append(IndexInfo(**json.loads(meta.read_text())))
        return found

    def get(self, model: str, version: int, name: str) -> DatasetIndex:
        """The index, read once and kept while its files stay the same (404 listing the model's indexes)."""
        folder = self.folder(model, version, name)
        meta = folder / "meta.json"
        try:
            written = meta.stat().st_mtime
        except FileNotFoundError:
            names = [info.name for info in self.listed(model, version)]
            raise UnknownIndex(
                f"{model} version {version} has no index {name!r}"
                + (f"; it has {', '.join(names)}" if names else "; build one with a job of kind index")
                + ' (POST /jobs {"kind": "index", "parameters": {"name": ...}, "folder": ...})',
                indexes=names,
            ) from None
        with self._lock:
            cached = self._cache.get(folder)
            if cached is None or cached[0] != written:
                cached = (written, DatasetIndex(folder))
                self._cache[folder] = cached
            return cached[1]

    def delete(self, model: str, version: int, name: str) -> None:
        self.get(model, version, name)  # 404 when there is none
        shutil.rmtree(self.folder(model, version, name))


def new_info(name: str, model: str, version: int, layer: str, count: int, dimensions: int, job: str) -> IndexInfo:
    search: Literal["exact", "hnsw"] = "exact" if count <= EXACT_UP_TO else "hnsw"
    return IndexInfo(name, model, version, layer, count, dimensions, search, job, time.time())
