"""`mindscope import`: any Keras 3 image classifier, or a SavedModel (TF Serving's format) ->
a complete, verified store entry.

The file is loaded as the service will load it (`safe_mode=True`: no Lambda layers, no custom
code) and checked: one image input (H, W, C with C = 1 or 3), one output of one score per class.
Whether the output is probabilities or logits is measured, not guessed from layer names; the
preprocessing is the caller's (`input_range`), or read off a leading `Rescaling` layer.
The entry gets the next integer version and is written aside and renamed into place, so a
running service with `RELOAD_INTERVAL_S` or `POST /admin/reload` picks it up.
"""

from __future__ import annotations

import dataclasses
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from mindscope.engine.layer_paths import spatial_layer_names, walk
from mindscope.engine.model_inputs import INPUT_RANGES
from mindscope.engine.saved_model import (
    DEFAULT_SIGNATURE,
    SavedModelRefused,
    is_saved_model,
    load_saved_model,
    saved_model_parts,
    unsafe_ops,
)
from mindscope.engine.store import (
    ModelStore,
    StoreEntryFiles,
    sha256_file,
    write_saved_model_entry,
    write_store_entry,
)


class ImportRefused(ValueError):
    """The model cannot be served as it is; the message says why and what to do."""


@dataclass(frozen=True)
class ImportReport:
    entry: Path
    input_shape: tuple[int, int, int]
    classes: list[str]
    output: str  # "probabilities" | "logits"
    input_range: str
    range_source: str  # how the input range was decided
    activation_layers: int
    initial_weights: bool
    saved_model: bool = False
    source: str | None = None  # what the file was, when it was converted on the way in

    def lines(self) -> list[str]:
        height, width, channels = self.input_shape
        preprocessing = {
            "0-1": "pixels are given to the model as 0-1",
            "0-255": "pixels are given to the model as 0-255",
            "-1-1": "pixels are given to the model as -1 to 1",
            "mean-std": "pixels are given to the model as (0-1 value - mean) / std per channel",
        }.get(self.input_range, f"pixels are given to the model as {self.input_range}")
        count = self.activation_layers
        if self.saved_model:
            inside = (
                "a SavedModel: prediction, gradient methods and weight histograms (its variables); "
                "no layers to tap (activations, Grad-CAM)"
            )
        else:
            inside = f"{count} layer{'s' if count != 1 else ''} with a spatial output (activations); " + (
                "initial weights stored (before/after histograms)" if self.initial_weights else "no initial weights"
            )
        return [
            f"wrote {self.entry}" + (f" (from {self.source})" if self.source else ""),
            f"input: {height}x{width}, {channels} channel{'s' if channels > 1 else ''}; "
            f"{preprocessing} ({self.range_source})",
            f"output: {self.output} for {len(self.classes)} classes"
            + ("; the service applies softmax for confidences and attributions" if self.output == "logits" else ""),
            inside,
        ]


def load_checked(path: Path) -> keras.Model:
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        raise ImportRefused(
            f"{path} cannot be loaded with safe_mode=True ({str(exc)[:300]}); save the model with "
            "model.save('model.keras') from Keras 3, without Lambda layers or custom objects"
        ) from None


def image_input_shape(model: keras.Model) -> tuple[int, int, int]:
    if len(model.inputs) != 1:
        raise ImportRefused(f"the model has {len(model.inputs)} inputs; an image classifier takes one image")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or any(d is None for d in shape[1:]) or shape[3] not in (1, 3):
        raise ImportRefused(
            f"the model's input has shape {list(shape)}; it must be an image (batch, height, width, channels) "
            "with a fixed height and width and 1 (greyscale) or 3 (RGB) channels"
        )
    return int(shape[1]), int(shape[2]), int(shape[3])


def class_count(model: keras.Model) -> int:
    if len(model.outputs) != 1:
        raise ImportRefused(f"the model has {len(model.outputs)} outputs; a classifier has one score per class")
    shape = tuple(model.outputs[0].shape)
    if len(shape) != 2 or shape[1] is None or shape[1] < 2:
        raise ImportRefused(
            f"the model's output has shape {list(shape)}; it must be (batch, classes): one score per class, "
            "at least 2 classes"
        )
    return int(shape[1])


def class_names(count: int, classes: list[str] | None) -> list[str]:
    if classes is None:
        return [str(i) for i in range(count)]
    if len(classes) != count:
        raise ImportRefused(
            f"{len(classes)} class names were given but the model scores {count} classes; give exactly {count}"
        )
    if len(set(classes)) != len(classes) or not all(name.strip() for name in classes):
        raise ImportRefused("class names must be distinct and not empty")
    return classes


def input_range_of(model: keras.Model, given: str | None) -> tuple[str, str]:
    """(range, how it was decided): the caller's; else 0-255 when the model starts by rescaling
    8-bit pixels itself (keras.applications with include_preprocessing); else 0-1."""
    if given is not None:
        if given not in INPUT_RANGES:
            raise ImportRefused(f"--preprocessing must be one of {', '.join(INPUT_RANGES)}; got {given!r}")
        return given, "as given"
    # The first layer that acts at inference, inside a nested backbone too; augmentation
    # (RandomFlip...) passes images through unchanged there.
    first = next(
        (
            layer
            for _, _, layer in walk(model)
            if not isinstance(layer, keras.Model) and not type(layer).__name__.startswith("Random")
        ),
        None,
    )
    if isinstance(first, keras.layers.Rescaling) and np.all(np.asarray(first.scale) < 0.01):
        return "0-255", f"its first layer, {first.name}, rescales 8-bit pixels"
    return "0-1", "the default; pass --preprocessing if the model was trained otherwise"


def output_kind(model: keras.Model, shape: tuple[int, int, int], scale: float, offset: float) -> str:
    """ "probabilities" when every row of the output on varied inputs is a distribution, else "logits"."""
    rng = np.random.default_rng(0)
    probes = rng.uniform(0, 1, (8, *shape)).astype(np.float32) * scale + offset
    outputs = np.asarray(model(probes, training=False), np.float64)
    sums_to_one = np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3)
    return "probabilities" if sums_to_one and outputs.min() >= -1e-6 else "logits"


def _probe_affine(input_range: str, mean: list[float] | None, std: list[float] | None) -> tuple[Any, Any]:
    if input_range == "0-255":
        return 255.0, 0.0
    if input_range == "-1-1":
        return 2.0, -1.0
    if input_range == "mean-std":
        if mean is None or std is None:
            raise ImportRefused("--preprocessing mean-std needs --mean and --std, one value per channel")
        return 1.0 / np.asarray(std, np.float32), -np.asarray(mean, np.float32) / np.asarray(std, np.float32)
    return 1.0, 0.0


KERAS2_METADATA = "keras_metadata.pb"  # a SavedModel written by Keras 2's model.save(dir): its layers


def keras2_layers(path: Path, scratch: Path) -> Path | None:
    """A Keras 2 SavedModel's model as a legacy HDF5 file Keras 3 loads with its layers (through
    tf_keras, Keras 2's own package); None when tf_keras is not installed."""
    try:
        import tf_keras
    except ImportError:
        return None
    unsafe = unsafe_ops(path)
    if unsafe:
        raise ImportRefused(f"the SavedModel's graph uses {', '.join(unsafe)}; the service will not run it")
    try:
        model = tf_keras.models.load_model(str(path), compile=False)
        converted = scratch / f"{path.name}.h5"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "HDF5 is a legacy format": the one both Kerases read
            model.save(converted)
    except Exception as exc:
        raise ImportRefused(
            f"{path} was saved by Keras 2 but tf_keras cannot read it back ({str(exc)[:300]}); save it with "
            "model.save('model.h5') from the Keras that trained it"
        ) from None
    return converted


def load_saved_model_checked(path: Path, signature: str) -> keras.Model:
    """The SavedModel at `path` over `signature`, refused when its graph reads or writes files or
    calls Python, or when the signature is not an image classifier's."""
    try:
        unsafe = unsafe_ops(path)
    except Exception as exc:
        raise ImportRefused(f"{path}/saved_model.pb cannot be read as a SavedModel ({str(exc)[:300]})") from None
    if unsafe:
        raise ImportRefused(
            f"the SavedModel's graph uses {', '.join(unsafe)} (file access or Python callbacks), which no image "
            "classifier's forward pass needs and the service will not run; export the model's forward pass alone"
        )
    try:
        return load_saved_model(path, signature)
    except SavedModelRefused as exc:
        raise ImportRefused(str(exc)) from None
    except Exception as exc:
        raise ImportRefused(f"{path} cannot be loaded as a SavedModel ({str(exc)[:300]})") from None


def import_model(
    model_path: Path,
    name: str,
    store_root: Path,
    classes: list[str] | None = None,
    initial_weights: Path | None = None,
    input_range: str | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    signature: str = DEFAULT_SIGNATURE,
) -> ImportReport:
    """`model_path` (.keras, Keras 2 .h5, or a SavedModel directory) checked and written into the
    store as the next version of `name`."""
    saved_model = is_saved_model(model_path)
    if model_path.is_dir() and not saved_model:
        raise ImportRefused(
            f"{model_path} is a folder without saved_model.pb; give a SavedModel directory, a .keras or a .h5 file"
        )
    if saved_model and (model_path / KERAS2_METADATA).is_file():
        # Saved by Keras 2 (tf.keras) with its layers: read back as a Keras model, layers and all.
        with tempfile.TemporaryDirectory(prefix="mindscope-import-") as scratch:
            converted = keras2_layers(model_path, Path(scratch))
            if converted is not None:
                report = import_model(converted, name, store_root, classes, initial_weights, input_range, mean, std)
                source = f"{model_path.name}: a Keras 2 SavedModel, layers read by tf_keras"
                return dataclasses.replace(report, source=source)
    if saved_model and initial_weights is not None:
        raise ImportRefused(
            "--initial-weights needs the Keras model: a SavedModel's variables cannot be matched to a weights "
            "file; import the .keras file instead, or leave out --initial-weights"
        )
    model = load_saved_model_checked(model_path, signature) if saved_model else load_checked(model_path)
    shape = image_input_shape(model)
    names = class_names(class_count(model), classes)
    chosen_range, range_source = input_range_of(model, input_range)
    if chosen_range == "mean-std" and (mean is None or std is None or len(mean) != shape[2] or len(std) != shape[2]):
        raise ImportRefused(f"--preprocessing mean-std needs --mean and --std with {shape[2]} values each")
    scale, offset = _probe_affine(chosen_range, mean, std)
    output = output_kind(model, shape, scale, offset)
    entry_dir = store_root / name / str((ModelStore(store_root).versions(name) or [0])[-1] + 1)
    metadata = {
        "class_names": names,
        "input_shape": list(shape),
        "preprocessing": _preprocessing(shape, chosen_range, mean, std),
        "output": output,
    }
    if saved_model:
        parts = saved_model_parts(model)
        assert parts is not None
        metadata |= {
            "signature": signature,
            "imported_from": {
                "folder": model_path.name,
                "saved_model_sha256": sha256_file(model_path / "saved_model.pb"),
            },
            "parameters": int(sum(int(np.prod(v.shape)) for pairs in parts.variables.values() for _, v in pairs)),
        }
        entry = write_saved_model_entry(entry_dir, model_path, metadata)
        return ImportReport(entry, shape, names, output, chosen_range, range_source, 0, False, saved_model=True)
    initial = keras.models.clone_model(model)
    if initial_weights is not None:
        try:
            initial.load_weights(initial_weights)
        except Exception as exc:
            raise ImportRefused(
                f"{initial_weights} does not fit this model ({str(exc)[:300]}); save it from the same "
                "architecture with model.save_weights('initial.weights.h5') before training"
            ) from None
    spatial = spatial_layer_names(model)
    if not spatial:
        raise ImportRefused("no layer of the model has a spatial (batch, H, W, C) output to show activations of")
    metadata |= {
        "activation_layers": spatial,
        "imported_from": {"file": model_path.name, "sha256": sha256_file(model_path)},
        "parameters": int(model.count_params()),
    }
    files = StoreEntryFiles(model, initial if initial_weights is not None else None, [])
    entry = write_store_entry(entry_dir, files, metadata)
    return ImportReport(
        entry, shape, names, output, chosen_range, range_source, len(spatial), initial_weights is not None
    )


def _preprocessing(
    shape: tuple[int, int, int], input_range: str, mean: list[float] | None, std: list[float] | None
) -> dict[str, Any]:
    preprocessing: dict[str, Any] = {
        "input_range": input_range,
        "color": "RGB (alpha composited on white)" if shape[2] == 3 else "greyscale (ITU-R 601 luma)",
        "resize": f"Pillow bilinear to {shape[1]}x{shape[0]}",
    }
    if input_range == "mean-std":
        preprocessing |= {"mean": mean, "std": std}
    return preprocessing
