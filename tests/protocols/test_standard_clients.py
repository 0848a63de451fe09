"""The standard protocols, driven against a real `mindscope serve` by clients nobody here wrote:
tritonclient (HTTP and gRPC) and the kserve package. Every answer must equal the native API's
(`/predict`, `/activations`) for the same image within float32 rounding."""

import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from ..servers import start_server

MODEL = "cifar10-allcnn"
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
KSERVE_CALLS = Path(__file__).with_name("kserve_calls.py")


@pytest.fixture(scope="module")
def pixels(validation_sample):
    """16 held-out images as float32 in [0, 1]: the committed models' input range."""
    return (validation_sample[0][:16].astype(np.float32) / 255).astype(np.float32)


def native_probabilities(server, images: np.ndarray, model: str = MODEL) -> np.ndarray:
    body = {"instances": images.tolist(), "value_range": "0-1"}
    answer = httpx.post(f"{server.base_url}/predict?model={model}", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return np.array([p["probabilities"]["data"] for p in answer.json()["predictions"]], np.float32)


def native_activations(server, image: np.ndarray, layer: str, channels: int) -> np.ndarray:
    query = [("channels", str(c)) for c in range(channels)]
    body = {"instances": [image.tolist()], "value_range": "0-1"}
    answer = httpx.post(f"{server.base_url}/activations/{layer}?model={MODEL}", params=query, json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    payload = answer.json()["activations"]
    return np.array(payload["data"], np.float32).reshape(payload["shape"])


@pytest.fixture(params=["http", "grpc"])
def triton(request, server):
    if request.param == "http":
        client = triton_http.InferenceServerClient(server.base_url.removeprefix("http://"))
    else:
        client = triton_grpc.InferenceServerClient(server.grpc_address)
    yield request.param, client
    client.close()


def _input(kind, images, binary: bool, datatype: str = "FP32"):
    module = triton_http if kind == "http" else triton_grpc
    tensor = module.InferInput("image", list(images.shape), datatype)
    if kind == "http":
        tensor.set_data_from_numpy(images, binary_data=binary)
    else:
        tensor.set_data_from_numpy(images)
    return tensor


def _output(kind, name: str, binary: bool):
    if kind == "http":
        return triton_http.InferRequestedOutput(name, binary_data=binary)
    return triton_grpc.InferRequestedOutput(name)


def test_triton_health_and_metadata(triton):
    kind, client = triton
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "3")
    assert not client.is_model_ready("no-such-model")
    metadata = client.get_model_metadata(MODEL)
    if kind == "grpc":
        metadata = {
            "name": metadata.name,
            "versions": list(metadata.versions),
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in metadata.inputs],
            "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in metadata.outputs],
        }
    assert metadata["name"] == MODEL and metadata["versions"] == ["1", "2", "3", "4"]
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 32, 32, 3]}]
    outputs = {t["name"]: t["shape"] for t in metadata["outputs"]}
    assert outputs["probabilities"] == [-1, 10] and outputs["conv3"] == [-1, 32, 32, 32]
    assert outputs["conv9"] == [-1, 8, 8, 10] and len(outputs) == 10


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("batch", [1, 16])
def test_triton_infer_equals_native_predict(triton, server, pixels, binary, batch):
    kind, client = triton
    images = pixels[:batch]
    result = client.infer(MODEL, [_input(kind, images, binary)], outputs=[_output(kind, "probabilities", binary)])
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (batch, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, native_probabilities(server, images), **TOLERANCE)


def test_triton_infer_equals_keras_itself(triton, pixels, committed_model):
    """Not only the same server's /predict: the committed model run by Keras in this process."""
    import keras

    kind, client = triton
    outputs = [_output(kind, "probabilities", True), _output(kind, "conv6", True)]
    result = client.infer(MODEL, [_input(kind, pixels[:4], True)], outputs=outputs)
    model = committed_model.model
    expected = np.asarray(model(pixels[:4], training=False))
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-4, atol=1e-5)
    tapped = keras.Model(model.input, model.get_layer("conv6").output)
    np.testing.assert_allclose(
        result.as_numpy("conv6"), np.asarray(tapped(pixels[:4], training=False)), rtol=1e-4, atol=1e-4
    )


def test_triton_reads_any_layer_as_an_output(triton, server, pixels):
    kind, client = triton
    outputs = [_output(kind, "probabilities", True), _output(kind, "conv3", True)]
    result = client.infer(MODEL, [_input(kind, pixels[:2], True)], outputs=outputs, model_version="4")
    conv3 = result.as_numpy("conv3")
    assert conv3.shape == (2, 32, 32, 32)
    for row in range(2):
        np.testing.assert_allclose(conv3[row], native_activations(server, pixels[row], "conv3", 32), **TOLERANCE)
    np.testing.assert_allclose(result.as_numpy("probabilities"), native_probabilities(server, pixels[:2]), **TOLERANCE)


def test_triton_uint8_pixels_and_encoded_images_equal_native_predict(triton, server, validation_sample):
    """UINT8 [N, H, W, C] pixels, and BYTES [N] holding the JPEG files as they are on disk."""
    kind, client = triton
    uint8 = validation_sample[0][:4]
    result = client.infer(MODEL, [_input(kind, uint8, True, "UINT8")])
    expected = native_probabilities(server, uint8.astype(np.float32) / 255)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, **TOLERANCE)

    jpegs = [path.read_bytes() for path in validation_sample[2][:3]]
    encoded = np.array(jpegs, dtype=np.object_)
    result = client.infer(MODEL, [_input(kind, encoded, True, "BYTES")])
    for row, jpeg in zip(result.as_numpy("probabilities"), jpegs, strict=True):
        answer = httpx.post(f"{server.base_url}/predict", content=jpeg, headers={"Content-Type": "image/jpeg"})
        np.testing.assert_allclose(row, answer.json()["probabilities"]["data"], **TOLERANCE)


def test_triton_errors_say_what_was_wrong(triton, pixels):
    kind, client = triton
    with pytest.raises(InferenceServerException, match="no model named 'nope'"):
        client.infer("nope", [_input(kind, pixels[:1], True)])
    wrong = _input(kind, pixels[:1, :16, :16], True)
    with pytest.raises(InferenceServerException, match=r"shape \[-1, 32, 32, 3\]"):
        client.infer(MODEL, [wrong])
    with pytest.raises(InferenceServerException, match="no output 'conv42'"):
        client.infer(MODEL, [_input(kind, pixels[:1], True)], outputs=[_output(kind, "conv42", True)])


def test_the_api_key_guards_both_transports_as_it_guards_our_routes(tmp_path, committed_store, pixels):
    """With MINDSCOPE_API_KEY set, gRPC wants it as metadata and the V2 routes as a header; the
    health calls stay open, as /health/* do."""
    key = "k" * 24
    running = start_server(tmp_path, committed_store.root, MINDSCOPE_API_KEY=key)
    try:
        running.wait_ready()
        for client in (
            triton_http.InferenceServerClient(running.base_url.removeprefix("http://")),
            triton_grpc.InferenceServerClient(running.grpc_address),
        ):
            kind = "http" if isinstance(client, triton_http.InferenceServerClient) else "grpc"
            assert client.is_server_live() and client.is_server_ready()
            with pytest.raises(InferenceServerException, match="API key"):
                client.infer(MODEL, [_input(kind, pixels[:1], True)])
            result = client.infer(MODEL, [_input(kind, pixels[:1], True)], headers={"authorization": f"Bearer {key}"})
            assert result.as_numpy("probabilities").shape == (1, 10)
            client.close()
        refused = httpx.get(f"{running.base_url}/v1/models/{MODEL}")
        assert refused.status_code == 401 and "API key" in refused.json()["error"]
        # gRPC calls count in the same metrics as HTTP requests, by method and status.
        metrics = httpx.get(f"{running.base_url}/metrics", headers={"X-API-Key": key}).text
        assert 'route="grpc:ModelInfer",status="OK"' in metrics
        assert 'route="grpc:ModelInfer",status="UNAUTHENTICATED"' in metrics
    finally:
        assert running.stop() == 0
    # gRPC stopped with the server.
    with pytest.raises(InferenceServerException):
        triton_grpc.InferenceServerClient(running.grpc_address).is_server_live(client_timeout=5)


def test_the_kserve_client_speaks_v1_and_v2(server, pixels, validation_sample):
    """The kserve package's REST client, in its own process: it and tritonclient.grpc both register
    `inference.*` protobuf messages, which one process cannot hold twice."""
    request = {"base_url": server.base_url, "model": MODEL, "pixels": pixels[:2].tolist()}
    run = subprocess.run(
        [sys.executable, str(KSERVE_CALLS)], input=json.dumps(request), capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    answers = json.loads(run.stdout)
    assert all(answers[key] is True for key in ("server_live", "server_ready", "model_ready_v1", "model_ready_v2"))
    expected = native_probabilities(server, pixels[:2])
    np.testing.assert_allclose(np.array(answers["v1_predictions"], np.float32), expected, **TOLERANCE)
    np.testing.assert_allclose(np.array(answers["v2_probabilities"], np.float32), expected, **TOLERANCE)
    explanation = answers["v1_explain"]
    np.testing.assert_allclose(np.array(explanation["predictions"], np.float32), expected[:1], **TOLERANCE)
    (ig,) = explanation["explanations"]
    assert ig["method"] == "gauss_legendre" and ig["completeness"]["relative_delta"] < 0.01
    assert answers["v1_unknown_model"].startswith("no model named")


def test_tf_serving_row_columnar_and_b64_bodies_equal_native_predict(server, pixels, validation_sample):
    url = f"{server.base_url}/v1/models/{MODEL}"
    expected = native_probabilities(server, pixels[:3])
    rows = httpx.post(f"{url}:predict", json={"instances": pixels[:3].tolist()}).json()
    np.testing.assert_allclose(np.array(rows["predictions"], np.float32), expected, **TOLERANCE)
    named = httpx.post(f"{url}/versions/4:predict", json={"instances": [{"image": p.tolist()} for p in pixels[:3]]})
    np.testing.assert_allclose(np.array(named.json()["predictions"], np.float32), expected, **TOLERANCE)
    columnar = httpx.post(f"{url}:predict", json={"signature_name": "serving_default", "inputs": pixels[:3].tolist()})
    np.testing.assert_allclose(np.array(columnar.json()["outputs"], np.float32), expected, **TOLERANCE)
    jpeg = validation_sample[2][0].read_bytes()
    b64 = httpx.post(f"{url}:predict", json={"instances": [{"b64": base64.b64encode(jpeg).decode()}]})
    native = httpx.post(f"{server.base_url}/predict", content=jpeg, headers={"Content-Type": "image/jpeg"}).json()
    np.testing.assert_allclose(b64.json()["predictions"][0], native["probabilities"]["data"], **TOLERANCE)
    status = httpx.get(url).json()
    assert status["model_version_status"][0] == {
        "version": "4",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }
    signature = httpx.get(f"{url}/metadata").json()["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert [d["size"] for d in signature["inputs"]["image"]["tensor_shape"]["dim"]] == ["-1", "32", "32", "3"]


FP16 = {"name": "image", "shape": [1], "datatype": "FP16"}


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/v1/models/nope:predict", {"instances": [[0]]}, 404, "no model named"),
        (f"/v1/models/{MODEL}:predict", {"instances": [[[0.5]]]}, 422, "shape"),
        (f"/v1/models/{MODEL}:predict", {"rows": []}, 422, "instances"),
        (f"/v1/models/{MODEL}:predict", {"instances": [{"b64": "%%%"}]}, 422, "base64"),
        (f"/v1/models/{MODEL}:predict", {"instances": [{"pixels": [0]}]}, 422, "one input, 'image'"),
        (f"/v1/models/{MODEL}:explain", {"instances": [np.zeros((32, 32, 3)).tolist()], "method": "nope"}, 404, "no"),
        (f"/v2/models/{MODEL}/infer", {"inputs": []}, 422, "inputs"),
        (f"/v2/models/{MODEL}/infer", {"inputs": [{**FP16, "data": [0]}]}, 422, "FP16"),
        (f"/v2/models/{MODEL}/versions/9/infer", {}, 404, "no version 9"),
        ("/v2/nowhere", None, 404, "no route"),
    ],
)
def test_protocol_errors_answer_in_the_protocols_shape(server, path, body, status, says):
    url = server.base_url + path
    answer = httpx.post(url, json=body) if body is not None else httpx.get(url)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert isinstance(error, str) and says in error


def test_model_work_past_the_deadline_is_refused_on_every_protocol(tmp_path, committed_store, pixels):
    """REQUEST_TIMEOUT_S bounds the standard protocols' model work as it bounds our routes': here
    a deadline no batch can meet, so V1, V2 REST and gRPC all answer it with our message."""
    running = start_server(tmp_path, committed_store.root, MINDSCOPE_REQUEST_TIMEOUT_S="0.0001")
    try:
        running.wait_ready()
        url = f"{running.base_url}/v1/models/{MODEL}:predict"
        late = httpx.post(url, json={"instances": pixels[:1].tolist()})
        assert late.status_code == 504 and "longer than" in late.json()["error"]
        explain = f"{running.base_url}/v1/models/{MODEL}:explain"  # the runner works within the caller's deadline
        late = httpx.post(explain, json={"instances": pixels[:1].tolist(), "method": "vanilla-gradients"})
        assert late.status_code == 504 and "longer than" in late.json()["error"]
        http = triton_http.InferenceServerClient(running.base_url.removeprefix("http://"))
        with pytest.raises(InferenceServerException, match="longer than"):
            http.infer(MODEL, [_input("http", pixels[:1], True)])
        grpc = triton_grpc.InferenceServerClient(running.grpc_address)
        with pytest.raises(InferenceServerException, match=r"DEADLINE_EXCEEDED.*longer than"):
            grpc.infer(MODEL, [_input("grpc", pixels[:1], True)])
        assert grpc.is_server_ready()  # and the service goes on
    finally:
        running.stop()


def test_v2_json_takes_base64_images_and_binary_data_output_returns_every_output_binary(server, validation_sample):
    """The two forms no client library above sends: BYTES as base64 strings in JSON, and the
    request-wide `binary_data_output` parameter."""
    jpeg = validation_sample[2][1].read_bytes()
    native = httpx.post(f"{server.base_url}/predict", content=jpeg, headers={"Content-Type": "image/jpeg"}).json()
    body = {
        "id": "req-7",
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(jpeg).decode()]}],
        "outputs": [{"name": "probabilities"}, {"name": "conv9"}],
        "parameters": {"binary_data_output": True},
    }
    answer = httpx.post(f"{server.base_url}/v2/models/{MODEL}/infer", json=body)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/octet-stream"
    length = int(answer.headers["inference-header-content-length"])
    header, blobs = json.loads(answer.content[:length]), answer.content[length:]
    assert header["id"] == "req-7" and header["model_version"] == "4"
    probabilities, conv9 = header["outputs"]
    assert probabilities["parameters"]["binary_data_size"] == 40 and conv9["shape"] == [1, 8, 8, 10]
    assert len(blobs) == 40 + conv9["parameters"]["binary_data_size"] == 40 + 640 * 4
    np.testing.assert_allclose(np.frombuffer(blobs[:40], "<f4"), native["probabilities"]["data"], **TOLERANCE)
    # Answered ahead of FastAPI's routing (api/v2_fast_path.py), yet logged and counted under its route.
    metrics = httpx.get(f"{server.base_url}/metrics").text
    assert 'route="/v2/models/{name}/infer",status="200"' in metrics
