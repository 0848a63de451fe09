"""A request's model work has one deadline, counted from its arrival, for all of its compiled calls."""

import time

from fastapi.testclient import TestClient
from mindscope.app import create_app
from mindscope.config import Settings

from ..conftest import COMMITTED_STORE, wait_ready
from .helpers import assert_error

JPEG = {"Content-Type": "image/jpeg"}


def test_work_past_the_request_deadline_is_dropped_with_504(sample_jpeg):
    settings = Settings(model_store_dir=COMMITTED_STORE, request_timeout_s=0.5, internal_batch_size=32)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        gradients = client.app.state.registry.get().gradient_batcher.stats
        rows_before = gradients.rows
        start = time.perf_counter()
        response = client.post(
            "/explain/integrated-gradients?steps=1024&method=riemann_trapezoid", content=sample_jpeg, headers=JPEG
        )
        elapsed = time.perf_counter() - start
        error = assert_error(response, 504, "deadline_exceeded")
        assert error["details"]["timeout_s"] == 0.5 and "fewer steps" in error["message"]
        # Each of the 33 chunks is a call of its own; the deadline covers them all, not each one.
        assert elapsed < 3.0
        assert gradients.rows - rows_before < 1027
        assert client.post("/predict", content=sample_jpeg, headers=JPEG).status_code == 200
        short = client.post("/explain/integrated-gradients?steps=16", content=sample_jpeg, headers=JPEG)
        assert short.status_code == 200
