"""One error envelope everywhere, with the right status codes."""

import io

from mindscope.config import Settings
from PIL import Image

from .helpers import assert_error, encode

JPEG = {"Content-Type": "image/jpeg"}


def test_unknown_layer_lists_valid_layers(client, sample_jpeg):
    error = assert_error(client.post("/activations/conv42", content=sample_jpeg, headers=JPEG), 404, "unknown_layer")
    assert error["details"]["valid_layers"] == [f"conv{i}" for i in range(1, 10)]


def test_framework_errors_use_the_envelope(client):
    assert_error(client.get("/no/such/route"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")
    error = assert_error(client.get("/weights/histogram?bins=1"), 422, "validation_error")
    assert error["details"]["errors"][0]["location"] == ["query", "bins"]


def test_wrong_media_type_is_415(client, sample_jpeg):
    assert_error(
        client.post("/predict", content=sample_jpeg, headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    error = assert_error(
        client.post("/predict", content=gif.getvalue(), headers={"Content-Type": "image/png"}),
        415,
        "unsupported_media_type",
    )
    assert error["details"]["found"] == "GIF"


def test_undecodable_image_is_400(client, sample_jpeg):
    assert_error(
        client.post("/predict", content=b"\x89PNG not really", headers={"Content-Type": "image/png"}),
        400,
        "invalid_image",
    )
    assert_error(client.post("/predict", content=sample_jpeg[:200], headers=JPEG), 400, "invalid_image")
    assert_error(client.post("/predict", json={"instances": [{"b64": "@@@"}]}), 400, "invalid_image")


def test_out_of_range_parameters_are_422(client, sample_jpeg):
    for url in (
        "/explain/integrated-gradients?steps=1",
        "/explain/integrated-gradients?steps=5000",
        "/explain/integrated-gradients?steps=2000",  # above the server's max_steps
        "/explain/integrated-gradients?method=simpson",
        "/explain/integrated-gradients?tolerance=2",
        "/explain/interior-gradients?alphas=1.5",
    ):
        response = client.post(url, content=sample_jpeg, headers=JPEG)
        assert response.status_code == 422, url
        assert response.json()["error"]["code"] in ("validation_error", "invalid_input")
    assert_error(
        client.post("/explain/integrated-gradients?target=unicorn", content=sample_jpeg, headers=JPEG),
        422,
        "unknown_class",
    )
    assert_error(
        client.post("/explain/integrated-gradients?target=10", content=sample_jpeg, headers=JPEG), 422, "unknown_class"
    )


def test_bad_json_bodies(client):
    assert_error(client.post("/predict", json={"instances": [[[0, 0, 0]]]}), 422, "invalid_input")
    assert_error(client.post("/predict", json={"instances": [[[[300] * 3] * 32] * 32]}), 422, "invalid_input")
    assert_error(client.post("/predict", json={"images": []}), 422, "invalid_input")
    assert_error(
        client.post("/predict", content=b"{not json", headers={"Content-Type": "application/json"}),
        400,
        "invalid_json",
    )
    nested = "[" * 100_000 + "]" * 100_000
    response = client.post("/predict", content=nested, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_json")


def test_one_image_endpoints_refuse_batches(client, validation_sample):
    images = validation_sample[0][:2]
    response = client.post("/activations/conv1", json={"instances": [image.tolist() for image in images]})
    assert_error(response, 422, "invalid_input")


def test_unknown_model_and_version(client, sample_jpeg):
    for query in ("model=nope", "model=..%2Fmodel_store", "model=cifar10-allcnn&version=99"):
        error = assert_error(
            client.post(f"/predict?{query}", content=sample_jpeg, headers=JPEG), 404, "model_not_found"
        )
        assert "/work" not in error["message"]
    assert_error(client.get("/models/nope"), 404, "model_not_found")


def test_limits(client, sample_jpeg):
    settings: Settings = client.app.state.settings
    huge = b"\0" * (settings.max_body_bytes + 1)
    assert_error(client.post("/predict", content=huge, headers=JPEG), 413, "payload_too_large")
    big = encode(Image.new("L", (5000, 4000)), "PNG")
    assert_error(client.post("/predict", content=big, headers={"Content-Type": "image/png"}), 413, "payload_too_large")
    batch = {"instances": [{"b64": "AAAA"}] * (settings.max_batch_instances + 1)}
    assert_error(client.post("/predict", json=batch), 413, "payload_too_large")
    # The service keeps answering after all of the above.
    assert client.post("/predict", content=sample_jpeg, headers=JPEG).status_code == 200


def test_admin_routes_are_off_without_an_api_key(client):
    assert_error(client.post("/admin/reload"), 403, "admin_disabled")


def test_the_steps_cap_is_one_number_from_settings(client, sample_jpeg):
    cap = Settings().max_steps
    for steps in (1, cap + 1, 100000):
        error = assert_error(
            client.post(f"/explain/integrated-gradients?steps={steps}", content=sample_jpeg, headers=JPEG),
            422,
            "invalid_input",
        )
        assert error["message"].startswith(f"steps must be between 2 and {cap} ")
        assert (error["details"]["minimum"], error["details"]["maximum"]) == (2, cap)
    parameters = client.get("/openapi.json").json()["paths"]["/explain/integrated-gradients"]["post"]["parameters"]
    steps_schema = next(p["schema"] for p in parameters if p["name"] == "steps")
    assert (steps_schema["minimum"], steps_schema["maximum"]) == (2, cap)
    listed = {m["name"]: m for m in client.get("/explain").json()["methods"]}
    assert {"integrated-gradients", "interior-gradients", "blur-ig", "guided-ig"} <= set(listed)
    for method, default in (("integrated-gradients", 50), ("blur-ig", 100), ("guided-ig", 200), ("xrai", 32)):
        steps = next(p for p in listed[method]["parameters"] if p["name"] == "steps")  # every path method's cap
        assert steps["schema"]["maximum"] == cap and f"default {default}," in steps["description"]


def test_a_smaller_cap_in_settings_is_the_one_enforced_and_documented(sample_jpeg):
    from fastapi.testclient import TestClient
    from mindscope.app import create_app

    from ..conftest import COMMITTED_STORE, wait_ready

    with TestClient(create_app(Settings(model_store_dir=COMMITTED_STORE, max_steps=64, max_alphas=4))) as small:
        wait_ready(small)
        error = assert_error(
            small.post("/explain/integrated-gradients?steps=65", content=sample_jpeg, headers=JPEG),
            422,
            "invalid_input",
        )
        assert "between 2 and 64" in error["message"] and "MINDSCOPE_MAX_STEPS" in error["message"]
        alphas = "&".join(f"alphas={a}" for a in (0.1, 0.2, 0.3, 0.4, 0.5))
        error = assert_error(
            small.post(f"/explain/interior-gradients?{alphas}", content=sample_jpeg, headers=JPEG), 422, "invalid_input"
        )
        assert "between 1 and 4" in error["message"]
        listed = small.get("/explain").json()["methods"]
        caps = {(m["name"], p["name"]): p["schema"] for m in listed for p in m["parameters"]}
        assert caps[("integrated-gradients", "steps")]["maximum"] == 64
        assert caps[("interior-gradients", "alphas")]["maxItems"] == 4
        # A method whose default is above the cap runs at the cap.
        blurred = small.post("/explain/blur-ig?max_sigma=4", content=sample_jpeg, headers=JPEG).json()
        assert blurred["parameters"]["steps"] == 64


def test_misspelled_query_parameters_are_refused_with_the_valid_ones(client, sample_jpeg):
    error = assert_error(
        client.post("/explain/integrated-gradients?step=10", content=sample_jpeg, headers=JPEG), 422, "invalid_input"
    )
    assert error["details"]["unknown"] == ["step"]
    assert {"steps", "target", "baseline", "model", "format"} <= set(error["details"]["valid"])
    assert "step" in error["message"] and "steps" in error["message"]
    assert_error(client.get("/weights/histogram?bin=10"), 422, "invalid_input")
    assert client.get("/weights/histogram?bins=10").status_code == 200
