"""Every list-valued query parameter takes both forms, `a=0,1,2` and `a=0&a=1&a=2` (and a mix),
with the same answer. The parameters are read from the OpenAPI schema, so a new one cannot forget:
it fails here until this table says what valid values it takes."""

import pytest

from .helpers import encode

# (method, path) -> the array parameter's valid values, and the other query it needs to be cheap.
CHEAP = {"steps": "8"}
LISTS = {
    ("post", "/activations/{layer}"): ("channels", ["0", "3", "5"], {}),
    ("get", "/weights/histogram"): ("layers", ["conv1", "conv9"], {"bins": "5"}),
    ("post", "/explain/interior-gradients"): ("alphas", ["0.25", "0.5", "1.0"], {}),
    ("post", "/explain/integrated-gradients"): ("evaluate", ["deletion", "insertion"], CHEAP),
    ("post", "/explain/vanilla-gradients"): ("evaluate", ["deletion", "insertion"], {}),
    ("post", "/explain/gradient-x-input"): ("evaluate", ["deletion", "insertion"], {}),
    ("post", "/explain/grad-cam"): ("evaluate", ["deletion", "insertion"], {}),
    ("post", "/explain/occlusion"): ("evaluate", ["deletion", "insertion"], {"size": "8", "stride": "8"}),
    ("post", "/explain/blur-ig"): ("evaluate", ["deletion", "insertion"], CHEAP),
    ("post", "/explain/guided-ig"): ("evaluate", ["deletion", "insertion"], CHEAP),
    ("post", "/explain/xrai"): ("evaluate", ["deletion", "insertion"], CHEAP),
    ("post", "/explain/shap"): ("evaluate", ["deletion", "insertion"], {"max_evals": "16"}),
}


def array_parameters(client) -> set[tuple[str, str, str]]:
    found = set()
    for path, operations in client.app.openapi()["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                if "array" in [schema.get("type"), *(option.get("type") for option in schema.get("anyOf", []))]:
                    found.add((method, path, parameter["name"]))
    return found


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in ("seconds",)}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def test_every_array_query_parameter_is_in_the_table(client):
    listed = {(method, path, name) for (method, path), (name, _, _) in LISTS.items()}
    assert array_parameters(client) == listed


@pytest.mark.parametrize(("method", "path"), list(LISTS), ids=[f"{m} {p}" for m, p in LISTS])
def test_comma_separated_and_repeated_forms_answer_alike(client, sample_jpeg, method, path):
    name, values, extra = LISTS[(method, path)]
    url = path.replace("{layer}", "conv3")
    body = {"content": sample_jpeg, "headers": {"Content-Type": "image/jpeg"}} if method == "post" else {}

    def ask(query):
        response = client.request(method.upper(), url, params=query, **body)
        assert response.status_code == 200, response.text
        return without_timings(response.json())

    comma = ask({**extra, name: ",".join(values)})
    repeated = ask([*extra.items(), *((name, value) for value in values)])
    mixed = ask([*extra.items(), (name, ",".join(values[:-1])), (name, values[-1])])
    assert comma == repeated == mixed
    assert comma != ask(extra), f"{name} changed nothing"


def test_a_bad_item_in_the_comma_form_is_named(client, sample_jpeg):
    response = client.post(
        "/activations/conv3", params={"channels": "0,x"}, content=sample_jpeg, headers={"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 422
    (error,) = response.json()["error"]["details"]["errors"]
    assert error["location"] == ["query", "channels", 1] and error["input"] == "x"


def test_v1_explain_takes_a_json_list_as_the_list_parameter(client, validation_sample):
    import base64

    from PIL import Image

    image = base64.b64encode(encode(Image.fromarray(validation_sample[0][0]))).decode()
    response = client.post(
        "/v1/models/cifar10-allcnn:explain",
        json={
            "instances": [{"b64": image}],
            "method": "vanilla-gradients",
            "parameters": {"evaluate": ["deletion", "insertion"]},
        },
    )
    assert response.status_code == 200, response.text
    (explanation,) = response.json()["explanations"]
    assert set(explanation["evaluation"]) >= {"deletion", "insertion"}
