"""What the jobs tests share: a real server (uvicorn on loopback, the committed model) with a jobs
folder of its own and a data root, a client of it, and waiting for a job to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mindscope.config import Settings

from tests.conftest import COMMITTED_STORE
from tests.servers import InProcessServer, wait_until


def jobs_server(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[InProcessServer]:
    jobs_dir = tmp_path_factory.mktemp("jobs")
    settings = Settings(model_store_dir=COMMITTED_STORE, jobs_dir=jobs_dir, data_root=data_root, grpc_port=0)
    with InProcessServer(settings) as running:
        yield running


def client_of(server: InProcessServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        yield client


def finished(http: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    wait_until(
        lambda: http.get(f"/jobs/{job_id}").json()["state"] in ("succeeded", "failed", "cancelled"), timeout=timeout
    )
    return http.get(f"/jobs/{job_id}").json()
