"""Any Keras image classifier: three models unlike ours, built here, brought in with the real
`mindscope import` command, and asked every endpoint over HTTP.

- digits: 28x28 greyscale, Dense head with Dropout, softmax; imported with its initial weights.
- resnet: 24x24 RGB, a residual block with BatchNorm and Add, logits, mean/std preprocessing.
- mobilenet: transfer learning as users write it: augmentation, then keras.applications'
  MobileNetV3Small (weights=None, no top) as one nested layer, then a pooled Dense head with 5
  logits, 96x96. The backbone rescales 8-bit pixels itself, which the importer reads off its
  first layer; its own layers are served by path (MobileNetV3Small/...).
"""

import contextlib
import io
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass

import httpx
import keras
import numpy as np
import pytest
from mindscope.cli import main
from mindscope.config import Settings
from PIL import Image

from ..api.helpers import array_of, assert_error
from ..servers import InProcessServer, start_server, wait_until


@dataclass
class Case:
    name: str
    model: keras.Model
    inner_layer: str  # an activation layer to compare with a Keras sub-model
    preprocess: object  # [0, 1] pixels -> the model's input
    logits: bool
    import_args: list[str]

    def inner_reference(self, pixels: np.ndarray) -> np.ndarray:
        """The inner layer's output for (H, W, C) pixels, from a Keras sub-model of the graph
        that owns the layer (the nested backbone's own, for a path)."""
        owner, x = self.model, self.preprocess(pixels[None])
        *outer, name = self.inner_layer.split("/")
        for nested in outer:  # in these models the backbone sees the input as the model does
            owner = owner.get_layer(nested)
        tapped = keras.Model(owner.input, owner.get_layer(name).output)
        return np.asarray(tapped(x, training=False))[0]


def leaf_weights(model: keras.Model) -> int:
    """Weight tensors of every layer, those inside nested models included."""
    return sum(leaf_weights(layer) if isinstance(layer, keras.Model) else len(layer.weights) for layer in model.layers)


def digits() -> tuple[keras.Model, keras.Model]:
    def build() -> keras.Model:
        inputs = keras.Input((28, 28, 1))
        x = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inputs)
        x = keras.layers.MaxPooling2D(name="pool")(x)
        x = keras.layers.Conv2D(16, 3, activation="relu", name="c2")(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dropout(0.3)(x)
        return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="head")(x))

    keras.utils.set_random_seed(1)
    initial = build()
    trained = build()
    trained.set_weights([w + np.random.default_rng(2).normal(0, 0.05, w.shape) for w in initial.get_weights()])
    return trained, initial


def resnet() -> keras.Model:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="block_conv1")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", name="block_conv2")(y)
    x = keras.layers.Add(name="block_add")([x, y])
    x = keras.layers.ReLU(name="block_out")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


def decisive(model: keras.Model, preprocess, top: float = 3.0) -> keras.Model:
    """Scale the head of an untrained network so its scores on random images reach about `top`
    (MobileNetV3's untrained scores are ~1e-10): an image and a black baseline then differ in
    score, which completeness is measured against."""
    shape = tuple(model.inputs[0].shape[1:])
    probes = preprocess(np.random.default_rng(0).uniform(0, 1, (4, *shape)).astype(np.float32))
    reach = float(np.abs(np.asarray(model(probes, training=False))).max())
    head = [layer for layer in model.layers if layer.weights][-1]
    head.set_weights([w * (top / reach) for w in head.get_weights()])
    return model


def transfer() -> keras.Model:
    keras.utils.set_random_seed(4)
    backbone = keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), include_top=False, weights=None)
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.RandomFlip("horizontal", name="augment")(inputs)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(x))


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> list[Case]:
    folder = tmp_path_factory.mktemp("models")
    trained, initial = digits()
    initial.save_weights(folder / "digits-initial.weights.h5")
    mean, std = np.array(MEAN, np.float32), np.array(STD, np.float32)
    return [
        Case(
            "digits",
            trained,
            "c2",
            lambda x: x,
            False,
            ["--initial-weights", str(folder / "digits-initial.weights.h5"), "--classes", ",".join("0123456789")],
        ),
        Case(
            "resnet",
            decisive(resnet(), lambda x: (x - mean) / std),
            "block_add",
            lambda x: (x - mean) / std,
            True,
            ["--preprocessing", "mean-std", "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD))],
        ),
        Case(
            "mobilenet",
            decisive(transfer(), lambda x: x * 255.0),
            "MobileNetV3Small/expanded_conv_project_bn",
            lambda x: x * 255.0,
            True,
            [],
        ),
    ]


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def mindscope(*args: str) -> Ran:
    """`mindscope ARGS` through the command's own entry point, in this process (TensorFlow is
    already loaded here; tests/e2e/test_own_model_readme.py runs the installed command itself)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return Ran(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def served(cases, tmp_path_factory):
    folder = tmp_path_factory.mktemp("imports")
    store = folder / "store"
    for case in cases:
        path = folder / f"{case.name}.keras"
        case.model.save(path)
        done = mindscope("import", str(path), "--name", case.name, "--store", str(store), *case.import_args)
        assert done.returncode == 0, done.stderr
        assert f"wrote {store / case.name / '1'}" in done.stdout
        assert ("logits" in done.stdout) == case.logits
    data = folder / "data"  # pictures for the dataset jobs: a class's, a concept's, a random pool
    for name, count, seed in (("scored", 8, 20), ("bright", 12, 21), ("random", 150, 22)):
        (data / name).mkdir(parents=True)
        for k in range(count):
            pixels = np.random.default_rng(seed * 1000 + k).integers(0, 256, (40, 40, 3), dtype=np.uint8)
            if name == "bright":
                pixels = np.maximum(pixels, 200).astype(np.uint8)
            Image.fromarray(pixels).save(data / name / f"{k}.png")
    # A jobs folder of its own: a folder is run by one server, and other modules' servers do not hold these models.
    settings = Settings(model_store_dir=store, default_model="digits", data_root=data, jobs_dir=folder / "jobs")
    with InProcessServer(settings) as server:
        server.store = store
        yield server


def picture(shape: tuple[int, int, int], seed: int) -> tuple[bytes, np.ndarray]:
    """A PNG of the model's input size and channels, and its pixels in [0, 1] as the model sees them."""
    height, width, channels = shape
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue(), pixels.astype(np.float32) / 255.0


PNG = {"Content-Type": "image/png"}


def probabilities(case: Case, pixels: np.ndarray) -> np.ndarray:
    outputs = np.asarray(case.model(case.preprocess(pixels[None]), training=False), np.float64)[0]
    if case.logits:
        outputs = np.exp(outputs - outputs.max())
        outputs /= outputs.sum()
    return outputs


def test_every_endpoint_serves_each_imported_model(served, cases):
    with httpx.Client(base_url=served.base_url, timeout=600) as http:
        for case in cases:
            check_every_endpoint(http, case)


def check_every_endpoint(http: httpx.Client, case: Case) -> None:
    shape = tuple(case.model.inputs[0].shape[1:])
    query = f"model={case.name}"
    detail = http.get(f"/models/{case.name}").json()
    assert detail["input_shape"] == list(shape)
    body, pixels = picture(shape, seed=len(case.name))

    # Predict: raw image and a JSON array of the model's own shape, both equal to Keras's answer.
    answer = http.post(f"/predict?{query}", content=body, headers=PNG).json()
    expected = probabilities(case, pixels)
    assert np.allclose(array_of(answer["probabilities"]), expected, atol=1e-4), case.name
    assert answer["label"] == detail["class_names"][int(np.argmax(array_of(answer["probabilities"])))]
    instances = {"instances": [(pixels * 255).round().tolist()], "value_range": "0-255"}
    batch = http.post(f"/predict?{query}", json=instances).json()
    assert np.allclose(array_of(batch["predictions"][0]["probabilities"]), expected, atol=1e-4)
    wrong = np.zeros((5, 5, 3)).tolist()
    error = assert_error(http.post(f"/predict?{query}", json={"instances": [wrong]}), 422, "invalid_input")
    assert error["details"]["expected_shape"] == list(shape)

    # Activations of a layer inside the network (inside its nested backbone) equal a Keras sub-model's.
    assert case.inner_layer in [layer["name"] for layer in detail["layers"]]
    reference = case.inner_reference(pixels)
    channels = list(range(min(6, reference.shape[-1])))
    activations = http.post(
        f"/activations/{case.inner_layer}?{query}&" + "&".join(f"channels={c}" for c in channels),
        content=body,
        headers=PNG,
    ).json()
    assert np.allclose(array_of(activations["activations"]), reference[..., channels], atol=1e-4), case.name
    grid = http.post(f"/activations/{case.inner_layer}?{query}&format=png", content=body, headers=PNG)
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    gif = http.post(f"/activations/animation?{query}", content=body, headers=PNG)
    assert gif.status_code == 200 and gif.content[:6] == b"GIF89a"

    # Weight histograms count every weight of every layer that has any (BatchNorm's four included).
    histograms = http.get(f"/weights/histogram?{query}").json()
    assert len(histograms["histograms"]) == leaf_weights(case.model), case.name
    for entry in histograms["histograms"]:
        for stage in entry["stages"].values():
            assert int(array_of(stage["counts"]).sum()) == int(np.prod(entry["shape"]))
    assert histograms["stage"] == ("both" if case.name == "digits" else "trained")
    chart = http.get(f"/weights/histogram?{query}&format=png")
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"
    if case.name != "digits":
        assert_error(http.get(f"/weights/histogram?{query}&stage=initial"), 404, "initial_weights_missing")

    # Integrated gradients keep completeness on every architecture.
    explained = http.post(f"/explain/integrated-gradients?{query}&steps=256", content=body, headers=PNG).json()
    assert array_of(explained["attributions"]).shape == shape
    completeness = explained["completeness"]
    assert abs(completeness["output_at_input"] - completeness["output_at_baseline"]) > 0.01, case.name
    assert completeness["relative_delta"] < 0.01, (case.name, completeness)
    check_logit_attributions(http, case, query, body, pixels, explained)
    check_every_method(http, case, query, body, shape)
    check_standard_protocols(http, case, pixels, expected)

    # What a channel looks for, in the model's own input shape, inside a nested backbone too.
    feature = http.get(f"/visualize/{case.inner_layer}/1?{query}&steps=16").json()
    assert array_of(feature["features"][0]["image"]).shape == shape, case.name
    heatmap = http.post(f"/explain/integrated-gradients?{query}&format=png", content=body, headers=PNG)
    assert heatmap.status_code == 200
    interior = http.post(f"/explain/interior-gradients?{query}&alphas=0.25&alphas=1", content=body, headers=PNG).json()
    assert array_of(interior["gradients"]).shape == (2, *shape)


def check_standard_protocols(http: httpx.Client, case: Case, pixels: np.ndarray, expected: np.ndarray) -> None:
    """V1 and V2 REST take the model's own input (its range: x * 255, mean/std...) and answer as Keras."""
    metadata = http.get(f"/v2/models/{case.name}").json()
    (tensor,) = metadata["inputs"]
    assert tensor["datatype"] == "FP32" and tensor["shape"] == [-1, *pixels.shape]
    raw = np.asarray(case.preprocess(pixels[None]), np.float32)
    body = {
        "inputs": [
            {"name": tensor["name"], "shape": list(raw.shape), "datatype": "FP32", "data": raw.ravel().tolist()}
        ],
        "outputs": [{"name": "probabilities"}, {"name": case.inner_layer}],
    }
    answer = http.post(f"/v2/models/{case.name}/infer", json=body)
    assert answer.status_code == 200, answer.text
    probabilities, inner = answer.json()["outputs"]
    assert np.allclose(probabilities["data"], expected, atol=1e-4), case.name
    reference = case.inner_reference(pixels)
    assert inner["shape"] == [1, *reference.shape]
    assert np.allclose(np.reshape(inner["data"], reference.shape), reference, atol=1e-3), case.name
    rows = http.post(f"/v1/models/{case.name}:predict", json={"instances": raw.tolist()}).json()
    assert np.allclose(rows["predictions"][0], expected, atol=1e-4), case.name
    body["inputs"][0]["name"] = "pixels"
    refused = http.post(f"/v2/models/{case.name}/infer", json=body)
    assert refused.status_code == 422 and repr(tensor["name"]) in refused.json()["error"]


def test_grpc_serves_each_imported_model_as_keras(served, cases, tmp_path):
    """The Open Inference Protocol over gRPC, from `mindscope serve` over the same imported store:
    each model's probabilities and an inner layer equal Keras's, for the model's own input range."""
    running = start_server(tmp_path, served.store, MINDSCOPE_DEFAULT_MODEL="digits")
    try:
        running.wait_ready()
        for case in cases:
            shape = tuple(case.model.inputs[0].shape[1:])
            _, pixels = picture(shape, seed=len(case.name))
            raw = np.asarray(case.preprocess(pixels[None]), np.float32)
            (tensor,) = httpx.get(f"{served.base_url}/v2/models/{case.name}").json()["inputs"]
            probabilities_out, inner = grpc_infer(
                running.grpc_address, case.name, tensor["name"], raw, case.inner_layer
            )
            assert np.allclose(probabilities_out[0], probabilities(case, pixels), atol=1e-4), case.name
            assert np.allclose(inner[0], case.inner_reference(pixels), atol=1e-3), case.name
    finally:
        running.stop()


# The client runs in a process of its own: tritonclient.grpc and the service's gRPC modules both
# register `inference.*` protobuf messages, and an in-process server of another test may hold those.
GRPC_CLIENT = """
import io, sys
import numpy as np
import tritonclient.grpc as triton
address, model, name, layer = sys.argv[1:5]
raw = np.load(io.BytesIO(sys.stdin.buffer.read()))
image = triton.InferInput(name, list(raw.shape), "FP32")
image.set_data_from_numpy(raw)
outputs = [triton.InferRequestedOutput("probabilities"), triton.InferRequestedOutput(layer)]
result = triton.InferenceServerClient(address).infer(model, [image], outputs=outputs)
out = io.BytesIO()
np.savez(out, probabilities=result.as_numpy("probabilities"), inner=result.as_numpy(layer))
sys.stdout.buffer.write(out.getvalue())
"""


def grpc_infer(address: str, model: str, name: str, raw: np.ndarray, layer: str) -> tuple[np.ndarray, np.ndarray]:
    sent = io.BytesIO()
    np.save(sent, raw)
    done = subprocess.run(
        [sys.executable, "-c", GRPC_CLIENT, address, model, name, layer],
        input=sent.getvalue(),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    answer = np.load(io.BytesIO(done.stdout))
    return answer["probabilities"], answer["inner"]


def check_logit_attributions(http: httpx.Client, case: Case, query: str, body: bytes, pixels, explained) -> None:
    """score=logit attributes the pre-softmax score where the model has one; a model whose
    softmax is inside its Dense head has none and says so."""
    detail = http.get(f"/models/{case.name}").json()
    if not case.logits:
        assert detail["scores"] == ["probability"]
        error = assert_error(
            http.post(f"/explain/integrated-gradients?{query}&score=logit", content=body, headers=PNG),
            422,
            "invalid_input",
        )
        assert error["details"]["valid_scores"] == ["probability"]
        return
    assert detail["scores"] == ["probability", "logit"]
    answer = http.post(f"/explain/integrated-gradients?{query}&score=logit&steps=256", content=body, headers=PNG)
    on_logit = answer.json()
    logits = np.asarray(case.model(case.preprocess(pixels[None]), training=False), np.float64)[0]
    baseline = np.asarray(case.model(case.preprocess(np.zeros((1, *pixels.shape))), training=False))[0]
    target = on_logit["target"]["index"]
    assert on_logit["score"] == "logit" and target == explained["target"]["index"]
    completeness = on_logit["completeness"]
    assert completeness["output_at_input"] == pytest.approx(logits[target], abs=1e-3)
    assert completeness["output_at_baseline"] == pytest.approx(baseline[target], abs=1e-3)
    assert completeness["relative_delta"] < 0.01, (case.name, completeness)
    # The answer's probabilities stay probabilities.
    assert np.allclose(array_of(on_logit["probabilities"]), array_of(explained["probabilities"]), atol=1e-5)


def check_every_method(http: httpx.Client, case: Case, query: str, body: bytes, shape) -> None:
    """Every other explanation method answers on every architecture, in the model's own shape."""
    per_pixel = (*shape[:2], 1)
    for method, options, expected in (
        ("vanilla-gradients", "samples=2", shape),
        ("gradient-x-input", "", shape),
        ("grad-cam", "", per_pixel),
        ("occlusion", f"size={shape[0] // 4}&stride={shape[0] // 4}", per_pixel),
        ("blur-ig", "steps=8&max_sigma=4", shape),
        ("guided-ig", "steps=8", shape),
        ("xrai", "steps=8", per_pixel),
    ):
        answer = http.post(f"/explain/{method}?{query}&{options}", content=body, headers=PNG)
        assert answer.status_code == 200, (case.name, method, answer.text[:300])
        assert array_of(answer.json()["attributions"]).shape == expected, (case.name, method)
    # The trust scores on any model; the sanity check needs the weights from before training.
    scored = http.post(f"/explain/gradient-x-input?{query}&evaluate=deletion,sanity", content=body, headers=PNG)
    if case.name == "digits":
        assert scored.status_code == 200 and scored.json()["evaluation"]["sanity"]["rank_correlation"] < 1
    else:
        assert "--initial-weights" in assert_error(scored, 404, "initial_weights_missing")["message"]
    # Grad-CAM by default reads the last spatial layer of the outer model (the nested backbone's output).
    cam = http.post(f"/explain/grad-cam?{query}", content=body, headers=PNG).json()
    outer = [layer["name"] for layer in http.get(f"/models/{case.name}").json()["layers"] if "/" not in layer["name"]]
    assert cam["parameters"]["layer"] == outer[-1]
    if "/" in case.inner_layer:
        refused = http.post(f"/explain/grad-cam?{query}&layer={case.inner_layer}", content=body, headers=PNG)
        assert "nested model" in assert_error(refused, 422, "invalid_input")["message"]


def test_the_importer_refuses_what_it_cannot_serve(tmp_path):
    store = tmp_path / "store"
    not_an_image = keras.Sequential([keras.Input((10,)), keras.layers.Dense(3, activation="softmax")])
    not_an_image.save(tmp_path / "vector.keras")
    refused = mindscope("import", str(tmp_path / "vector.keras"), "--name", "vector", "--store", str(store))
    assert refused.returncode == 2 and "must be an image" in refused.stderr

    regression = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])
    regression.save(tmp_path / "one.keras")
    refused = mindscope("import", str(tmp_path / "one.keras"), "--name", "one", "--store", str(store))
    assert refused.returncode == 2 and "one score per class" in refused.stderr

    fine = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    fine.save(tmp_path / "fine.keras")
    refused = mindscope(
        "import", str(tmp_path / "fine.keras"), "--name", "fine", "--store", str(store), "--classes", "a,b"
    )
    assert refused.returncode == 2 and "give exactly 3" in refused.stderr

    (tmp_path / "garbage.keras").write_bytes(b"not a zip")
    refused = mindscope("import", str(tmp_path / "garbage.keras"), "--name", "g", "--store", str(store))
    assert refused.returncode == 2 and "safe_mode=True" in refused.stderr
    assert not store.exists() or not any(store.iterdir())  # nothing half-written

    done = mindscope("import", str(tmp_path / "fine.keras"), "--name", "fine", "--store", str(store))
    again = mindscope("import", str(tmp_path / "fine.keras"), "--name", "fine", "--store", str(store))
    assert done.returncode == 0 and again.returncode == 0 and f"{store / 'fine' / '2'}" in again.stdout
    metadata = json.loads((store / "fine" / "2" / "metadata.json").read_text())
    assert metadata["output"] == "logits" and metadata["class_names"] == ["0", "1", "2"]
    assert set(metadata["files"]) == {"model.keras", "history.json"}


def test_the_sdk_follows_the_model_it_names(served, cases):
    from mindscope_client import Client

    digits_model = cases[0].model
    pixels = np.random.default_rng(5).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    expected = probabilities(cases[0], pixels.astype(np.float32) / 255.0)
    with Client(served.base_url, timeout=600) as client:
        for image in (pixels, pixels[..., 0], Image.fromarray(pixels[..., 0])):
            prediction = client.predict(image, model="digits")
            assert np.allclose(prediction.probabilities, expected, atol=1e-4)
        layer = client.activations(pixels, "c1", model="digits")
        assert layer.values.shape[:2] == tuple(digits_model.get_layer("c1").output.shape[1:3])
        attribution = client.integrated_gradients(pixels, model="digits")
        assert attribution.attributions.shape == (28, 28, 1)


def succeeded(http: httpx.Client, job_id: str) -> None:
    wait_until(lambda: http.get(f"/jobs/{job_id}").json()["state"] in ("succeeded", "failed"), timeout=300)
    assert http.get(f"/jobs/{job_id}").json()["state"] == "succeeded", http.get(f"/jobs/{job_id}").text


def test_dataset_jobs_serve_each_imported_model(served, cases):
    """Example-based explanations and TCAV on models unlike ours: an index of images sent as arrays
    finds each of them first; a tcav job reports every layer it tested, with its t-test."""
    with httpx.Client(base_url=served.base_url, timeout=300) as http:
        for case in cases:
            shape = tuple(case.model.input.shape[1:])
            pictures = [picture(shape, 40 + k)[1] for k in range(6)]
            instances = [(p[..., 0] if shape[-1] == 1 else p).tolist() for p in pictures]
            job = http.post(
                "/jobs",
                json={
                    "kind": "index",
                    "model": case.name,
                    "instances": instances,
                    "value_range": "0-1",
                    "parameters": {"name": "mine"},
                },
            )
            assert job.status_code == 202, job.text
            succeeded(http, job.json()["id"])
            for k in (0, 5):
                body = {"instances": [instances[k]], "value_range": "0-1"}
                found = http.post(f"/explain/examples?index=mine&k=3&model={case.name}", json=body)
                assert found.status_code == 200, found.text
                first = found.json()["neighbours"][0]
                assert first["source"] == f"{k}.npy" and first["distance"] == pytest.approx(0, abs=1e-4)
        data = served.app.state.settings.data_root
        for case in cases:  # an audit of random pictures filed under two of the model's classes
            classes = http.get(f"/models/{case.name}").json()["class_names"][:2]
            for k, name in enumerate(classes):
                (data / f"audit-{case.name}" / name).mkdir(parents=True)
                for j in range(3):
                    shutil.copy(data / "random" / f"{k * 3 + j}.png", data / f"audit-{case.name}" / name / f"{j}.png")
            parameters = {"explain_per_class": 1, "channels": 2, "examples": 2, "mistakes": 2, "visualization_steps": 8}
            job = http.post(
                "/jobs",
                json={"kind": "audit", "model": case.name, "folder": f"audit-{case.name}", "parameters": parameters},
            )
            assert job.status_code == 202, job.text
            succeeded(http, job.json()["id"])
            report = http.get(f"/jobs/{job.json()['id']}/report?format=json").json()
            assert report["images"] == 6 and sum(map(sum, report["confusion"])) == 6
            page = http.get(f"/jobs/{job.json()['id']}/report", headers={"Accept": "text/html"}).text
            assert page.count('<section id="') == 7
        assert http.post("/concepts", json={"name": "bright", "folder": "bright"}).status_code == 201
        for case in cases:
            parameters = {"concept": "bright", "target": 0, "random_folder": "random", "size": 12}
            job = http.post(
                "/jobs", json={"kind": "tcav", "model": case.name, "folder": "scored", "parameters": parameters}
            )
            assert job.status_code == 202, job.text
            job_id = job.json()["id"]
            succeeded(http, job_id)
            report = http.get(f"/jobs/{job_id}/report").json()
            assert report["images"] == 8 and len(report["layers"]) >= 1
            for layer in report["layers"]:
                assert len(layer["scores"]) == 10 and 0 <= layer["p_value"] <= 1
                assert (layer["score"] is None) != layer["significant"]
