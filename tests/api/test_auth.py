"""With an API key set, everything but health needs it."""

import pytest
from fastapi.testclient import TestClient
from mindscope.app import create_app
from mindscope.config import Settings

from ..conftest import COMMITTED_STORE, wait_ready
from .helpers import assert_error

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def secured():
    with TestClient(create_app(Settings(model_store_dir=COMMITTED_STORE, api_key=KEY))) as test_client:
        wait_ready(test_client)
        yield test_client


def test_health_is_open_and_the_rest_needs_the_key(secured, sample_jpeg):
    assert secured.get("/health/live").status_code == 200
    assert secured.get("/health/ready").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]}):
        response = secured.get("/models", headers=headers)
        error = assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert KEY not in str(error)
    assert secured.get("/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    response = secured.post("/predict", content=sample_jpeg, headers={"X-API-Key": KEY, "Content-Type": "image/jpeg"})
    assert response.status_code == 200
    for query in ("", "?format=json"):  # answered in front of FastAPI's routing, and by the route
        response = secured.post(f"/predict{query}", content=sample_jpeg, headers={"Content-Type": "image/jpeg"})
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
