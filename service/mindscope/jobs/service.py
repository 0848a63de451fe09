"""Jobs: work over many images that outlives a request. Submitted work is checked whole, its images
made safe and listed, and the job and its items committed in one transaction; one runner thread
then works through the queue, job by job, feeding the models' batchers in their background lane
(after online requests), and commits each item as it finishes.

The layout under the jobs directory (`MINDSCOPE_JOBS_DIR`):

    jobs.sqlite3                   state: jobs and items (SQLite, WAL)
    <id>/input/...                 an uploaded archive's files, or the request's images (.npy)
    <id>/maps/<n>.npy              each explained item's attribution map, float32 like the input
    <id>/answers/<n>.pkl           the service's own record to answer GET /jobs/{id}/items/{n}

Maps are one `.npy` per item: written whole and renamed into place as the item finishes (a crash
leaves no half-written map and no shared file to repair), readable by numpy alone (np.load, or
memory-mapped), and a partial job's maps are usable as they are. The results table (Parquet, CSV)
is built from the committed rows when asked for, so it is never stale or half-written.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import math
import os
import pickle
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from mindscope.dataplane.decoding import DecodedImage, DecodeLimits, ImageInfo, decode_instance
from mindscope.engine.concepts import cav, directional_derivatives
from mindscope.engine.embedding import channel_peaks, embed
from mindscope.engine.explain.runner import Explained
from mindscope.engine.loaded_model import LoadedModel
from mindscope.engine.registry import ModelRegistry
from mindscope.engine.work import RequestWork, request_work
from mindscope.errors import (
    InvalidInput,
    MindscopeError,
    PayloadTooLarge,
    RequestCancelled,
)
from mindscope.jobs import audit, sources
from mindscope.jobs.concepts import ConceptStore
from mindscope.jobs.indexes import IndexStore, new_info, thumbnail
from mindscope.jobs.items import ComputedItem, decode_item, explain_item, npy_bytes, predict_rows
from mindscope.jobs.settings import JobSettings
from mindscope.jobs.spec import Auditing, Indexing, JobRequest, Testing, Work, parse_work
from mindscope.jobs.store import FinishedItem, ItemRow, JobRow, JobStore, NewItem

logger = logging.getLogger("mindscope.jobs")

PREDICT_CHUNK = 64  # images per forward call of a predict job
Chunk = Callable[[list[tuple[ItemRow, DecodedImage]]], list[dict[str, Any] | None]]  # a chunk's results, in order


class JobNotFound(MindscopeError):
    status_code = 404
    code = "job_not_found"


class ItemNotFound(MindscopeError):
    status_code = 404
    code = "item_not_found"


class InsufficientStorage(MindscopeError):
    status_code = 507
    code = "insufficient_storage"


class IdempotencyKeyReused(MindscopeError):
    status_code = 422
    code = "idempotency_key_reused"


class JobsDisabled(MindscopeError):
    status_code = 400
    code = "no_data_root"


@dataclass(frozen=True)
class Submitted:
    job: JobRow
    replayed: bool  # an Idempotency-Key seen before: the job it made then


@dataclass(frozen=True)
class Answer:
    """What GET /jobs/{id}/items/{n} answers from: the item's image and its stored result."""

    job: JobRow
    item: ItemRow
    image: DecodedImage | None
    explained: Explained | None


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class JobService:
    def __init__(self, settings: JobSettings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.registry = registry
        settings.folder.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(settings.folder / "jobs.sqlite3")
        self.indexes = IndexStore(settings.folder / "indexes")  # kept until deleted: no job's retention
        self.concepts = ConceptStore(settings.folder / "concepts")
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._current: tuple[str, RequestWork] | None = None
        self._current_lock = threading.Lock()
        self.items_done = 0  # since start, for metrics
        self.items_failed = 0
        self._thread: threading.Thread | None = None
        self._lock_file: IO[str] | None = None
        self._looked: dict[str, float] = {}  # when each running job's state was last read
        self._reader: tuple[str, sources.DataRoot] | None = None  # the running job's data root, resolved once a run

    # Lifecycle.

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="jobs", daemon=True)
        self._thread.start()

    def _own(self) -> bool:
        """Whether this process runs the jobs of its folder: one process does (a lock on
        `jobs.lock`, let go when it exits, however it exits). Others sharing the folder (replicas on
        one host) submit, report, cancel and serve results through the database, and take over
        when the owner is gone."""
        if self._lock_file is not None:
            return True
        handle = (self.settings.folder / "jobs.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock_file = handle
        self._tidy()
        for job_id in self.store.requeue_running():
            logger.info("job %s resumes where it stopped", job_id)
        return True

    def stop(self) -> None:
        """Stop after the items in flight (they stay queued and run again on the next start)."""
        self._stopping.set()
        self._wake.set()
        with self._current_lock:
            if self._current is not None:
                self._current[1].cancel("the server is stopping")
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.store.close()
        if self._lock_file is not None:
            self._lock_file.close()

    def _tidy(self) -> None:
        """Folders of submissions that never committed (a crash mid-submit) go; one younger than an
        hour may be another process's submission under way."""
        known = self.store.ids() | {self.indexes.root.name, self.concepts.root.name, "channels"}
        for entry in self.settings.folder.iterdir():
            if not entry.is_dir() or entry.name in known or time.time() - entry.stat().st_mtime < 3600:
                continue
            sources.remove(entry)

    # Submitting.

    def submit(
        self,
        request: JobRequest,
        archive: bytes | None = None,
        images: list[DecodedImage] | None = None,
        idempotency_key: str | None = None,
    ) -> Submitted:
        """Check the whole job, stage its images, then commit job and items at once; a refusal
        leaves nothing behind."""
        digest = self._digest(request, archive, images)
        if idempotency_key is not None:
            seen = self.store.by_idempotency_key(idempotency_key)
            if seen is not None:
                return self._replay(seen, digest, idempotency_key)
        model = self.registry.get(request.model, request.version)
        work = parse_work(request, model, self.settings.caps)  # refused here, before anything is stored
        if work.testing is not None:
            self._random_pool(work.testing, self.concepts.get(work.testing.concept).count)
        sources_given = sum(x is not None for x in (request.folder, request.instances, archive, images))
        if sources_given != 1:
            raise InvalidInput(
                "a job takes its images from exactly one of: folder (under the data root), instances, "
                "or an uploaded zip/tar archive",
                sources_given=sources_given,
            )
        used = self.store.total_bytes()
        incoming = len(archive) if archive is not None else 0
        if used + incoming >= self.settings.max_bytes:
            raise InsufficientStorage(
                f"the jobs' results hold {used} bytes of the {self.settings.max_bytes} allowed "
                "(MINDSCOPE_JOBS_MAX_BYTES); delete finished jobs (DELETE /jobs/{id}) or wait for their retention "
                "to end, then submit again",
                bytes_used=used,
                max_bytes=self.settings.max_bytes,
            )
        job_id = uuid.uuid4().hex
        staging = self.settings.folder / f".incoming-{job_id}"
        try:
            items = self._stage(request, model, archive, images, staging)
            stored = sources.folder_bytes(staging)
            spec = request.model_dump(exclude={"instances"}) | {"model": model.ref.name, "version": model.ref.version}
            spec["source"] = self._source_kind(request, archive, images)
            if staging.exists():
                staging.rename(self.settings.folder / job_id)
            try:
                job = self.store.create(job_id, request.kind, spec, items, stored, idempotency_key, digest)
            except Exception:
                sources.remove(self.settings.folder / job_id)
                seen = None if idempotency_key is None else self.store.by_idempotency_key(idempotency_key)
                if seen is not None:  # the same key, submitted at the same moment: that one won
                    return self._replay(seen, digest, idempotency_key)  # type: ignore[arg-type]
                raise
        finally:
            sources.remove(staging)
        self._wake.set()
        return Submitted(job, replayed=False)

    def _replay(self, seen: tuple[JobRow, str | None], digest: str, key: str) -> Submitted:
        job, seen_digest = seen
        if seen_digest != digest:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {key!r} was used for a different job ({job.id}); use a new key for new work",
                job_id=job.id,
            )
        return Submitted(job, replayed=True)

    @staticmethod
    def _digest(request: JobRequest, archive: bytes | None, images: list[DecodedImage] | None) -> str:
        hashed = hashlib.sha256(request.model_dump_json().encode())
        if archive is not None:
            hashed.update(archive)
        for image in images or ():
            hashed.update(image.pixels.tobytes())
        return hashed.hexdigest()

    @staticmethod
    def _source_kind(request: JobRequest, archive: bytes | None, images: list[DecodedImage] | None) -> str:
        if request.folder is not None:
            return "folder"
        return "archive" if archive is not None else "images"

    def _stage(
        self,
        request: JobRequest,
        model: LoadedModel,
        archive: bytes | None,
        images: list[DecodedImage] | None,
        staging: Path,
    ) -> list[NewItem]:
        classes = model.class_names
        if request.folder is not None:
            root = self.settings.data_root
            if root is None:
                raise JobsDisabled(
                    "this server has no data root: set MINDSCOPE_DATA_ROOT to a folder of images to submit "
                    "folders, or upload an archive"
                )
            _, files = sources.folder_files(root, request.folder)
            self._check_count(len(files))
            return sources.labelled(files, classes)
        if archive is not None:
            caps = sources.ArchiveLimits(self.settings.max_files, self.settings.max_archive_bytes)
            return sources.labelled(sources.extract_archive(archive, staging / "input", caps), classes)
        if request.instances is not None:
            limits = DecodeLimits(model.input_shape, self.settings.max_image_pixels)
            images = [decode_instance(i, request.value_range, limits) for i in request.instances]
        assert images is not None
        self._check_count(len(images))
        for n, image in enumerate(images):
            _atomic_write(staging / "input" / f"{n}.npy", npy_bytes(image.pixels))
            _atomic_write(staging / "input" / f"{n}.json", image.info.model_dump_json().encode())
        return [NewItem(f"{n}.npy") for n in range(len(images))]

    def _check_count(self, count: int) -> None:
        if count > self.settings.max_files:
            raise PayloadTooLarge(
                f"{count} images; a job takes at most {self.settings.max_files} (MINDSCOPE_JOBS_MAX_FILES): split it",
                files=count,
                max_files=self.settings.max_files,
            )

    # Reading.

    def get(self, job_id: str) -> JobRow:
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r}; GET /jobs lists them (finished jobs go after their retention)")
        return job

    def cancel(self, job_id: str) -> JobRow:
        self.get(job_id)
        if self.store.cancel(job_id):
            with self._current_lock:
                if self._current is not None and self._current[0] == job_id:
                    self._current[1].cancel("the job was cancelled")
        return self.get(job_id)

    def folder(self, job_id: str) -> Path:
        return self.settings.folder / job_id

    def map_path(self, job_id: str, n: int) -> Path:
        return self.folder(job_id) / "maps" / f"{n}.npy"

    def answer(self, job_id: str, n: int) -> Answer:
        job = self.get(job_id)
        item = self.store.item(job_id, n)
        if item is None:
            raise ItemNotFound(f"job {job_id} has items 0-{job.total - 1}; no item {n}", total=job.total)
        if item.state != "succeeded":
            return Answer(job, item, None, None)
        model = self.registry.get(job.spec["model"], job.spec["version"])
        image = self._load(job, item, model)
        explained = None
        if job.kind == "explain":
            explained = pickle.loads((self.folder(job_id) / "answers" / f"{n}.pkl").read_bytes())  # noqa: S301
        return Answer(job, item, image, explained)

    def model_of(self, job: JobRow) -> LoadedModel:
        return self.registry.get(job.spec["model"], job.spec["version"])

    def work_of(self, job: JobRow, model: LoadedModel) -> Work:
        return parse_work(JobRequest.model_validate(_request_fields(job.spec)), model, self.settings.caps)

    # Running.

    def _run(self) -> None:
        last_sweep = 0.0
        while not self._stopping.is_set():
            if not self._own():
                self._stopping.wait(2.0)
                continue
            if time.monotonic() - last_sweep > min(60.0, self.settings.retention_s):
                self.sweep()
                last_sweep = time.monotonic()
            job = self.store.next_queued()
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._run_job(job)
            except Exception:  # a bug in a job must not stop the runner
                logger.exception("job %s failed", job.id)
                self.store.end(job.id, "failed", "internal error; the server's log has the details")

    def _run_job(self, job: JobRow) -> None:
        if not self.store.start(job.id):
            return
        try:
            # The model stays in memory while its job runs: unloading it would leave the job's
            # calls off the batchers (no waiting for online requests) and load a second copy.
            with self.registry.held(job.spec["model"], job.spec["version"]) as model:
                self._run_job_on(job, model)
        except MindscopeError as exc:  # the model cannot be loaded
            self.store.end(job.id, "failed", exc.message)

    def _run_job_on(self, job: JobRow, model: LoadedModel) -> None:
        try:
            work = self.work_of(job, model)
        except MindscopeError as exc:
            self.store.end(job.id, "failed", exc.message)
            return
        logger.info("job %s running: %s %s over %d items", job.id, job.kind, job.spec.get("method") or "", job.total)
        running = RequestWork(background=True)
        if self.settings.data_root is not None:
            self._reader = (job.id, sources.DataRoot(self.settings.data_root))
        with self._current_lock:
            self._current = (job.id, running)
        try:
            pending = self.store.items(job.id, "queued")
            try:
                self._run_items(job, model, work, pending, running)
            except MindscopeError as exc:  # the whole job cannot go on (its concept was deleted, ...)
                running.cancel(exc.message)
                self.store.end(job.id, "failed", exc.message)
        finally:
            with self._current_lock:
                self._current = None
        if running.cancelled is None:
            try:
                if work.indexing is not None:
                    self._write_index(job, model, work.indexing)
                if work.auditing is not None:
                    with request_work(running):
                        self._write_audit(job, model, work.auditing)
            except MindscopeError as exc:
                self.store.end(job.id, "failed", exc.message)
            else:
                self.store.end(job.id, "succeeded")
        self._log_end(job)

    def _run_items(
        self, job: JobRow, model: LoadedModel, work: Work, pending: list[ItemRow], running: RequestWork
    ) -> None:
        if work.indexing is not None:  # on this server, Ray or not: the index is written here
            self._index_items(job, model, work.indexing, pending, running)
        elif work.testing is not None:
            self._tcav_items(job, model, work.testing, pending, running)
        elif work.auditing is not None:
            self._audit_items(job, model, work, pending, running)
        elif self.settings.ray_address is not None:
            self._ray_items(job, model, pending, running)
        elif work.kind == "predict":
            self._predict_items(job, model, pending, running)
        else:
            self._explain_items(job, model, work, pending, running)

    def _log_end(self, job: JobRow) -> None:
        ended = self.store.get(job.id)
        if ended is not None and ended.state in ("succeeded", "cancelled"):
            logger.info(
                "job %s %s: %d done, %d failed of %d (%s %s)",
                job.id,
                ended.state,
                ended.done,
                ended.failed,
                ended.total,
                job.kind,
                job.spec.get("method") or "",
            )

    def _load(self, job: JobRow, item: ItemRow, model: LoadedModel) -> DecodedImage:
        source = job.spec["source"]
        if source == "images":
            folder = self.folder(job.id) / "input"
            pixels = np.load(folder / item.source, allow_pickle=False)
            info = ImageInfo.model_validate_json((folder / item.source.replace(".npy", ".json")).read_text())
            return DecodedImage(pixels, info)
        limits = DecodeLimits(model.input_shape, self.settings.max_image_pixels)
        return decode_item(self._file_bytes(job, item), limits, item.source)

    def _file_bytes(self, job: JobRow, item: ItemRow) -> bytes:
        """An item's file: under the data root (never outside it), or under the job's input folder."""
        try:
            if job.spec["source"] == "folder":
                return self._data_root(job.id).read(item.source)
            return (self.folder(job.id) / "input" / item.source).read_bytes()
        except OSError as exc:
            raise InvalidInput(f"{item.source} cannot be read: {exc.strerror}") from None

    def _data_root(self, job_id: str) -> sources.DataRoot:
        """The running job's reader (its folders resolved once a run), or a new one."""
        assert self.settings.data_root is not None
        reader = self._reader
        if reader is not None and reader[0] == job_id:
            return reader[1]
        return sources.DataRoot(self.settings.data_root)

    def _decoded(
        self, job: JobRow, model: LoadedModel, chunk: list[ItemRow]
    ) -> tuple[list[FinishedItem], list[tuple[ItemRow, DecodedImage]]]:
        """A chunk's images, and the items that could not be read as failed."""
        failed: list[FinishedItem] = []
        good: list[tuple[ItemRow, DecodedImage]] = []
        for item in chunk:
            try:
                good.append((item, self._load(job, item, model)))
            except MindscopeError as exc:
                failed.append(FinishedItem(item.n, None, exc.message, 0.0))
        return failed, good

    def _in_chunks(
        self, job: JobRow, model: LoadedModel, items: list[ItemRow], running: RequestWork, work: Chunk
    ) -> None:
        """Chunks of PREDICT_CHUNK images: each read and decoded (a file that is no image fails as its
        item), computed by `work` in the job's background lane, and its rows committed together; a
        cancelled job stops between chunks, or within one (its rows are not written). (Reading the
        next chunk while the model runs this one measured no faster on 2 cores: the forward uses both.)"""
        for start in range(0, len(items), PREDICT_CHUNK):
            if self._stopped(job, running):
                return
            finished, good = self._decoded(job, model, items[start : start + PREDICT_CHUNK])
            if good:
                began = time.perf_counter()
                try:
                    with request_work(running):
                        results = work(good)
                except RequestCancelled:
                    return
                seconds = (time.perf_counter() - began) / len(good)
                finished += [
                    FinishedItem(item.n, result, None, seconds) for (item, _), result in zip(good, results, strict=True)
                ]
            self._finish(job.id, finished)

    def _predict_items(self, job: JobRow, model: LoadedModel, items: list[ItemRow], running: RequestWork) -> None:
        """One forward call a chunk."""

        def predicted(good: list[tuple[ItemRow, DecodedImage]]) -> list[dict[str, Any] | None]:
            pixels = [image.pixels for _, image in good]
            return [one.result for one in predict_rows(model, pixels, [image.info.model_dump() for _, image in good])]

        self._in_chunks(job, model, items, running, predicted)

    def _index_items(
        self, job: JobRow, model: LoadedModel, indexing: Indexing, items: list[ItemRow], running: RequestWork
    ) -> None:
        """Each chunk embedded at the layer; its vectors and thumbnails are written whole
        (`parts/<first item>.npz`) before its rows, so a resumed job embeds only what is missing."""

        def embedded(good: list[tuple[ItemRow, DecodedImage]]) -> list[dict[str, Any] | None]:
            vectors = embed(model, indexing.layer, np.stack([image.pixels for _, image in good]))
            buffer = io.BytesIO()
            np.savez(
                buffer,
                n=np.asarray([item.n for item, _ in good], np.int64),
                vectors=vectors,
                thumbs=np.stack([thumbnail(image.pixels) for _, image in good]),
            )
            _atomic_write(self.folder(job.id) / "parts" / f"{good[0][0].n}.npz", buffer.getvalue())
            self.store.add_bytes(job.id, buffer.getbuffer().nbytes)
            return [{"index": indexing.name, "layer": indexing.layer}] * len(good)

        self._in_chunks(job, model, items, running, embedded)

    def _random_pool(self, testing: Testing, concept_count: int) -> list[str]:
        """The random sets' pool: files of the data-root folder, enough for runs + 1 sets (422 if not)."""
        if self.settings.data_root is None:
            raise JobsDisabled("this server has no data root (MINDSCOPE_DATA_ROOT) to draw random sets from")
        _, files = sources.folder_files(self.settings.data_root, testing.random_folder)
        needed = (testing.runs + 1) * (testing.size or concept_count)
        if len(files) < needed:
            raise InvalidInput(
                f"random_folder {testing.random_folder!r} holds {len(files)} files; {testing.runs + 1} random sets "
                f"of {testing.size or concept_count} need {needed} (fewer runs or a smaller size)",
                files=len(files),
                needed=needed,
            )
        return files

    def _cavs(self, job: JobRow, model: LoadedModel, testing: Testing, running: RequestWork) -> dict[str, np.ndarray]:
        """Per layer, the concept's CAVs against each random set and the random-vs-random ones, computed
        once and kept in the job's folder (`cavs.npz`), so a resumed job tests against the same ones."""
        path = self.folder(job.id) / "cavs.npz"
        if path.exists():
            with np.load(path) as kept:
                return {name: kept[name] for name in kept.files}
        limits = DecodeLimits(model.input_shape, self.settings.max_image_pixels)
        concept = np.stack(
            [decode_item(data, limits, name).pixels for name, data in self.concepts.images(testing.concept)]
        )
        size = testing.size or len(concept)
        pool = self._random_pool(testing, len(concept))
        rng = np.random.default_rng(testing.seed)
        reader = sources.DataRoot(self.settings.data_root)  # type: ignore[arg-type]
        drawn: list[np.ndarray] = []
        for k in rng.permutation(len(pool)):
            if len(drawn) == (testing.runs + 1) * size:
                break
            try:
                drawn.append(decode_item(reader.read(pool[int(k)]), limits, pool[int(k)]).pixels)
            except (MindscopeError, OSError):
                continue  # not an image: the next one of the pool
        if len(drawn) < (testing.runs + 1) * size:
            raise InvalidInput(f"random_folder {testing.random_folder!r} has too few readable images")
        randoms = np.stack(drawn).reshape(testing.runs + 1, size, *model.input_shape)
        cavs: dict[str, np.ndarray] = {}
        for layer in testing.layers:
            tapped = model.layer_gradients(layer, testing.score)
            with request_work(running):
                concept_acts = tapped(concept, np.zeros(len(concept), np.int32))[0]
                random_acts = [tapped(images, np.zeros(len(images), np.int32))[0] for images in randoms]
            seeds = [testing.seed * 1000 + r for r in range(testing.runs)]
            cavs[f"{layer}/concept"] = np.stack(
                [cav(concept_acts, random_acts[r + 1], seeds[r]) for r in range(testing.runs)]
            )
            # Random-vs-random: each run another random set in the concept's place (set r + 2 against r + 1, the
            # last against set 0), so the null scores vary as a random concept's would, set to set.
            cavs[f"{layer}/random"] = np.stack(
                [
                    cav(random_acts[(r + 2) % (testing.runs + 1)], random_acts[r + 1], seeds[r])
                    for r in range(testing.runs)
                ]
            )
        buffer = io.BytesIO()
        np.savez(buffer, **cavs)  # type: ignore[arg-type]
        _atomic_write(path, buffer.getvalue())
        return cavs

    def _tcav_items(
        self, job: JobRow, model: LoadedModel, testing: Testing, items: list[ItemRow], running: RequestWork
    ) -> None:
        """The class's images: each one's directional derivatives along every CAV, per layer, kept in
        its row; `GET /jobs/{id}/report` scores them."""
        if not items:
            return
        try:
            cavs = self._cavs(job, model, testing, running)
        except RequestCancelled:
            return

        def derived(good: list[tuple[ItemRow, DecodedImage]]) -> list[dict[str, Any] | None]:
            pixels = np.stack([image.pixels for _, image in good])
            targets = np.full(len(good), testing.target, np.int32)
            derivatives = {}
            for layer in testing.layers:
                _, gradients, _ = model.layer_gradients(layer, testing.score)(pixels, targets)
                derivatives[layer] = {
                    side: directional_derivatives(gradients, cavs[f"{layer}/{side}"]) for side in ("concept", "random")
                }
            return [
                {
                    "tcav": {
                        layer: {side: [float(v) for v in values[row]] for side, values in sides.items()}
                        for layer, sides in derivatives.items()
                    }
                }
                for row in range(len(good))
            ]

        self._in_chunks(job, model, items, running, derived)

    def _audit_items(
        self, job: JobRow, model: LoadedModel, work: Work, items: list[ItemRow], running: RequestWork
    ) -> None:
        """Predictions and channel peaks a chunk at a time; each method's trust scores for the sample
        (`audit.sample`), one image at a time."""
        auditing = work.auditing
        assert auditing is not None
        explained = audit.sample(self.store.items(job.id), auditing.explain_per_class)

        def audited(good: list[tuple[ItemRow, DecodedImage]]) -> list[dict[str, Any] | None]:
            pixels = np.stack([image.pixels for _, image in good])
            rows = predict_rows(model, list(pixels), [image.info.model_dump() for _, image in good])
            peaks = {layer: channel_peaks(model, layer, pixels) for layer in auditing.layers}
            results: list[dict[str, Any] | None] = []
            for k, (item, _) in enumerate(good):
                result = rows[k].result
                assert result is not None
                result["peaks"] = {layer: found[0][k].tolist() for layer, found in peaks.items()}
                result["positions"] = {layer: found[1][k].tolist() for layer, found in peaks.items()}
                if item.n in explained:
                    result["trust"] = audit.trust_of(model, auditing, work.context, pixels[k], result["class_index"])
                results.append(result)
            return results

        self._in_chunks(job, model, items, running, audited)

    def _write_audit(self, job: JobRow, model: LoadedModel, auditing: Auditing) -> None:
        """report.json and report.html in the job's folder; the channels' dataset examples for the
        model version (GET /visualize/{layer}/{channel}?source=dataset)."""
        items = self.store.items(job.id)
        report, figures, examples = audit.build(
            job, model, auditing, items, lambda item: self._load(job, item, model).pixels
        )
        audit.write(self.folder(job.id), report, figures, _atomic_write)
        for layer, channels in examples.items():
            path = self.dataset_examples_path(model.ref.name, model.ref.version, layer)
            _atomic_write(path, json.dumps({"layer": layer, "job": job.id, "channels": channels}).encode())

    def dataset_examples_path(self, model: str, version: int, layer: str) -> Path:
        return self.settings.folder / "channels" / model / str(version) / f"{layer.replace('/', '~')}.json"

    def _write_index(self, job: JobRow, model: LoadedModel, indexing: Indexing) -> None:
        """The finished job's parts, in item order, as the model version's index `indexing.name`."""
        done = {item.n: item for item in self.store.items(job.id, "succeeded")}
        vectors: dict[int, np.ndarray] = {}
        thumbs: dict[int, np.ndarray] = {}
        for part in sorted((self.folder(job.id) / "parts").glob("*.npz")):
            with np.load(part) as loaded:
                for n, vector, thumb in zip(loaded["n"], loaded["vectors"], loaded["thumbs"], strict=True):
                    if int(n) in done:
                        vectors[int(n)], thumbs[int(n)] = vector, thumb
        rows = sorted(vectors)
        if not rows:
            raise InvalidInput("no image of the job could be read, so there is nothing to index")
        info = new_info(
            indexing.name, model.ref.name, model.ref.version, indexing.layer, len(rows), len(vectors[rows[0]]), job.id
        )
        self.indexes.write(
            info,
            np.stack([vectors[n] for n in rows]),
            [done[n].source for n in rows],
            [done[n].label for n in rows],
            np.stack([thumbs[n] for n in rows]),
        )
        logger.info(
            "job %s wrote index %s of %s: %d images at %s", job.id, info.name, model.ref.label, len(rows), info.layer
        )

    def _explain_items(
        self, job: JobRow, model: LoadedModel, work: Work, items: list[ItemRow], running: RequestWork
    ) -> None:
        def one(item: ItemRow) -> None:
            if self._stopped(job, running):
                return
            began = time.perf_counter()
            try:
                image = self._load(job, item, model)
                with request_work(running):
                    computed = explain_item(model, work, image.pixels, image.info.model_dump())
            except RequestCancelled:
                return
            except MindscopeError as exc:
                computed = ComputedItem(None, exc.message, time.perf_counter() - began)
            self._store(job.id, item.n, computed)

        with ThreadPoolExecutor(self.settings.workers, thread_name_prefix=f"job-{job.id[:8]}") as pool:
            for _ in pool.map(one, items):
                pass

    def _store(self, job_id: str, n: int, computed: ComputedItem) -> None:
        """The item's files (each written whole, then renamed into place), then its row."""
        written = 0
        if computed.map_bytes is not None and computed.explained is not None:
            answer_bytes = pickle.dumps(computed.explained, protocol=pickle.HIGHEST_PROTOCOL)
            folder = self.folder(job_id)
            _atomic_write(folder / "maps" / f"{n}.npy", computed.map_bytes)
            _atomic_write(folder / "answers" / f"{n}.pkl", answer_bytes)
            written = len(computed.map_bytes) + len(answer_bytes)
        self._finish(job_id, [FinishedItem(n, computed.result, computed.error, computed.seconds, written)])

    def _stopped(self, job: JobRow, running: RequestWork) -> bool:
        """Cancelled here, or in the database (by another process on the same jobs folder: looked
        at twice a second)."""
        now = time.monotonic()
        if running.cancelled is None and now - self._looked.get(job.id, -math.inf) >= 0.5:
            self._looked[job.id] = now
            current = self.store.get(job.id)
            if current is None or current.state == "cancelled":
                running.cancel("the job was cancelled")
        return running.cancelled is not None

    def _ray_items(self, job: JobRow, model: LoadedModel, items: list[ItemRow], running: RequestWork) -> None:
        from mindscope.jobs.ray_runner import run_on_ray

        assert self.settings.ray_address is not None
        shipped = []
        for item in items:
            try:
                data, kind, info = self._raw(job, item, model)
            except MindscopeError as exc:
                self._finish(job.id, [FinishedItem(item.n, None, exc.message, 0.0)])
                continue
            shipped.append({"n": item.n, "source": item.source, "data": data, "kind": kind, "info": json.dumps(info)})
        caps = self.settings.caps
        worker_args = {
            "store_dir": str(self.registry.store.root.resolve()),
            "spec": job.spec,
            "caps": {
                "max_steps": caps.max_steps,
                "max_rows": caps.max_rows,
                "max_samples": caps.max_samples,
                "rows_per_chunk": caps.rows_per_chunk,
            },
            "max_pixels": self.settings.max_image_pixels,
        }
        answers = run_on_ray(
            self.settings.ray_address,
            shipped,
            worker_args,
            self.settings.ray_actors,
            self.settings.ray_cpus_per_actor,
            lambda: self._stopped(job, running),
        )
        for n, computed in answers:
            self._store(job.id, n, computed)

    def _raw(self, job: JobRow, item: ItemRow, model: LoadedModel) -> tuple[bytes, str, dict[str, Any]]:
        """What a Ray worker gets for an item: the file's bytes (it decodes them), or a submitted
        image's array."""
        if job.spec["source"] == "images":
            image = self._load(job, item, model)
            return npy_bytes(image.pixels), "npy", image.info.model_dump()
        return self._file_bytes(job, item), "file", {}

    def _finish(self, job_id: str, finished: list[FinishedItem]) -> None:
        self.store.finish_items(job_id, finished)
        failed = sum(1 for item in finished if item.error)
        self.items_failed += failed
        self.items_done += len(finished) - failed

    # Retention.

    def sweep(self) -> list[str]:
        """Finished jobs past their retention go, files and rows."""
        expired = self.store.expired(time.time() - self.settings.retention_s)
        for job_id in expired:
            sources.remove(self.folder(job_id))
            self.store.delete(job_id)
            logger.info("job %s expired and was deleted", job_id)
        return expired

    def delete(self, job_id: str) -> None:
        """A finished job's files and rows go now."""
        job = self.get(job_id)
        if job.state not in ("succeeded", "failed", "cancelled"):
            raise InvalidInput(f"job {job_id} is {job.state}; cancel it first (DELETE /jobs/{job_id})")
        sources.remove(self.folder(job_id))
        self.store.delete(job_id)


def _request_fields(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k in JobRequest.model_fields and k not in ("folder", "value_range")}
