"""A request's model work has one deadline, counted from its arrival, for all of its compiled calls."""

from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from mindscope.app import create_app
from mindscope.config import Settings

from ..conftest import COMMITTED_STORE, wait_ready
from ..servers import ModelGate
from .helpers import assert_error

JPEG = {"Content-Type": "image/jpeg"}


def test_work_past_the_request_deadline_is_dropped_with_504(sample_jpeg):
    settings = Settings(model_store_dir=COMMITTED_STORE, request_timeout_s=0.5, internal_batch_size=32)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        with ModelGate(client.app.state.registry.get().gradient_batcher) as gate, ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                client.post,
                "/explain/integrated-gradients?steps=1024&method=riemann_trapezoid&target=0",
                content=sample_jpeg,
                headers=JPEG,
            )
            gate.wait_entered()
            # The model is held on the first of 33 chunks: the answer can only come from the deadline.
            error = assert_error(pending.result(timeout=120), 504, "deadline_exceeded")
            gate.open()
        assert error["details"]["timeout_s"] == 0.5 and "fewer steps" in error["message"]
        assert len(gate.calls) == 1  # the first batch (of up to 4 chunks of 32); none started after the deadline
        assert client.post("/predict", content=sample_jpeg, headers=JPEG).status_code == 200
