"""V1 `:explain` is the REST explanation: the same runner and answer, one decode and one forward pass
per image, inside the caller's own request (its id, its deadline)."""

import io

import numpy as np
import pytest
from mindscope.api.routes import v1
from PIL import Image

from ..api.helpers import array_of

MODEL = "cifar10-allcnn"


@pytest.fixture
def pixels(sample_jpeg):
    return (np.asarray(Image.open(io.BytesIO(sample_jpeg)).convert("RGB"), np.float32) / 255).round(4)


@pytest.mark.parametrize(
    ("method", "parameters"),
    [
        ("vanilla-gradients", {"evaluate": ["deletion", "insertion"], "target": "cat"}),
        ("grad-cam", {"layer": "conv6", "samples": 2, "seed": 3}),
        ("occlusion", {"size": 8, "stride": 8}),
        ("integrated-gradients", {"steps": 16, "baseline": "white"}),
    ],
)
def test_v1_explain_answers_what_the_rest_route_answers(client, pixels, method, parameters):
    v1_answer = client.post(
        f"/v1/models/{MODEL}:explain", json={"instances": [pixels.tolist()], "method": method, "parameters": parameters}
    )
    assert v1_answer.status_code == 200, v1_answer.text
    (explanation,) = v1_answer.json()["explanations"]
    query = {k: ",".join(v) if isinstance(v, list) else str(v) for k, v in parameters.items()}
    rest = client.post(
        f"/explain/{method}", params=query, json={"instances": [pixels.tolist()], "value_range": "0-1"}
    ).json()
    np.testing.assert_array_equal(array_of(explanation["attributions"]), array_of(rest["attributions"]))
    for key in ("target", "evaluation", "parameters", "probabilities", "evaluations", "completeness"):
        assert explanation.get(key) == rest.get(key), key
    (prediction,) = v1_answer.json()["predictions"]
    np.testing.assert_allclose(prediction, array_of(rest["probabilities"]), atol=1e-6)


def test_v1_explain_decodes_once_and_runs_one_forward_pass_per_image(client, pixels, monkeypatch):
    loaded = client.app.state.registry.get()
    decodes, forwards = [], []
    images_from = v1.images_from
    predict = loaded.predict

    def counted_decode(*args, **kwargs):
        decodes.append(1)
        return images_from(*args, **kwargs)

    def counted_predict(images):
        forwards.append(len(images))
        return predict(images)

    monkeypatch.setattr(v1, "images_from", counted_decode)
    monkeypatch.setattr(loaded, "predict", counted_predict)
    answer = client.post(
        f"/v1/models/{MODEL}:explain",
        json={"instances": [pixels.tolist(), pixels.tolist()], "method": "vanilla-gradients"},
        headers={"X-Request-ID": "caller-42"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Request-ID"] == "caller-42"
    assert len(decodes) == 1  # the body's images, decoded once
    assert forwards == [1, 1]  # one forward row per image: its probabilities, the predictions too


def test_unknown_parameters_and_methods_are_refused_in_the_protocols_shape(client, pixels):
    body = {"instances": [pixels.tolist()], "method": "occlusion", "parameters": {"size": 8, "samples": 4}}
    refused = client.post(f"/v1/models/{MODEL}:explain", json=body)
    assert refused.status_code == 422 and "occlusion takes no parameter samples" in refused.json()["error"]
    body = {"instances": [pixels.tolist()], "method": "grad-cam", "parameters": {"noise": 2}}
    refused = client.post(f"/v1/models/{MODEL}:explain", json=body)
    assert refused.status_code == 422 and "noise" in refused.json()["error"]


def test_v1_parameters_take_a_class_index_as_a_number_and_a_list_as_a_comma_string(client, pixels):
    body = {
        "instances": [pixels.tolist()],
        "method": "vanilla-gradients",
        "parameters": {"target": 3, "evaluate": "deletion,insertion"},
    }
    answer = client.post(f"/v1/models/{MODEL}:explain", json=body)
    assert answer.status_code == 200, answer.text
    (explanation,) = answer.json()["explanations"]
    assert explanation["target"]["index"] == 3 and set(explanation["evaluation"]) >= {"deletion", "insertion"}
