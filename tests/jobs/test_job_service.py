"""The job service without HTTP: the disk budget, retention, archive caps, and a crash mid-job
(`kill -9` of a real `mindscope serve`: the job resumes, no finished item runs again)."""

from __future__ import annotations

import io
import os
import shutil
import signal
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from mindscope.engine.explain.method import Caps
from mindscope.engine.registry import ModelRegistry
from mindscope.engine.store import ModelStore
from mindscope.errors import InvalidInput
from mindscope.jobs.service import JobService
from mindscope.jobs.settings import JobSettings
from mindscope.jobs.sources import ArchiveLimits, DataRoot, extract_archive
from mindscope.jobs.spec import JobRequest

from tests.conftest import COMMITTED_STORE
from tests.servers import start_server, wait_until


def settings(folder: Path, data_root: Path | None = None, **changes: object) -> JobSettings:
    base = JobSettings(folder, data_root, 10**9, 3600.0, 1000, 10**8, 4096 * 4096, 2, Caps())
    return JobSettings(**{**base.__dict__, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry(ModelStore(COMMITTED_STORE))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("root")
    (root / "cat").mkdir()
    for path in sorted((data_dir / "cat").iterdir())[:4]:
        shutil.copy(path, root / "cat" / path.name)
    return root


def test_a_full_disk_budget_refuses_new_jobs_with_507_and_stores_nothing(tmp_path, registry, images):
    jobs = JobService(settings(tmp_path / "jobs", images, max_bytes=1000), registry)
    grey = [[[[128, 128, 128]] * 32] * 32]
    first = jobs.submit(JobRequest(kind="predict", instances=grey))  # nothing stored yet: admitted
    assert first.job.bytes > 1000  # its images, kept as arrays
    with pytest.raises(Exception) as refused:
        jobs.submit(JobRequest(kind="predict", folder="cat"))
    assert refused.value.status_code == 507 and "MINDSCOPE_JOBS_MAX_BYTES" in refused.value.message
    assert [job.id for job in jobs.store.listed()] == [first.job.id]
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir() if p.is_dir()) == [first.job.id]
    jobs.store.close()


def test_finished_jobs_are_deleted_after_their_retention(tmp_path, registry, images):
    jobs = JobService(settings(tmp_path / "jobs", images, retention_s=0.5), registry)
    jobs.start()
    try:
        job = jobs.submit(JobRequest(kind="predict", folder="cat")).job
        wait_until(lambda: jobs.store.get(job.id) is not None and jobs.store.get(job.id).state == "succeeded")
        assert jobs.sweep() == []  # just finished: kept
        time.sleep(0.6)
        assert jobs.sweep() == [job.id]
        assert jobs.store.get(job.id) is None and not (tmp_path / "jobs" / job.id).exists()
    finally:
        jobs.stop()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_archive_bombs_are_refused_by_their_declared_size_and_count_before_extracting(tmp_path):
    bomb = _zip({"cat/zeros.jpg": bytes(50_000_000)})  # 50 MB of zeros: about 50 kB zipped
    assert len(bomb) < 100_000
    with pytest.raises(Exception) as refused:
        extract_archive(bomb, tmp_path / "a", ArchiveLimits(max_files=10, max_bytes=10_000_000))
    assert refused.value.status_code == 413 and "unpacks to 50000000 bytes" in refused.value.message
    assert list((tmp_path / "a").iterdir()) == []  # nothing was extracted
    many = _zip({f"cat/{n}.jpg": b"x" for n in range(11)})
    with pytest.raises(Exception) as counted:
        extract_archive(many, tmp_path / "b", ArchiveLimits(max_files=10, max_bytes=10_000_000))
    assert counted.value.status_code == 413 and "11 files" in counted.value.message


def test_a_zip_that_lies_about_its_sizes_is_refused_while_extracting(tmp_path):
    data = bytearray(_zip({"cat/a.jpg": bytes(200_000)}))
    # Rewrite the central directory's uncompressed size to 10 bytes: the declared total passes.
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    with pytest.raises(Exception) as refused:
        extract_archive(bytes(data), tmp_path / "c", ArchiveLimits(max_files=10, max_bytes=1000))
    # zipfile's own check (the CRC) or the bytes counted while writing: refused either way, not a 500
    assert refused.value.status_code in (413, 422) and refused.value.code in ("payload_too_large", "invalid_input")


def test_kill_9_mid_job_resumes_without_computing_a_finished_item_again(tmp_path, data_dir):
    """A real server and a real SIGKILL: the restarted server finishes the job; the items finished
    before the kill keep their results and finish times (they did not run again), and every item
    has exactly one row and one map."""
    root = tmp_path / "root"
    (root / "ship").mkdir(parents=True)
    for path in sorted((data_dir / "ship").iterdir())[:16]:
        shutil.copy(path, root / "ship" / path.name)
    env = {
        "MINDSCOPE_JOBS_DIR": str(tmp_path / "jobs"),
        "MINDSCOPE_DATA_ROOT": str(root),
        "MINDSCOPE_JOBS_WORKERS": "1",
    }
    server = start_server(tmp_path, COMMITTED_STORE, **env)
    server.wait_ready()
    body = {"kind": "explain", "method": "integrated-gradients", "parameters": {"steps": 1024}, "folder": "ship"}
    job = httpx.post(f"{server.base_url}/jobs", json=body, timeout=60).json()
    url = f"{server.base_url}/jobs/{job['id']}"
    wait_until(lambda: httpx.get(url, timeout=30).json()["items"]["done"] >= 3, timeout=300)
    before = {r["n"]: r for r in httpx.get(f"{url}/results", timeout=30).json()["rows"] if r["state"] == "succeeded"}
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(30)
    server.log_handle.close()
    assert 3 <= len(before) < 16
    stamps = {n: (tmp_path / "jobs" / job["id"] / "maps" / f"{n}.npy").stat().st_mtime_ns for n in before}

    again = start_server(tmp_path, COMMITTED_STORE, **env)
    try:
        again.wait_ready()
        url = f"{again.base_url}/jobs/{job['id']}"
        wait_until(lambda: httpx.get(url, timeout=30).json()["state"] == "succeeded", timeout=600)
        after = httpx.get(url, timeout=30).json()
        rows = httpx.get(f"{url}/results", timeout=30).json()["rows"]
    finally:
        again.stop()
    assert after["items"] == {"total": 16, "done": 16, "failed": 0, "queued": 0}
    assert [r["n"] for r in rows] == list(range(16)) and all(r["state"] == "succeeded" for r in rows)
    for n, row in before.items():  # untouched: same result, same map file
        assert rows[n]["seconds"] == row["seconds"] and rows[n]["deletion_area"] == row["deletion_area"]
        assert (tmp_path / "jobs" / job["id"] / "maps" / f"{n}.npy").stat().st_mtime_ns == stamps[n]
    maps = sorted(p.name for p in (tmp_path / "jobs" / job["id"] / "maps").iterdir())
    assert maps == sorted(f"{n}.npy" for n in range(16))  # one map each, no temporary left over


def test_one_process_runs_a_folders_jobs_and_another_takes_over_when_it_is_gone(tmp_path, registry, images):
    first = JobService(settings(tmp_path / "jobs", images), registry)
    second = JobService(settings(tmp_path / "jobs", images), registry)
    first.start()
    wait_until(lambda: first._lock_file is not None)
    second.start()
    try:
        job = second.submit(JobRequest(kind="predict", folder="cat")).job  # accepted by either
        wait_until(lambda: second.get(job.id).state == "succeeded")
        assert second._lock_file is None  # the first ran it
        first.stop()
        again = second.submit(JobRequest(kind="predict", folder="cat")).job
        wait_until(lambda: second.get(again.id).state == "succeeded", timeout=60)
        assert second._lock_file is not None  # the second took over
    finally:
        second.stop()


def test_links_in_the_data_root_are_read_only_where_they_stay_inside_it(tmp_path, registry, data_dir):
    """A file or folder under the data root that is a link leading out of it is never read: the item
    fails and names the link; a link to a file inside the root reads as the file does."""
    outside = tmp_path / "outside"
    outside.mkdir()
    image = sorted((data_dir / "cat").iterdir())[0]
    shutil.copy(image, outside / "secret.jpg")
    root = tmp_path / "root"
    (root / "set" / "cat").mkdir(parents=True)
    shutil.copy(image, root / "set" / "cat" / "a.jpg")
    (root / "set" / "cat" / "b.jpg").symlink_to(root / "set" / "cat" / "a.jpg")
    (root / "set" / "cat" / "c.jpg").symlink_to(outside / "secret.jpg")
    jobs = JobService(settings(tmp_path / "jobs", root), registry)
    jobs.start()
    try:
        job = jobs.submit(JobRequest(kind="predict", folder="set")).job
        wait_until(lambda: jobs.get(job.id).state == "succeeded")
        items = {Path(item.source).name: item for item in jobs.store.items(job.id)}
        assert items["a.jpg"].state == items["b.jpg"].state == "succeeded"
        assert items["b.jpg"].result["prediction"] == items["a.jpg"].result["prediction"]
        assert items["b.jpg"].result["probabilities"] == pytest.approx(items["a.jpg"].result["probabilities"], abs=1e-6)
        assert items["c.jpg"].state == "failed" and "leads outside the data root" in items["c.jpg"].error
    finally:
        jobs.stop()
    # A folder that is itself a link out of the root is refused before its file is opened.
    (root / "away").symlink_to(outside)
    with pytest.raises(InvalidInput, match="leads outside the data root"):
        DataRoot(root).read("away/secret.jpg")
    assert DataRoot(root).read("set/cat/b.jpg") == image.read_bytes()
