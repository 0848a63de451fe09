"""TF Serving's format: two SavedModels, one exported by Keras's `model.export()` and one written by
`tf.saved_model.save` of a plain `tf.Module`, brought in with the real `mindscope import` and served:
predictions and input gradients equal the model's own, weight histograms are its variables', and
what needs a layer to tap answers 404 saying so. A third, saved by Keras 2 (`tf_keras`) with its
layers, is served with them: its activations equal Keras 2's own."""

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
from mindscope.config import Settings

from ..api.helpers import array_of, assert_error
from ..servers import InProcessServer
from .test_any_model import PNG, mindscope, picture

SHAPE = (12, 12, 3)


def keras_classifier() -> keras.Model:
    """A small CNN with a logits head (Keras's export keeps it as the serving signature)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(6, 3, activation="elu", name="conv1")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="elu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


class Module(tf.Module):
    """A classifier written in TensorFlow alone: one convolution, a dense layer, a softmax."""

    def __init__(self) -> None:
        rng = np.random.default_rng(5)
        self.kernel = tf.Variable(rng.normal(0, 0.5, (3, 3, 3, 5)).astype(np.float32), name="conv/kernel")
        self.weights = tf.Variable(rng.normal(0, 0.8, (5, 3)).astype(np.float32), name="dense/kernel")
        self.bias = tf.Variable(rng.normal(0, 0.1, (3,)).astype(np.float32), name="dense/bias")

    @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32)], autograph=False)
    def __call__(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        features = tf.nn.elu(tf.nn.conv2d(images, self.kernel, 1, "VALID"))
        pooled = tf.reduce_mean(features, axis=(1, 2))
        return {"scores": tf.nn.softmax(tf.matmul(pooled, self.weights) + self.bias)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved_models")
    model = keras_classifier()
    model.export(folder / "keras_export", verbose=False)
    module = Module()
    tf.saved_model.save(module, str(folder / "module"), signatures={"serving_default": module.__call__})
    return folder, model, module


@pytest.fixture(scope="module")
def keras2(exported):
    """A SavedModel as Keras 2's model.save(dir) writes it (keras_metadata.pb: its layers)."""
    import tf_keras

    folder, _, _ = exported
    tf_keras.utils.set_random_seed(4)
    model = tf_keras.Sequential(
        [
            tf_keras.Input(SHAPE),
            tf_keras.layers.Conv2D(5, 3, activation="relu", name="features"),
            tf_keras.layers.GlobalAveragePooling2D(),
            tf_keras.layers.Dense(3, activation="softmax", name="scores"),
        ]
    )
    model.save(str(folder / "keras2"))
    assert (folder / "keras2" / "keras_metadata.pb").is_file()
    return model


@pytest.fixture(scope="module")
def served(exported, keras2, tmp_path_factory):
    folder, _, _ = exported
    store = tmp_path_factory.mktemp("store")
    for name, classes in (("keras_export", "a,b,c,d"), ("module", "x,y,z")):
        done = mindscope("import", str(folder / name), "--name", name, "--store", str(store), "--classes", classes)
        assert done.returncode == 0, done.stderr
        assert "a SavedModel" in done.stdout and f"wrote {store / name / '1'}" in done.stdout
        assert ("logits" in done.stdout) == (name == "keras_export")
    done = mindscope("import", str(folder / "keras2"), "--name", "keras2", "--store", str(store))
    assert done.returncode == 0, done.stderr
    assert (
        "a Keras 2 SavedModel, layers read by tf_keras" in done.stdout
        and "1 layer with a spatial output" in done.stdout
    )
    settings = Settings(model_store_dir=store, default_model="module", jobs_dir=store.parent / "jobs")
    with InProcessServer(settings) as server, httpx.Client(base_url=server.base_url, timeout=300) as http:
        yield http


def own_scores(exported, name: str, pixels: np.ndarray) -> np.ndarray:
    _, model, module = exported
    if name == "module":
        return module(pixels[None])["scores"].numpy()[0]
    return np.asarray(tf.nn.softmax(model(pixels[None], training=False)))[0]


def own_gradient(exported, name: str, pixels: np.ndarray, target: int) -> np.ndarray:
    _, model, module = exported
    images = tf.constant(pixels[None])
    with tf.GradientTape() as tape:
        tape.watch(images)
        scores = module(images)["scores"] if name == "module" else tf.nn.softmax(model(images, training=False))
        chosen = scores[0, target]
    return tape.gradient(chosen, images).numpy()[0]


@pytest.mark.parametrize("name", ["keras_export", "module"])
def test_a_saved_model_predicts_and_explains_as_the_model_itself(served, exported, name):
    body, pixels = picture(SHAPE, seed=11)
    query = f"model={name}"
    answer = served.post(f"/predict?{query}", content=body, headers=PNG)
    assert answer.status_code == 200, answer.text
    expected = own_scores(exported, name, pixels)
    assert np.allclose(array_of(answer.json()["probabilities"]), expected, atol=1e-5)

    # The gradient methods differentiate the serving signature: gradient x input is the model's own.
    target = int(np.argmax(expected))
    explained = served.post(f"/explain/gradient-x-input?{query}&target={target}", content=body, headers=PNG)
    assert explained.status_code == 200, explained.text
    reference = own_gradient(exported, name, pixels, target) * pixels
    assert np.allclose(array_of(explained.json()["attributions"]), reference, atol=1e-5)
    ig = served.post(f"/explain/integrated-gradients?{query}&steps=128", content=body, headers=PNG).json()
    assert ig["completeness"]["relative_delta"] < 0.01
    assert ig["completeness"]["output_at_input"] == pytest.approx(float(expected.max()), abs=1e-4)


@pytest.mark.parametrize("name", ["keras_export", "module"])
def test_weight_histograms_are_the_saved_models_variables(served, exported, name):
    _, model, module = exported
    if name == "module":
        variables = {"conv/kernel": module.kernel, "dense/kernel": module.weights, "dense/bias": module.bias}
    else:
        variables = {f"{layer.name}/{w.name}": w for layer in model.layers for w in layer.weights}
    answer = served.get(f"/weights/histogram?model={name}")
    assert answer.status_code == 200, answer.text
    histograms = answer.json()["histograms"]
    assert {f"{h['layer']}/{h['parameter']}" for h in histograms} == set(variables)
    for entry in histograms:
        values = np.asarray(variables[f"{entry['layer']}/{entry['parameter']}"])
        (stage,) = entry["stages"].values()
        assert int(array_of(stage["counts"]).sum()) == values.size
        assert stage["min"] == pytest.approx(float(values.min())) and stage["max"] == pytest.approx(float(values.max()))
    chart = served.get(f"/weights/histogram?model={name}&format=png")
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"
    assert_error(served.get(f"/weights/histogram?model={name}&stage=initial"), 404, "initial_weights_missing")


def test_what_needs_a_layer_answers_404_naming_it(served):
    body, _ = picture(SHAPE, seed=12)
    for path in ("/activations/1", "/activations/animation", "/explain/grad-cam"):
        error = assert_error(
            served.post(f"{path}?model=keras_export", content=body, headers=PNG), 404, "layers_unavailable"
        )
        assert "SavedModel" in error["message"] and "model.keras" in error["message"], path
    assert_error(served.get("/visualize/1/0?model=keras_export"), 404, "layers_unavailable")
    # Jobs too: an index of embeddings needs a layer (refused when submitted); predictions do not.
    _, pixels = picture(SHAPE, seed=14)
    images = {"instances": [pixels.tolist()], "value_range": "0-1", "model": "keras_export"}
    refused = served.post("/jobs", json={"kind": "index", "parameters": {"name": "x"}, **images})
    assert_error(refused, 404, "layers_unavailable")
    assert served.post("/jobs", json={"kind": "predict", **images}).status_code == 202
    detail = served.get("/models/keras_export").json()
    assert detail["layers"] == [] and detail["input_shape"] == list(SHAPE)


def test_a_keras2_saved_model_is_served_with_its_layers(served, keras2):
    import tf_keras

    body, pixels = picture(SHAPE, seed=13)
    answer = served.post("/predict?model=keras2", content=body, headers=PNG).json()
    assert np.allclose(array_of(answer["probabilities"]), keras2(pixels[None]).numpy()[0], atol=1e-5)
    features = served.post("/activations/features?model=keras2", content=body, headers=PNG)
    assert features.status_code == 200, features.text
    inner = tf_keras.Model(keras2.inputs, keras2.get_layer("features").output)(pixels[None]).numpy()[0]
    assert np.allclose(array_of(features.json()["activations"]), inner, atol=1e-5)
    assert served.post("/explain/grad-cam?model=keras2", content=body, headers=PNG).status_code == 200


def test_the_importer_refuses_saved_models_it_cannot_serve(exported, tmp_path):
    folder, _, _ = exported
    store = str(tmp_path / "store")

    class TwoOutputs(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32)], autograph=False)
        def __call__(self, images):
            pooled = tf.reduce_mean(images, axis=(1, 2))
            return {"scores": pooled, "embedding": pooled * 2}

    class ReadsFiles(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32)], autograph=False)
        def __call__(self, images):
            extra = tf.strings.length(tf.io.read_file("/etc/hostname"))
            return {"scores": tf.reduce_mean(images, axis=(1, 2)) + tf.cast(extra, tf.float32)}

    for module, why in ((TwoOutputs(), "has 2 outputs"), (ReadsFiles(), "ReadFile")):
        path = tmp_path / type(module).__name__
        tf.saved_model.save(module, str(path), signatures={"serving_default": module.__call__})
        refused = mindscope("import", str(path), "--name", "bad", "--store", store)
        assert refused.returncode == 2 and why in refused.stderr, refused.stderr
    weights = tmp_path / "initial.weights.h5"
    weights.write_bytes(b"")
    refused = mindscope(
        "import", str(folder / "module"), "--name", "m", "--store", store, "--initial-weights", str(weights)
    )
    assert refused.returncode == 2 and "--initial-weights needs the Keras model" in refused.stderr
    missing = mindscope("import", str(folder / "module"), "--name", "m", "--store", store, "--signature", "nope")
    assert missing.returncode == 2 and "no signature 'nope'" in missing.stderr
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").iterdir())
