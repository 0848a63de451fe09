"""TF Serving's format: a SavedModel directory served through its serving signature.

A SavedModel holds a graph and its variables, not Keras layers. The serving signature (one image
input, one score per class) is wrapped as one Keras layer of a one-layer model, so prediction and
every gradient method run through the same compiled functions as a Keras model's (a restored
signature is differentiable in TensorFlow). Its variables, grouped by the name before their last
"/" (`conv1/kernel:0` is `kernel` of `conv1`), give the weight histograms. What needs a layer's
output (activations, Grad-CAM, embeddings) is refused with `LayersUnavailable`.

Loading a SavedModel runs its graph, as TF Serving does: the graph is the importer's to trust.
`unsafe_ops` refuses the graphs that read or write files or call back into Python, which no image
classifier needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

SAVED_MODEL_FILE = "saved_model.pb"
SAVED_MODEL_DIR = "saved_model"  # the SavedModel's folder inside a store entry
DEFAULT_SIGNATURE = "serving_default"
# File access and Python callbacks: nothing an image classifier's forward pass needs.
UNSAFE_OPS = frozenset(
    {
        "ReadFile",
        "WriteFile",
        "MatchingFiles",
        "DeleteFile",
        "PyFunc",
        "PyFuncStateless",
        "EagerPyFunc",
        "Print",
        "PrintV2",
    }
)
# The ops of the checkpoint saver every SavedModel carries, outside its signatures' functions.
_SAVER_FUNCTIONS = ("__inference_saver",)


class SavedModelRefused(ValueError):
    """The SavedModel cannot be served as a classifier; the message says why and what to do."""


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / SAVED_MODEL_FILE).is_file()


def unsafe_ops(path: Path) -> list[str]:
    """The file-access and Python-callback ops in the SavedModel's graph and functions, sorted."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / SAVED_MODEL_FILE).read_bytes())
    found: set[str] = set()
    for graph in proto.meta_graphs:
        found |= {node.op for node in graph.graph_def.node}
        for function in graph.graph_def.library.function:
            if not function.signature.name.startswith(_SAVER_FUNCTIONS):
                found |= {node.op for node in function.node_def}
    return sorted(found & UNSAFE_OPS)


@dataclass(frozen=True)
class Signature:
    """A serving signature with one image input and one (batch, classes) output."""

    function: Any  # the restored ConcreteFunction
    input_key: str
    output_key: str
    input_shape: tuple[int, int, int]
    classes: int

    def __call__(self, images: Any) -> Any:
        return self.function(**{self.input_key: images})[self.output_key]


def signature_of(root: Any, name: str) -> Signature:
    """`root`'s signature `name`, checked to be an image classifier's."""
    import tensorflow as tf  # here: the store imports this module where Keras runs on JAX

    signatures = dict(root.signatures)
    if name not in signatures:
        raise SavedModelRefused(
            f"the SavedModel has no signature {name!r}; it has {sorted(signatures) or 'none'}: pass --signature "
            "with one of them, or save it with signatures={'serving_default': ...}"
        )
    function = signatures[name]
    inputs = function.structured_input_signature[1]
    outputs = function.structured_outputs
    if len(inputs) != 1:
        raise SavedModelRefused(f"signature {name!r} takes {sorted(inputs)}; an image classifier takes one image")
    ((input_key, spec),) = inputs.items()
    shape = tuple(spec.shape)
    if spec.dtype != tf.float32 or len(shape) != 4 or any(d is None for d in shape[1:]) or shape[3] not in (1, 3):
        raise SavedModelRefused(
            f"signature {name!r} takes {input_key!r} as {spec.dtype.name} {list(shape)}; it must take float32 images "
            "(batch, height, width, channels) of a fixed height and width with 1 or 3 channels (a signature that "
            "takes encoded image bytes cannot be differentiated: export the model's own forward pass)"
        )
    if len(outputs) != 1:
        raise SavedModelRefused(
            f"signature {name!r} has {len(outputs)} outputs {sorted(outputs)}; a classifier has one, one score per "
            "class: export a signature that returns only the scores"
        )
    ((output_key, out),) = outputs.items()
    out_shape = tuple(out.shape)
    if len(out_shape) != 2 or out_shape[1] is None or out_shape[1] < 2:
        raise SavedModelRefused(
            f"signature {name!r} returns {output_key!r} of shape {list(out_shape)}; it must be (batch, classes), "
            "at least 2 classes"
        )
    return Signature(function, input_key, output_key, (int(shape[1]), int(shape[2]), int(shape[3])), int(out_shape[1]))


@dataclass(frozen=True)
class SavedModelParts:
    """What a served SavedModel offers besides its forward pass: its variables, by group."""

    path: Path
    signature: str
    variables: dict[str, list[tuple[str, tf.Variable]]]  # group -> (parameter, variable), in graph order

    def weights(self, group: str) -> tuple[list[str], list[np.ndarray]]:
        pairs = self.variables[group]
        return [name for name, _ in pairs], [variable.numpy() for _, variable in pairs]


class SignatureLayer(keras.layers.Layer):
    """A restored serving signature as a Keras layer (never saved: the store keeps the SavedModel)."""

    def __init__(self, signature: Signature, root: Any, parts: SavedModelParts, **kwargs: Any) -> None:
        super().__init__(trainable=False, **kwargs)
        self._signature = signature
        self._root = root  # the restored object owns the variables the signature captures
        self.parts = parts

    def call(self, inputs: Any) -> Any:
        return self._signature(inputs)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (input_shape[0], self._signature.classes)


def variable_groups(variables: list[tf.Variable]) -> dict[str, list[tuple[str, tf.Variable]]]:
    """`conv1/kernel:0` -> group `conv1`, parameter `kernel`; a name with no "/" is its own group."""
    groups: dict[str, list[tuple[str, tf.Variable]]] = {}
    for variable in variables:
        name = variable.name.split(":", 1)[0]
        group, _, parameter = name.rpartition("/")
        groups.setdefault(group or name, []).append((parameter, variable))
    return groups


def load_saved_model(path: Path, signature: str = DEFAULT_SIGNATURE) -> keras.Model:
    """The SavedModel at `path` as a one-layer Keras model over `signature` (`saved_model_parts`
    gives its variables)."""
    import tensorflow as tf

    root = tf.saved_model.load(str(path))
    chosen = signature_of(root, signature)
    parts = SavedModelParts(path, signature, variable_groups(list(chosen.function.variables)))
    inputs = keras.Input(chosen.input_shape, name="images")
    outputs = SignatureLayer(chosen, root, parts, name=signature)(inputs)
    return keras.Model(inputs, outputs, name=path.name)


def saved_model_parts(model: keras.Model) -> SavedModelParts | None:
    """The SavedModel behind a model `load_saved_model` built; None for a Keras model."""
    last = model.layers[-1] if model.layers else None
    return last.parts if isinstance(last, SignatureLayer) else None
