"""The jobs tests' server: a real uvicorn on loopback with the committed model, a jobs folder of its
own, and the data root each test module builds (its `data_root` fixture); one per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mindscope.config import Settings

from tests.conftest import COMMITTED_STORE
from tests.servers import InProcessServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[InProcessServer]:
    jobs_dir = tmp_path_factory.mktemp("jobs")
    settings = Settings(model_store_dir=COMMITTED_STORE, jobs_dir=jobs_dir, data_root=data_root, grpc_port=0)
    with InProcessServer(settings) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: InProcessServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        yield client
