"""The committed model and the store's integrity checks."""

import json
import shutil

import keras
import numpy as np
import pytest
from mindscope.engine.registry import ModelRegistry
from mindscope.engine.store import INITIAL_WEIGHTS_FILE, METADATA_FILE, MODEL_FILE, ModelRef, ModelStore, sha256_file
from mindscope.errors import ModelIntegrityError, ModelNotFound
from mindscope.training.network import CONV_NAMES

from ..conftest import COMMITTED_NAME


def test_committed_metadata_is_consistent(committed_store, committed_model):
    ref = committed_store.resolve()
    assert ref.name == COMMITTED_NAME
    metadata = committed_store.verify(ref)
    assert metadata["class_names"] == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ]  # fmt: skip
    assert metadata["input_shape"] == [32, 32, 3]
    assert metadata["validation_size"] == 5000 and metadata["validation_accuracy"] >= 0.7
    assert set(metadata["init_stddev"]) == set(CONV_NAMES)
    assert all(0.04 <= value <= 0.06 for value in metadata["init_stddev"].values())
    history = json.loads((committed_store.entry_dir(ref) / "history.json").read_text())
    assert len(history) == metadata["training"]["epochs"]
    assert history[-1]["val_accuracy"] == pytest.approx(metadata["validation_accuracy"], abs=0.01)
    assert sum(path.stat().st_size for path in committed_store.entry_dir(ref).iterdir()) < 8 * 1024 * 1024


def test_committed_model_classifies_held_out_images(committed_model, validation_sample):
    images, labels, _ = validation_sample
    predicted = committed_model.predict(images.astype(np.float32) / 255).argmax(axis=1)
    assert np.mean(predicted == labels) >= 0.7


@pytest.fixture
def store_copy(tmp_path, committed_store):
    ref = committed_store.resolve()
    shutil.copytree(committed_store.entry_dir(ref), tmp_path / "copy" / "1")
    return ModelStore(tmp_path)


def test_a_modified_model_file_is_refused(store_copy):
    entry = store_copy.root / "copy" / "1" / MODEL_FILE
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="does not match its SHA-256") as caught:
        ModelRegistry(store_copy).get()
    assert caught.value.details["file"] == MODEL_FILE
    assert caught.value.details["actual_sha256"] == sha256_file(entry)


def test_a_truncated_initial_weights_file_is_refused(store_copy):
    path = store_copy.root / "copy" / "1" / INITIAL_WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelIntegrityError, match=INITIAL_WEIGHTS_FILE):
        store_copy.verify(store_copy.resolve())


def test_a_file_matching_a_forged_digest_still_must_load_safely(store_copy):
    """A replaced model.keras whose digest was updated too is still loaded with safe_mode."""
    entry = store_copy.root / "copy" / "1"
    (entry / MODEL_FILE).write_bytes(b"not a keras archive")
    metadata = json.loads((entry / METADATA_FILE).read_text())
    metadata["files"][MODEL_FILE]["sha256"] = sha256_file(entry / MODEL_FILE)
    (entry / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(ModelIntegrityError, match="cannot be loaded safely"):
        store_copy.load(store_copy.resolve())


def test_a_model_with_a_lambda_layer_is_refused_even_with_matching_digests(store_copy):
    """Python code inside a model file never runs: such an entry is refused, not loaded."""
    entry = store_copy.root / "copy" / "1"
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    keras.Model(inputs, outputs).save(entry / MODEL_FILE)
    metadata = json.loads((entry / METADATA_FILE).read_text())
    metadata["files"][MODEL_FILE] = {
        "sha256": sha256_file(entry / MODEL_FILE),
        "bytes": (entry / MODEL_FILE).stat().st_size,
    }
    (entry / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(ModelIntegrityError, match="cannot be loaded safely") as caught:
        ModelRegistry(store_copy).get()
    assert "Lambda" in caught.value.message


def test_resolution_picks_the_highest_version_and_matches_names_exactly(store_copy):
    shutil.copytree(store_copy.root / "copy" / "1", store_copy.root / "copy" / "7")
    (store_copy.root / "copy" / "9").mkdir()  # no metadata.json: not an entry
    assert store_copy.resolve().version == 7
    assert store_copy.resolve("copy", 1).version == 1
    for name in ("../copy", "copy/1", "COPY", ".", ""):
        with pytest.raises(ModelNotFound):
            store_copy.resolve(name)
    with pytest.raises(ModelNotFound) as caught:
        store_copy.resolve("copy", 3)
    assert caught.value.details["available_versions"] == [1, 7]


def test_with_several_models_the_default_is_the_most_accurate(store_copy):
    source = store_copy.root / "copy" / "1"
    accuracy = json.loads((source / METADATA_FILE).read_text())["validation_accuracy"]
    for name, shift in (("better", 0.01), ("worse", -0.01)):
        entry = store_copy.root / name / "1"
        shutil.copytree(source, entry)
        metadata = json.loads((entry / METADATA_FILE).read_text())
        metadata["validation_accuracy"] = accuracy + shift
        (entry / METADATA_FILE).write_text(json.dumps(metadata))
    assert store_copy.resolve() == ModelRef("better", 1)
    assert store_copy.resolve("worse").name == "worse"  # any model by name
    assert ModelStore(store_copy.root, default_name="copy").resolve().name == "copy"  # a setting wins
