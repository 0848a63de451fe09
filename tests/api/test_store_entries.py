"""Store entries that differ from the shipped ones, served by the app."""

import json
import shutil
import time

from fastapi.testclient import TestClient
from mindscope.app import create_app
from mindscope.config import Settings

from ..conftest import wait_ready
from .helpers import assert_error


def test_a_model_stored_without_initial_weights_serves_everything_but_before(tmp_path, committed_store, sample_jpeg):
    """Histograms of the trained weights by default; `initial` or `both` name what is missing."""
    entry = tmp_path / "store" / "plain" / "1"
    shutil.copytree(committed_store.entry_dir(committed_store.resolve()), entry)
    (entry / "initial.weights.h5").unlink()
    metadata = json.loads((entry / "metadata.json").read_text())
    del metadata["files"]["initial.weights.h5"]
    (entry / "metadata.json").write_text(json.dumps(metadata))
    with TestClient(create_app(Settings(model_store_dir=tmp_path / "store"))) as client:
        wait_ready(client)
        jpeg = {"Content-Type": "image/jpeg"}
        assert client.post("/predict", content=sample_jpeg, headers=jpeg).status_code == 200
        assert (
            client.post("/explain/integrated-gradients?steps=8", content=sample_jpeg, headers=jpeg).status_code == 200
        )
        trained = client.get("/weights/histogram?layers=conv1").json()
        assert trained["stage"] == "trained" and list(trained["histograms"][0]["stages"]) == ["trained"]
        assert client.get("/weights/histogram?format=png&layers=conv1").headers["content-type"] == "image/png"
        for stage in ("initial", "both"):
            error = assert_error(client.get(f"/weights/histogram?stage={stage}"), 404, "initial_weights_missing")
            assert "initial.weights.h5" in error["message"] and error["details"]["valid_stages"] == ["trained"]


def test_an_entry_keras_cannot_run_fails_readiness_and_says_why(tmp_path, committed_store):
    """Metadata that disagrees with the model (a hand-edited input shape): the model loads but
    cannot run. Readiness must say failed, with the reason, not stay "loading" for ever."""
    entry = tmp_path / "store" / "broken" / "1"
    shutil.copytree(committed_store.entry_dir(committed_store.resolve()), entry)
    metadata = json.loads((entry / "metadata.json").read_text())
    metadata["input_shape"] = [28, 28, 1]
    (entry / "metadata.json").write_text(json.dumps(metadata))
    with TestClient(create_app(Settings(model_store_dir=tmp_path / "store"))) as client:
        for _ in range(600):
            ready = client.get("/health/ready").json()
            if ready["status"] != "loading":
                break
            time.sleep(0.1)
        assert ready["status"] == "failed"
        assert "broken/1 cannot be served" in ready["detail"]
