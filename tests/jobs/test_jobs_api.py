"""Jobs on a real server (uvicorn on loopback, the committed model): submit a folder, an archive or
images; follow progress (JSON, SSE); read results (JSON, CSV, Parquet, zip, items like the
synchronous routes); cancel; the refusals that must leave nothing behind."""

from __future__ import annotations

import base64
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.api.helpers import array_of
from tests.jobs.helpers import finished
from tests.servers import InProcessServer, wait_until

CLASSES = ("airplane", "cat", "ship")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """Three images of three classes in class-named folders, and a file that is not an image."""
    root = tmp_path_factory.mktemp("data-root")
    for name in CLASSES:
        (root / "val" / name).mkdir(parents=True)
        for path in sorted((data_dir / name).iterdir())[:3]:
            shutil.copy(path, root / "val" / name / path.name)
    (root / "val" / "cat" / "notes.txt").write_text("not an image")
    (root / "elsewhere").mkdir()
    return root


def jobs_on_disk(server: InProcessServer) -> set[str]:
    folder = server.app.state.settings.jobs_dir
    return {p.name for p in folder.iterdir() if p.is_dir()}


IG = {"kind": "explain", "method": "integrated-gradients", "parameters": {"steps": 16, "evaluate": "deletion"}}


@pytest.fixture(scope="module")
def folder_job(http: httpx.Client) -> dict:
    response = http.post("/jobs", json={**IG, "folder": "val"})
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/jobs/{response.json()['id']}"
    return finished(http, response.json()["id"])


def test_a_folder_job_explains_every_image_labels_them_by_folder_and_reports_the_bad_file(http, folder_job, data_root):
    job = folder_job
    assert job["state"] == "succeeded" and job["items"] == {"total": 10, "done": 9, "failed": 1, "queued": 0}
    assert job["model"]["version"] >= 1 and job["rate"] > 0
    assert [e["source"] for e in job["errors"]] == ["val/cat/notes.txt"]
    assert "not an image" in job["errors"][0]["error"]
    rows = http.get(f"/jobs/{job['id']}/results").json()["rows"]
    assert [r["source"] for r in rows] == sorted(
        str(p.relative_to(data_root)) for p in (data_root / "val").rglob("*") if p.is_file()
    )
    good = [r for r in rows if r["state"] == "succeeded"]
    assert {r["label"] for r in good} == set(CLASSES)
    assert all(r["correct"] == (r["label"] == r["prediction"]) for r in good)
    assert all(0 <= r["deletion_area"] <= 1 and r["completeness_error"] < 0.5 for r in good)


def test_an_item_answers_as_the_synchronous_route_does(http, folder_job, data_root):
    rows = http.get(f"/jobs/{folder_job['id']}/results").json()["rows"]
    first = rows[0]
    item = http.get(f"/jobs/{folder_job['id']}/items/0").json()
    sync = http.post(
        "/explain/integrated-gradients?steps=16&evaluate=deletion",
        content=(data_root / first["source"]).read_bytes(),
        headers={"Content-Type": "image/jpeg"},
    ).json()
    np.testing.assert_allclose(array_of(item["attributions"]), array_of(sync["attributions"]), rtol=1e-5, atol=1e-7)
    assert item["target"] == sync["target"] and item["evaluation"]["deletion"]["area"] == pytest.approx(
        sync["evaluation"]["deletion"]["area"], abs=1e-6
    )
    stored = np.load(io.BytesIO(http.get(f"/jobs/{folder_job['id']}/items/0/map").content))
    np.testing.assert_array_equal(stored, array_of(item["attributions"]))
    png = http.get(f"/jobs/{folder_job['id']}/items/0?format=png")
    assert png.headers["content-type"] == "image/png" and png.headers["x-ig-steps"] == "16"
    failed = http.get(f"/jobs/{folder_job['id']}/items/{[r['n'] for r in rows if r['error']][0]}")
    assert failed.status_code == 422 and "not an image" in failed.json()["error"]["message"]
    assert http.get(f"/jobs/{folder_job['id']}/items/99").json()["error"]["code"] == "item_not_found"


def test_results_as_csv_parquet_and_a_zip_hold_the_same_rows_and_maps(http, folder_job):
    base = f"/jobs/{folder_job['id']}/results"
    rows = http.get(base).json()["rows"]
    table = pq.read_table(io.BytesIO(http.get(base, params={"format": "parquet"}).content)).to_pylist()
    assert [r["source"] for r in table] == [r["source"] for r in rows]
    assert [r["deletion_area"] for r in table] == [r["deletion_area"] for r in rows]
    csv = http.get(base, headers={"Accept": "text/csv"})
    assert csv.headers["content-type"].startswith("text/csv") and len(csv.text.strip().splitlines()) == 11
    archive = zipfile.ZipFile(io.BytesIO(http.get(base, params={"format": "zip"}).content))
    maps = sorted(name for name in archive.namelist() if name.startswith("maps/"))
    assert len(maps) == 9 and {"job.json", "results.parquet", "results.csv"} <= set(archive.namelist())
    first = next(r for r in rows if r["map"])
    np.testing.assert_array_equal(
        np.load(io.BytesIO(archive.read(first["map"]))),
        np.load(io.BytesIO(http.get(f"/jobs/{folder_job['id']}/items/{first['n']}/map").content)),
    )


def test_a_predict_job_of_images_answers_what_predict_answers(http, data_root):
    images = sorted((data_root / "val" / "ship").iterdir())
    instances = [{"b64": base64.b64encode(p.read_bytes()).decode()} for p in images]
    response = http.post("/jobs", json={"kind": "predict", "instances": instances})
    assert response.status_code == 202, response.text
    job = finished(http, response.json()["id"])
    rows = http.get(f"/jobs/{job['id']}/results").json()["rows"]
    direct = http.post("/predict", json={"instances": instances}).json()["predictions"]
    assert [r["prediction"] for r in rows] == [p["label"] for p in direct]
    np.testing.assert_allclose([r["confidence"] for r in rows], [p["confidence"] for p in direct], rtol=1e-5)
    item = http.get(f"/jobs/{job['id']}/items/1").json()
    assert item["label"] == direct[1]["label"] and item["input"]["format"] == "JPEG"


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_an_uploaded_zip_or_tar_runs_with_labels_from_its_folders(http, data_root):
    members = {f"{c}/{p.name}": p.read_bytes() for c in CLASSES for p in sorted((data_root / "val" / c).glob("*.jpg"))}
    response = http.post(
        "/jobs", files={"archive": ("set.zip", _zip(members), "application/zip")}, data={"job": json.dumps(IG)}
    )
    assert response.status_code == 202, response.text
    job = finished(http, response.json()["id"])
    assert job["source"] == "archive" and job["items"]["done"] == 9
    rows = http.get(f"/jobs/{job['id']}/results").json()["rows"]
    assert [r["label"] for r in rows] == [name.split("/")[0] for name in sorted(members)]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    raw = http.post(
        "/jobs", params={"kind": "predict"}, content=buffer.getvalue(), headers={"Content-Type": "application/gzip"}
    )
    assert raw.status_code == 202, raw.text
    assert finished(http, raw.json()["id"])["items"]["done"] == 9


@pytest.mark.parametrize(
    ("archive", "status", "code"),
    [
        (_zip({"../escape.jpg": b"x"}), 422, "unsafe_archive"),
        (_zip({"/etc/cron.d/job.jpg": b"x"}), 422, "unsafe_archive"),
        (_zip({"ok/a.jpg": b"x", "ok/../../b.jpg": b"x"}), 422, "unsafe_archive"),
        (b"PK\x03\x04 this is no archive", 422, "invalid_input"),
    ],
    ids=["dot-dot", "absolute", "nested-dot-dot", "garbage"],
)
def test_unsafe_archives_are_refused_before_anything_is_stored(http, server, archive, status, code):
    before_jobs, before_disk = len(http.get("/jobs").json()["jobs"]), jobs_on_disk(server)
    response = http.post(
        "/jobs", params={"kind": "predict"}, content=archive, headers={"Content-Type": "application/zip"}
    )
    assert response.status_code == status and response.json()["error"]["code"] == code, response.text
    assert len(http.get("/jobs").json()["jobs"]) == before_jobs and jobs_on_disk(server) == before_disk


def test_links_in_a_tar_are_refused(http, server):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        link = tarfile.TarInfo("cat/a.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    before = jobs_on_disk(server)
    response = http.post(
        "/jobs", params={"kind": "predict"}, content=buffer.getvalue(), headers={"Content-Type": "application/x-tar"}
    )
    assert response.status_code == 422 and "link" in response.json()["error"]["message"]
    assert jobs_on_disk(server) == before


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({**IG, "method": "no-such-method", "folder": "val"}, 404, "unknown_method"),
        ({**IG, "model": "no-such-model", "folder": "val"}, 404, "model_not_found"),
        ({**IG, "parameters": {"steps": 10**6}, "folder": "val"}, 422, "invalid_input"),
        ({**IG, "parameters": {"stepz": 3}, "folder": "val"}, 422, "invalid_input"),
        ({**IG, "parameters": {"target": "unicorn"}, "folder": "val"}, 422, "unknown_class"),
        ({**IG, "folder": "../"}, 422, "invalid_input"),
        ({**IG, "folder": "/etc"}, 422, "invalid_input"),
        ({**IG, "folder": "elsewhere"}, 422, "invalid_input"),
        ({**IG}, 422, "invalid_input"),
        ({"kind": "predict", "method": "grad-cam", "folder": "val"}, 422, "invalid_input"),
        ({"kind": "train", "folder": "val"}, 422, "invalid_input"),
    ],
    ids=[
        "method",
        "model",
        "steps-cap",
        "unknown-parameter",
        "target",
        "escape",
        "absolute",
        "empty",
        "no-source",
        "predict-method",
        "kind",
    ],
)
def test_bad_jobs_are_refused_at_submit_with_the_synchronous_routes_errors(http, server, body, status, code):
    before = jobs_on_disk(server), len(http.get("/jobs").json()["jobs"])
    response = http.post("/jobs", json=body)
    assert response.status_code == status and response.json()["error"]["code"] == code, response.text
    assert (jobs_on_disk(server), len(http.get("/jobs").json()["jobs"])) == before


def test_an_idempotency_key_answers_the_same_job_and_refuses_other_work(http):
    body = {"kind": "predict", "folder": "val/ship"}
    first = http.post("/jobs", json=body, headers={"Idempotency-Key": "retry-me"})
    again = http.post("/jobs", json=body, headers={"Idempotency-Key": "retry-me"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = http.post("/jobs", json={"kind": "predict", "folder": "val/cat"}, headers={"Idempotency-Key": "retry-me"})
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert len([j for j in http.get("/jobs").json()["jobs"] if j["id"] == first.json()["id"]]) == 1


def test_events_stream_progress_until_the_job_ends(http):
    # 256 steps an image: the job outlasts the stream's start on a machine several times this one's speed.
    job = http.post("/jobs", json={**IG, "parameters": {"steps": 256}, "folder": "val"}).json()
    events = []
    with http.stream("GET", f"/jobs/{job['id']}/events", params={"interval_s": 0.05}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((kind, json.loads(line.split(":", 1)[1])))
    assert events[-1][0] == "end" and events[-1][1]["state"] == "succeeded"
    progress = [e["items"]["done"] + e["items"]["failed"] for _, e in events]
    assert progress == sorted(progress) and progress[-1] == 10 and len(set(progress)) >= 2


def test_cancelling_withdraws_the_queued_items_and_keeps_the_finished(http):
    slow = {"kind": "explain", "method": "integrated-gradients", "parameters": {"steps": 1024}, "folder": "val"}
    job = http.post("/jobs", json=slow).json()
    wait_until(lambda: http.get(f"/jobs/{job['id']}").json()["state"] == "running")
    cancelled = http.delete(f"/jobs/{job['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    after = finished(http, job["id"])
    rows = http.get(f"/jobs/{job['id']}/results").json()["rows"]
    assert after["state"] == "cancelled" and any(r["state"] == "cancelled" for r in rows)
    assert after["items"]["done"] == sum(r["state"] == "succeeded" for r in rows) < 10
    assert http.delete(f"/jobs/{job['id']}").status_code == 204  # a finished job: deleted
    assert http.get(f"/jobs/{job['id']}").json()["error"]["code"] == "job_not_found"


def test_prefer_respond_async_turns_an_explanation_into_a_job(http, data_root):
    image = sorted((data_root / "val" / "airplane").iterdir())[0].read_bytes()
    query = "/explain/grad-cam?target=ship"
    response = http.post(query, content=image, headers={"Content-Type": "image/jpeg", "Prefer": "respond-async"})
    assert response.status_code == 202 and response.headers["location"].startswith("/jobs/")
    job = finished(http, response.json()["id"])
    assert job["parameters"] == {"target": "ship"} and job["items"]["done"] == 1
    later = http.get(f"{response.headers['location']}/items/0").json()
    now = http.post(query, content=image, headers={"Content-Type": "image/jpeg"}).json()
    assert later["target"] == now["target"] == {"index": 8, "label": "ship"}
    np.testing.assert_allclose(array_of(later["attributions"]), array_of(now["attributions"]), rtol=1e-5, atol=1e-7)


def test_jobs_show_in_metrics(server, folder_job):
    assert server.metric('mindscope_jobs{state="succeeded"}') >= 1
    assert server.metric('mindscope_job_items_total{outcome="failed"}') >= 1
    assert server.metric("mindscope_jobs_bytes") > 0


def test_the_sdk_submits_follows_reads_and_cancels_sync_and_async(server, data_root):
    import asyncio

    from mindscope_client import AsyncClient, Client
    from mindscope_client._exceptions import NotFound

    with Client(server.base_url) as client:
        job = client.jobs.submit("predict", folder="val/ship")
        assert job.wait(progress=True).state["state"] == "succeeded"
        table = job.results()
        assert list(table["source"]) == sorted(f"val/ship/{p.name}" for p in (data_root / "val" / "ship").iterdir())
        assert client.jobs.get(job.id).state["items"]["done"] == 3
        slow = client.jobs.submit(method="integrated-gradients", parameters={"steps": 1024}, folder="val")
        assert slow.cancel().state["state"] == "cancelled"
        with pytest.raises(NotFound):
            client.jobs.get("no-such-job")

    async def scenario() -> tuple[dict, dict]:
        async with AsyncClient(server.base_url) as client:
            job = await client.jobs.submit(method="grad-cam", folder="val/airplane")
            await job.wait(poll_s=0.05)
            return job.state, await job.maps()

    state, maps = asyncio.run(scenario())
    assert state["state"] == "succeeded" and sorted(maps) == [0, 1, 2]
    assert all(m.shape == (32, 32, 1) for m in maps.values())
