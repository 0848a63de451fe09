"""Training end to end on a few hundred real images, and the BatchNorm folding it relies on."""

import json

import keras
import numpy as np
import pytest
from mindscope.cli import main
from mindscope.engine.registry import ModelRegistry
from mindscope.engine.store import INITIAL_WEIGHTS_FILE, METADATA_FILE, MODEL_FILE, ModelStore, sha256_file
from mindscope.training.data import load_image_folder, random_crop_flip, split_validation
from mindscope.training.network import CONV_NAMES, build_training_model, fold_batch_norm

TINY = ["--per-class-limit", "30", "--widths", "8,8,8", "--val-size", "50", "--verbose", "0"]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("store")
    assert main(["train", "--data", str(data_dir), "--epochs", "1", "--out", str(root / "tiny" / "1"), *TINY]) == 0
    return root


def test_training_writes_a_complete_loadable_entry(tiny_store):
    entry = tiny_store / "tiny" / "1"
    metadata = json.loads((entry / METADATA_FILE).read_text())
    history = json.loads((entry / "history.json").read_text())
    assert len(history) == 1 and {"loss", "accuracy", "val_loss", "val_accuracy"} <= history[0].keys()
    assert metadata["class_names"] == sorted(metadata["class_names"]) and len(metadata["class_names"]) == 10
    assert metadata["input_shape"] == [32, 32, 3]
    assert set(metadata["init_stddev"]) == set(CONV_NAMES)
    assert metadata["validation_size"] == 50 and 0 <= metadata["validation_accuracy"] <= 1
    assert metadata["training"]["train_size"] == 250
    for name, record in metadata["files"].items():
        assert sha256_file(entry / name) == record["sha256"]
    assert not (entry / MODEL_FILE).with_name("checkpoint.keras").exists()  # no optimizer state in the entry
    loaded = ModelRegistry(ModelStore(tiny_store)).get()
    assert loaded.ref.label == "tiny/1"
    assert [layer.name for layer in loaded.layers] == list(CONV_NAMES)
    assert loaded.predict(np.zeros((2, 32, 32, 3), np.float32)).sum(axis=1) == pytest.approx([1, 1], abs=1e-5)


def test_initial_weights_are_the_drawn_initialisation(tiny_store):
    loaded = ModelRegistry(ModelStore(tiny_store)).get()
    stddevs = loaded.metadata["init_stddev"]
    for name in ("conv2", "conv5"):
        kernel, bias = loaded.initial_weights[name]
        assert np.all(bias == 0)
        assert kernel.std() == pytest.approx(stddevs[name], rel=0.15)
        assert not np.allclose(kernel, loaded.model.get_layer(name).get_weights()[0])


def test_resume_continues_from_the_last_epoch(tmp_path, data_dir):
    out = tmp_path / "m" / "1"
    work = tmp_path / "work"
    args = ["train", "--data", str(data_dir), "--out", str(out), "--work-dir", str(work), *TINY]
    assert main([*args, "--epochs", "1"]) == 0
    first = json.loads((work / "history.json").read_text())
    out.rename(tmp_path / "m" / "first")
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[0] == first[0]
    # The first run's schedule ended with it, so the extra epoch is a new warm-up + cosine cycle.
    cycles = json.loads((out / METADATA_FILE).read_text())["training"]["cycles"]
    assert [(c["first_epoch"], c["epochs"]) for c in cycles] == [(1, 1), (2, 1)]


def test_existing_entry_is_never_overwritten(tiny_store, data_dir):
    before = sha256_file(tiny_store / "tiny" / "1" / MODEL_FILE)
    with pytest.raises(FileExistsError):
        main(["train", "--data", str(data_dir), "--epochs", "1", "--out", str(tiny_store / "tiny" / "1"), *TINY])
    assert sha256_file(tiny_store / "tiny" / "1" / MODEL_FILE) == before
    assert (tiny_store / "tiny" / "1" / INITIAL_WEIGHTS_FILE).exists()


def test_folding_batch_norm_preserves_the_function():
    model = build_training_model((8, 16, 16), seed=3)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(64, 32, 32, 3)).astype(np.float32)
    model.fit(x, rng.integers(0, 10, 64), epochs=2, verbose=0)  # moves the BN statistics off identity
    folded = fold_batch_norm(model)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-6)


def test_validation_split_is_fixed_and_disjoint():
    train, val = split_validation(1000, 100, seed=0)
    again_train, again_val = split_validation(1000, 100, seed=0)
    assert len(val) == 100 and not set(train) & set(val) and len(train) + len(val) == 1000
    np.testing.assert_array_equal(val, again_val)


def test_augmentation_keeps_shapes_and_pixels():
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    out = random_crop_flip(images, np.random.default_rng(1))
    assert out.shape == images.shape and out.dtype == np.uint8
    assert not np.array_equal(out, images)


def test_folder_loader_reads_class_folders(data_dir):
    data = load_image_folder(data_dir, per_class_limit=3)
    assert data.images.shape == (30, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.class_names[0] == "airplane" and list(data.labels[:3]) == [0, 0, 0]


def test_the_plain_network_is_stored_as_learned_without_optimizer_state(tmp_path, data_dir):
    """--no-batch-norm (the seed's network): the stored kernels are the trained model's own, and the
    file holds no Adam moments."""
    import io as _io
    import zipfile

    import h5py

    out = tmp_path / "plain" / "1"
    args = ["train", "--data", str(data_dir), "--out", str(out), "--work-dir", str(tmp_path / "work"), *TINY]
    assert main([*args, "--epochs", "1", "--no-batch-norm", "--optimizer", "adam"]) == 0
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["architecture"]["batch_norm"].startswith("none")
    with zipfile.ZipFile(out / "model.keras") as archive:
        weights = h5py.File(_io.BytesIO(archive.read("model.weights.h5")), "r")
        assert "optimizer" not in weights


def test_a_batch_norm_model_keeps_the_weights_the_optimizer_learned_for_the_histograms(tiny_store):
    """The served kernels have BatchNorm folded in; the histograms show the unfolded ones by
    default (conv kernels and BatchNorm's four), and the served ones on request, each saying which."""
    from fastapi.testclient import TestClient
    from mindscope.app import create_app
    from mindscope.config import Settings
    from mindscope.engine.store import LEARNED_INITIAL_FILE, LEARNED_MODEL_FILE
    from mindscope.training.network import BATCH_NORM_EPSILON

    from ..conftest import wait_ready

    entry = tiny_store / "tiny" / "1"
    assert {LEARNED_MODEL_FILE, LEARNED_INITIAL_FILE} <= json.loads((entry / METADATA_FILE).read_text())["files"].keys()
    with TestClient(create_app(Settings(model_store_dir=tiny_store))) as client:
        wait_ready(client)
        assert client.get("/models/tiny").json()["weight_sources"] == ["learned", "served"]
        learned = client.get("/weights/histogram?layers=conv2,conv2_bn&bins=20").json()
        served = client.get("/weights/histogram?layers=conv2&bins=20&weights=served").json()
        picture = client.get("/weights/histogram?layers=conv2_bn&format=png")
    assert learned["source"] == "learned" and "unfolded" in learned["weights"]
    assert served["source"] == "served" and "folded" in served["weights"]
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    parameters = [(h["layer"], h["parameter"]) for h in learned["histograms"]]
    assert parameters == [
        ("conv2", "kernel"),
        *[("conv2_bn", p) for p in ("gamma", "beta", "moving_mean", "moving_variance")],
    ]
    # Before training, the learned kernel is the drawn initialisation, and BatchNorm the identity.
    stddev = json.loads((entry / METADATA_FILE).read_text())["init_stddev"]["conv2"]
    kernel, gamma = learned["histograms"][0]["stages"], learned["histograms"][1]["stages"]
    assert kernel["initial"]["std"] == pytest.approx(stddev, rel=0.15)
    assert gamma["initial"]["min"] == gamma["initial"]["max"] == 1.0
    # Folding the learned weights gives the served kernel.
    learned_model = keras.saving.load_model(entry / LEARNED_MODEL_FILE)
    served_model = keras.saving.load_model(entry / MODEL_FILE)
    (raw,) = learned_model.get_layer("conv2").get_weights()
    g, _beta, _mean, var = learned_model.get_layer("conv2_bn").get_weights()
    folded = served_model.get_layer("conv2").get_weights()[0]
    np.testing.assert_allclose(raw * g / np.sqrt(var + BATCH_NORM_EPSILON), folded, rtol=1e-5, atol=1e-7)
    assert served["histograms"][0]["stages"]["trained"]["std"] == pytest.approx(float(folded.std()), rel=1e-5)
    assert kernel["trained"]["std"] == pytest.approx(float(raw.std()), rel=1e-5)


def test_a_model_without_learned_weights_names_the_ones_it_has(committed_model):
    from mindscope.engine.weights import weight_set, weight_sources
    from mindscope.errors import WeightsMissing

    assert weight_sources(committed_model) == ("served",)
    assert weight_set(committed_model).note.startswith("BatchNorm: used in training")
    with pytest.raises(WeightsMissing) as caught:
        weight_set(committed_model, "learned")
    assert caught.value.status_code == 404 and caught.value.details["valid_weights"] == ["served"]


# Run in a fresh interpreter where tensorflow cannot be imported, as on a machine that has only JAX.
_WITHOUT_TENSORFLOW = (
    "import sys; sys.modules['tensorflow'] = None; import runpy; runpy.run_module('mindscope.cli', run_name='__main__')"
)


def test_training_runs_under_keras_on_jax_without_tensorflow_and_the_service_serves_it(tmp_path, data_dir):
    """The store format is backend-neutral: an entry trained by Keras on JAX (a GPU machine with
    no TensorFlow) loads in the TensorFlow service and computes what JAX computed."""
    import os
    import subprocess
    import sys

    out = tmp_path / "store" / "jax" / "1"
    environment = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    args = ["train", "--data", str(data_dir), "--out", str(out), "--epochs", "1", *TINY]
    run = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW, *args], env=environment, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["framework"]["backend"] == "jax" and "tensorflow" not in metadata["framework"]
    images = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    jax_predict = (
        "import sys; sys.modules['tensorflow'] = None; import keras, numpy as np; "
        f"m = keras.saving.load_model({str(out / MODEL_FILE)!r}); "
        f"np.save({str(tmp_path / 'jax.npy')!r}, m.predict(np.load({str(tmp_path / 'images.npy')!r}), verbose=0))"
    )
    run = subprocess.run(
        [sys.executable, "-c", jax_predict], env=environment, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    served = ModelRegistry(ModelStore(tmp_path / "store")).get()
    np.testing.assert_allclose(served.predict(images), np.load(tmp_path / "jax.npy"), atol=1e-5)
    assert served.learned is not None  # the unfolded weights came across too
