"""Histograms of each layer's weights (kernel and bias; BatchNorm's four), before and after
training, on shared bin edges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import keras
import numpy as np

from mindscope.engine.layer_paths import find_layer
from mindscope.engine.loaded_model import LoadedModel
from mindscope.errors import InitialWeightsMissing

Stage = Literal["initial", "trained", "both"]
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


def parameter_names(layer: keras.Layer) -> list[str]:
    """Each weight's name in its layer (kernel, bias, gamma, moving_mean...), made unique with
    its position where a nested model repeats one."""
    names = [weight.name for weight in layer.weights]
    return [name if names.count(name) == 1 else f"{name}_{i}" for i, name in enumerate(names)]


def weight_tensors(loaded: LoadedModel, layers: list[str] | None = None) -> list[ParameterTensors]:
    """Per layer with weights (all, or `layers` by name or index) and per weight tensor."""
    infos = [loaded.weight_layer(key) for key in layers] if layers else list(loaded.weight_layers)
    result = []
    for info in infos:
        layer = find_layer(loaded.model, info.name)
        trained = layer.get_weights()
        initial = [None] * len(trained) if loaded.initial_weights is None else loaded.initial_weights[info.name]
        names = parameter_names(layer)
        result += [ParameterTensors(info.name, p, b, a) for p, b, a in zip(names, initial, trained, strict=True)]
    return result


def resolve_stage(loaded: LoadedModel, stage: Stage | None) -> Stage:
    """The stage asked for; by default both, or only `trained` for a model without initial weights."""
    if stage is not None:
        return stage
    return "both" if loaded.initial_weights is not None else "trained"


def require_stages(loaded: LoadedModel, stage: Stage) -> tuple[StageName, ...]:
    """The stages `stage` names; 404 when it names `initial` and the model has no initial weights."""
    stages: tuple[StageName, ...] = ("initial", "trained") if stage == "both" else (stage,)
    if "initial" in stages and loaded.initial_weights is None:
        raise InitialWeightsMissing(
            f"{loaded.ref.label} has no weights from before training (its store entry holds no "
            "initial.weights.h5), so there is no 'initial' stage; ask for stage=trained",
            model=loaded.ref.label,
            valid_stages=["trained"],
        )
    return stages


def weight_histograms(
    loaded: LoadedModel, stage: Stage = "both", layers: list[str] | None = None, bins: int = 50
) -> list[ParameterHistogram]:
    """Per conv layer (all, or `layers` by name or index) and per parameter (kernel, bias), both
    stages on shared bin edges."""
    stages = require_stages(loaded, stage)
    result = []
    for tensors in weight_tensors(loaded, layers):
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
