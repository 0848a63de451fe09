"""Histograms of each layer's weights (kernel and bias; BatchNorm's four), before and after
training, on shared bin edges.

Two sets of weights can answer: `served`, the network the service runs, and `learned`, the
network as the optimizer trained it, for a model whose serving form folded BatchNorm into its
kernels (folding rescales each kernel by gamma / sqrt(var + eps), so the served "after" would be
compared with an unfolded "before"). `learned` is the default where the store keeps it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import keras
import numpy as np

from mindscope.engine.layer_paths import find_layer, weighted_layer_names
from mindscope.engine.loaded_model import LayerInfo, LoadedModel, layer_table, lookup_layer
from mindscope.engine.saved_model import SavedModelParts
from mindscope.engine.store import LEARNED_MODEL_FILE
from mindscope.errors import InitialWeightsMissing, WeightsMissing

Stage = Literal["initial", "trained", "both"]
Source = Literal["served", "learned"]
StageName = Literal["initial", "trained"]
Parameter = str  # the weight's name in its layer: kernel, bias, gamma, moving_mean, ...


@dataclass(frozen=True)
class StageHistogram:
    counts: np.ndarray  # int64 (bins,)
    mean: float
    std: float
    min: float
    max: float


@dataclass(frozen=True)
class ParameterHistogram:
    """Histograms of one weight tensor; both stages always share `edges` (float64, bins + 1)."""

    layer: str
    parameter: Parameter
    shape: tuple[int, ...]
    edges: np.ndarray
    stages: dict[StageName, StageHistogram]
    relative_change: float | None  # ||trained - initial|| / ||initial||; None when initial is all zeros


def _stage(values: np.ndarray, edges: np.ndarray) -> StageHistogram:
    counts, _ = np.histogram(values, bins=edges)
    return StageHistogram(counts, float(values.mean()), float(values.std()), float(values.min()), float(values.max()))


@dataclass(frozen=True)
class ParameterTensors:
    """One weight tensor of one layer, before (`initial`) and after (`trained`) training."""

    layer: str
    parameter: Parameter
    initial: np.ndarray | None  # None: the model's store entry has no initial weights
    trained: np.ndarray


@dataclass(frozen=True)
class WeightSet:
    """One set of a model's weights: the network, its layers with weights, their values before
    training (None when the store has none), and a sentence saying which weights these are."""

    source: Source
    model: keras.Model
    layers: tuple[LayerInfo, ...]
    initial: dict[str, list[np.ndarray]] | None
    note: str | None
    label: str  # the model version, for messages
    saved_model: SavedModelParts | None = None  # the variables by group, for a SavedModel

    def tensors(self, layer: str) -> tuple[list[str], list[np.ndarray]]:
        """The names and values of `layer`'s weights (a SavedModel's variable group's)."""
        if self.saved_model is not None:
            return self.saved_model.weights(layer)
        found = find_layer(self.model, layer)
        return parameter_names(found), found.get_weights()

    def layer(self, key: str) -> LayerInfo:
        return lookup_layer(self.layers, key, "with weights")


def weight_sources(loaded: LoadedModel) -> tuple[Source, ...]:
    """The sets `loaded` can show, the default first."""
    return ("learned", "served") if loaded.learned is not None else ("served",)


def weight_set(loaded: LoadedModel, source: Source | None = None) -> WeightSet:
    """`source`'s weights of `loaded`, by default the first of `weight_sources`."""
    chosen = source or weight_sources(loaded)[0]
    if chosen == "served":
        folded = loaded.metadata.get("architecture", {}).get("batch_norm")
        note = None if folded is None else f"BatchNorm: {folded}"
        if loaded.learned is not None:
            note = (
                "served: the kernels the service runs, BatchNorm folded into them; "
                "weights=learned shows the weights the optimizer learned"
            )
        if loaded.saved_model is not None:
            note = "SavedModel: its variables, grouped by the name before their last '/'"
        return WeightSet(
            "served",
            loaded.model,
            loaded.weight_layers,
            loaded.initial_weights,
            note,
            loaded.ref.label,
            loaded.saved_model,
        )
    if loaded.learned is None:
        raise WeightsMissing(
            f"{loaded.ref.label} keeps no separate learned weights (its store entry has no "
            f"{LEARNED_MODEL_FILE}): the served weights are the only ones; ask for weights=served",
            model=loaded.ref.label,
            valid_weights=["served"],
        )
    cached = loaded.extensions.get("weights.learned")
    if cached is None:
        model, initial = loaded.learned
        cached = WeightSet(
            "learned",
            model,
            layer_table(model, weighted_layer_names(model)),
            initial,
            "learned: the weights as the optimizer trained them, BatchNorm unfolded (each conv kernel, and "
            "its BatchNorm's gamma, beta, moving mean and variance); the service runs them folded, weights=served",
            loaded.ref.label,
        )
        loaded.extensions["weights.learned"] = cached
    return cast(WeightSet, cached)


def parameter_names(layer: keras.Layer) -> list[str]:
    """Each weight's name in its layer (kernel, bias, gamma, moving_mean...), made unique with
    its position where a nested model repeats one."""
    names = [weight.name for weight in layer.weights]
    return [name if names.count(name) == 1 else f"{name}_{i}" for i, name in enumerate(names)]


def weight_tensors(weights: WeightSet, layers: list[str] | None = None) -> list[ParameterTensors]:
    """Per layer with weights (all, or `layers` by name or index) and per weight tensor."""
    infos = [weights.layer(key) for key in layers] if layers else list(weights.layers)
    result = []
    for info in infos:
        names, trained = weights.tensors(info.name)
        initial = [None] * len(trained) if weights.initial is None else weights.initial[info.name]
        result += [ParameterTensors(info.name, p, b, a) for p, b, a in zip(names, initial, trained, strict=True)]
    return result


def resolve_stage(weights: WeightSet, stage: Stage | None) -> Stage:
    """The stage asked for; by default both, or only `trained` for weights without initial ones."""
    if stage is not None:
        return stage
    return "both" if weights.initial is not None else "trained"


def require_stages(weights: WeightSet, stage: Stage) -> tuple[StageName, ...]:
    """The stages `stage` names; 404 when it names `initial` and there are no initial weights."""
    stages: tuple[StageName, ...] = ("initial", "trained") if stage == "both" else (stage,)
    if "initial" in stages and weights.initial is None:
        raise InitialWeightsMissing(
            f"{weights.label} has no weights from before training (its store entry holds no "
            "initial.weights.h5), so there is no 'initial' stage; ask for stage=trained",
            model=weights.label,
            valid_stages=["trained"],
        )
    return stages


def weight_histograms(
    weights: WeightSet, stage: Stage = "both", layers: list[str] | None = None, bins: int = 50
) -> list[ParameterHistogram]:
    """Per layer with weights (all, or `layers` by name or index) and per parameter (kernel,
    bias, BatchNorm's four), both stages on shared bin edges."""
    stages = require_stages(weights, stage)
    result = []
    for tensors in weight_tensors(weights, layers):
        parameter, before, after = tensors.parameter, tensors.initial, tensors.trained
        both = after if before is None else np.concatenate([before.ravel(), after.ravel()])
        low, high = float(both.min()), float(both.max())
        edges = np.linspace(low, high if high > low else low + 1e-12, bins + 1)
        values: dict[StageName, np.ndarray] = (
            {"trained": after} if before is None else {"initial": before, "trained": after}
        )
        initial_norm = 0.0 if before is None else float(np.linalg.norm(before))
        change = 0.0 if before is None else float(np.linalg.norm(after - before))
        result.append(
            ParameterHistogram(
                layer=tensors.layer,
                parameter=parameter,
                shape=tuple(after.shape),
                edges=edges,
                stages={name: _stage(values[name], edges) for name in stages},
                relative_change=change / initial_norm if initial_norm > 0 else None,
            )
        )
    return result
