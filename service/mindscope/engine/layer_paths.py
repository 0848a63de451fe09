"""Every layer of a Keras model by path, layers inside nested models included.

A model built around another (`keras.Sequential([..., MobileNetV3Small(include_top=False), ...])`,
the usual transfer-learning shape) has the backbone as one layer; its own layers are what a user
wants to look at. They are named by path, `MobileNetV3Small/expanded_conv_project_bn` (Keras layer
names cannot contain "/"). A layer's output is the one in its parent's graph (`node`): a nested
model's `.output` is its own graph's, and a loaded Sequential's layers keep stale nodes from
earlier builds. A nested model is entered when its parent calls it once, on one input; a layer
its parent calls several times (shared) has no one output and is not tapped.

`tap` builds the function that returns the outputs of any such layers in one forward pass: the
outer graph is cut at the taps and at each nested model's input, and the nested model's own
taps are computed from there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import keras

SEPARATOR = "/"


def _graph(model: keras.Model) -> Any:
    """The functional graph of `model` (a Sequential keeps one in `_functional` once built)."""
    return getattr(model, "_functional", None) or model


def node(parent: keras.Model, layer: keras.Layer) -> Any | None:
    """The one call of `layer` in `parent`'s graph; None when it is called more than once."""
    calls = [n for nodes in _graph(parent)._nodes_by_depth.values() for n in nodes if n.operation is layer]
    return calls[0] if len(calls) == 1 and len(calls[0].output_tensors) == 1 else None


def _enterable(parent: keras.Model, layer: keras.Layer) -> bool:
    call = node(parent, layer) if isinstance(layer, keras.Model) else None
    return call is not None and len(call.input_tensors) == 1 and len(layer.inputs) == 1


def walk(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.Model, keras.Layer]]:
    """(path, parent, layer) for every layer in order, a nested model before its own layers; no
    InputLayers."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = prefix + layer.name
        yield path, model, layer
        if _enterable(model, layer):
            yield from walk(layer, path + SEPARATOR)


def spatial_layer_names(model: keras.Model) -> list[str]:
    """Layers whose output is a (batch, H, W, C) map: the ones with activations to show."""
    names = []
    for path, parent, layer in walk(model):
        call = node(parent, layer)
        if call is not None and len(call.output_tensors[0].shape) == 4:
            names.append(path)
    return names


def weighted_layer_names(model: keras.Model) -> list[str]:
    """Layers that own weights; a nested model that is entered owns none itself (its layers do)."""
    return [path for path, parent, layer in walk(model) if layer.weights and not _enterable(parent, layer)]


def _parent_and_layer(model: keras.Model, path: str) -> tuple[keras.Model, keras.Layer]:
    parent, layer = model, model
    for part in path.split(SEPARATOR):
        if not isinstance(layer, keras.Model):
            raise ValueError(f"no layer {path!r}: {layer.name} has no layers inside it")
        parent, layer = layer, layer.get_layer(part)
    return parent, layer


def find_layer(model: keras.Model, path: str) -> keras.Layer:
    """The layer at `path`; ValueError when there is none."""
    return _parent_and_layer(model, path)[1]


def _call(model: keras.Model, path: str) -> Any:
    call = node(*_parent_and_layer(model, path))
    if call is None:
        raise ValueError(f"{path} is called more than once; it has no one output to tap")
    return call


def graph_output(model: keras.Model, name: str) -> Any:
    """The output tensor of the outer model's layer `name` in the model's own graph (not inside
    a nested model), for a function that needs it in the same graph as the model's output."""
    if SEPARATOR in name:
        raise ValueError(f"{name} is inside a nested model")
    return _call(model, name).output_tensors[0]


def graph_input(model: keras.Model) -> Any:
    return _graph(model).input


def graph_outputs(model: keras.Model) -> list[Any]:
    return list(_graph(model).outputs)


def output_shape(model: keras.Model, path: str) -> tuple[int, ...]:
    """The output shape of the layer at `path`, without the batch axis."""
    return tuple(_call(model, path).output_tensors[0].shape[1:])


def tap(model: keras.Model, paths: list[str]) -> Callable[[Any], list[Any]]:
    """inputs -> the outputs of the layers at `paths`, in that order, from one forward pass."""
    direct = [p for p in paths if SEPARATOR not in p]
    nested: dict[str, list[str]] = {}
    for path in paths:
        if SEPARATOR in path:
            head, rest = path.split(SEPARATOR, 1)
            nested.setdefault(head, []).append(rest)
    for head in nested:
        if not _enterable(model, model.get_layer(head)):
            raise ValueError(f"{head} is called more than once or on several inputs; its layers cannot be tapped")
    # One cut of the outer graph: the direct taps, then each nested model's input.
    cut = [_call(model, p).output_tensors[0] for p in direct]
    cut += [_call(model, head).input_tensors[0] for head in nested]
    outer = keras.Model(_graph(model).input, cut)
    inner_taps = {head: tap(model.get_layer(head), rests) for head, rests in nested.items()}

    def outputs(inputs: Any) -> list[Any]:
        values = outer(inputs, training=False)
        values = list(values) if isinstance(values, list | tuple) else [values]
        found = dict(zip(direct, values[: len(direct)], strict=True))
        for (head, rests), fed in zip(nested.items(), values[len(direct) :], strict=True):
            found |= {f"{head}{SEPARATOR}{r}": v for r, v in zip(rests, inner_taps[head](fed), strict=True)}
        return [found[p] for p in paths]

    return outputs


def logit_tensor(model: keras.Model) -> Any | None:
    """The model's pre-softmax scores in its graph, when its softmax is a layer of its own
    (keras.layers.Softmax, or Activation("softmax")) applied last over the class axis; None
    otherwise."""
    last = model.layers[-1]
    softmax = isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and getattr(last.activation, "__name__", "") == "softmax"
    )
    call = node(model, last) if softmax and len(model.outputs) == 1 else None
    if call is None or len(call.input_tensors[0].shape) != 2:
        return None
    return call.input_tensors[0]


def logit_model(model: keras.Model) -> keras.Model | None:
    """The model up to its softmax (`logit_tensor`), or None."""
    logits = logit_tensor(model)
    return None if logits is None else keras.Model(graph_input(model), logits)
