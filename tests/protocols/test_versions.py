"""One version parser for every protocol: REST and gRPC refuse "0" (and any non-number) alike."""

import httpx
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

MODEL = "cifar10-allcnn"


@pytest.mark.parametrize("version", ["0", "x1", "-1"])
def test_rest_and_grpc_refuse_a_version_that_is_not_a_positive_integer_alike(server, version):
    rest = httpx.get(f"{server.base_url}/v2/models/{MODEL}/versions/{version}")
    assert rest.status_code == 404
    message = rest.json()["error"]
    assert message == f"model versions are positive integers; got {version!r}"
    client = triton.InferenceServerClient(server.grpc_address)
    try:
        with pytest.raises(InferenceServerException) as refused:
            client.get_model_metadata(MODEL, model_version=version)
        assert refused.value.status() == "StatusCode.NOT_FOUND"
        assert refused.value.message() == message
    finally:
        client.close()
