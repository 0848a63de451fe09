"""Shared fixtures: the real CIFAR-10 folder, the committed model, a tiny trained store, an app."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from mindscope.app import create_app
from mindscope.config import Settings
from mindscope.engine.loaded_model import LoadedModel
from mindscope.engine.registry import ModelRegistry
from mindscope.engine.store import ModelStore
from mindscope.training.data import decode_files, list_image_folder, split_validation

from .browser import launched_browser
from .servers import Server, start_server

# Every app and server the tests start keeps its jobs out of the checkout.
os.environ.setdefault("MINDSCOPE_JOBS_DIR", tempfile.mkdtemp(prefix="mindscope-test-jobs-"))

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MINDSCOPE_TEST_DATA", REPO.parent / "shared" / "data" / "cifar10" / "train"))
COMMITTED_STORE = Path(os.environ.get("MINDSCOPE_TEST_STORE", REPO / "model_store"))
COMMITTED_NAME = "cifar10-allcnn"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"the CIFAR-10 image folder is missing at {DATA}; set MINDSCOPE_TEST_DATA")
    return DATA


@pytest.fixture(scope="session")
def validation_sample(data_dir: Path) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """200 images of the committed model's held-out validation split: (uint8 images, labels, paths)."""
    paths, labels, _ = list_image_folder(data_dir)
    _, val_idx = split_validation(len(paths), 5000, seed=0)
    chosen = np.random.default_rng(1).choice(val_idx, 200, replace=False)
    chosen_paths = [paths[i] for i in chosen]
    return decode_files(chosen_paths), labels[chosen], chosen_paths


@pytest.fixture(scope="session")
def committed_store() -> ModelStore:
    return ModelStore(COMMITTED_STORE)


@pytest.fixture(scope="session")
def committed_model(committed_store: ModelStore) -> LoadedModel:
    return ModelRegistry(committed_store).get(COMMITTED_NAME)


@pytest.fixture(scope="session")
def sample_jpeg(validation_sample: tuple[np.ndarray, np.ndarray, list[Path]]) -> bytes:
    return validation_sample[2][0].read_bytes()


def wait_ready(client: TestClient, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/health/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(client.get("/health/ready").json())
        time.sleep(0.1)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`mindscope serve` over the committed model store, shared by the e2e and SDK tests."""
    running = start_server(tmp_path_factory.mktemp("server"), COMMITTED_STORE)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def client() -> Iterator[TestClient]:
    """The app in process, over the committed model store."""
    with TestClient(create_app(Settings(model_store_dir=COMMITTED_STORE))) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium, one a module (tests/browser.py)."""
    yield from launched_browser()
