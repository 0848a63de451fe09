"""Hot reload under steady load: a new version is swapped in, a corrupt one is refused."""

import shutil
import threading
import time

import httpx

from ..api.helpers import assert_error
from ..servers import start_server

KEY = "reload-key"


def drop_version(source, store, version, corrupt=False):
    """Copy an entry in beside the store and rename it into place, as `mindscope train` writes."""
    staging = store / "cifar10-allcnn" / f".staging-{version}"
    shutil.copytree(source, staging)
    if corrupt:
        model = staging / "model.keras"
        model.write_bytes(model.read_bytes()[:-64])
    staging.rename(store / "cifar10-allcnn" / str(version))


def serving_version(base):
    return httpx.get(f"{base}/models", headers={"X-API-Key": KEY}, timeout=5).json()["default"]["version"]


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_new_versions_swap_in_under_load_and_corrupt_ones_do_not(tmp_path, committed_store, sample_jpeg):
    source = committed_store.entry_dir(committed_store.resolve())
    store = tmp_path / "store"
    shutil.copytree(source, store / "cifar10-allcnn" / "1")
    server = start_server(tmp_path, store, MINDSCOPE_RELOAD_INTERVAL_S="0.5", MINDSCOPE_API_KEY=KEY)
    statuses: list[int] = []
    versions: set[int] = set()
    stop = threading.Event()

    def steady_load():
        with httpx.Client(base_url=server.base_url, headers={"X-API-Key": KEY}, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/predict", content=sample_jpeg, headers={"Content-Type": "image/jpeg"})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.add(response.json()["model"]["version"])

    try:
        server.wait_ready()
        load = threading.Thread(target=steady_load)
        load.start()
        wait_for(lambda: 1 in versions)
        drop_version(source, store, 2)
        wait_for(lambda: serving_version(server.base_url) == 2)
        drop_version(source, store, 3, corrupt=True)
        wait_for(lambda: "refused cifar10-allcnn/3" in server.log.read_text())  # the poller tried it and refused it
        assert "cifar10-allcnn/2 keeps serving" in server.log.read_text()
        assert serving_version(server.base_url) == 2
        refused = httpx.post(f"{server.base_url}/admin/reload", headers={"X-API-Key": KEY})
        assert refused.status_code == 200 and refused.json() == {
            "serving": {"name": "cifar10-allcnn", "version": 2},
            "changed": False,
        }
        assert_error(httpx.post(f"{server.base_url}/admin/reload"), 401, "unauthorized")
        pinned = httpx.post(
            f"{server.base_url}/predict?version=3",
            content=sample_jpeg,
            headers={"Content-Type": "image/jpeg", "X-API-Key": KEY},
        )
        assert_error(pinned, 503, "model_integrity_error")
        count = len(statuses)
        wait_for(lambda: len(statuses) > count + 10)  # the load goes on after the refusal
    finally:
        stop.set()
        server.stop()
    assert statuses and set(statuses) == {200}
    assert versions == {1, 2}


def test_admin_reload_swaps_the_default_and_a_named_model_skips_a_half_copied_version(
    tmp_path, committed_store, sample_jpeg
):
    """No polling: the default changes only through POST /admin/reload (with the key). A model named
    without a version is its newest complete version, found on each request; one still being copied
    (its digests do not match yet) is passed over until the copy is whole."""
    source = committed_store.entry_dir(committed_store.resolve())
    store = tmp_path / "store"
    shutil.copytree(source, store / "cifar10-allcnn" / "1")
    shutil.copytree(source, store / "second" / "1")
    server = start_server(tmp_path, store, MINDSCOPE_API_KEY=KEY, MINDSCOPE_DEFAULT_MODEL="cifar10-allcnn")
    headers = {"X-API-Key": KEY, "Content-Type": "image/jpeg"}

    def predicted_version(query=""):
        response = httpx.post(f"{server.base_url}/predict{query}", content=sample_jpeg, headers=headers, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["model"]["version"]

    try:
        server.wait_ready()
        assert predicted_version() == 1
        drop_version(source, store, 2)
        assert predicted_version() == 1  # the default waits for a reload
        swapped = httpx.post(f"{server.base_url}/admin/reload", headers={"X-API-Key": KEY}, timeout=120)
        assert swapped.status_code == 200
        assert swapped.json() == {"serving": {"name": "cifar10-allcnn", "version": 2}, "changed": True}
        assert predicted_version() == 2 and serving_version(server.base_url) == 2

        assert predicted_version("?model=second") == 1
        # A copy in progress: metadata.json is there, model.keras only half written.
        half = store / "second" / "2"
        shutil.copytree(source, half)
        model = half / "model.keras"
        whole = model.read_bytes()
        model.write_bytes(whole[: len(whole) // 2])
        assert predicted_version("?model=second") == 1
        assert predicted_version("?model=second") == 1
        assert server.log.read_text().count("passing over second/2 until its files change") == 1
        pinned = httpx.post(f"{server.base_url}/predict?model=second&version=2", content=sample_jpeg, headers=headers)
        assert_error(pinned, 503, "model_integrity_error")
        model.write_bytes(whole)  # the copy finishes
        assert predicted_version("?model=second") == 2
    finally:
        server.stop()
