"""Histograms of each layer's kernel and bias, before and after training, on shared bin edges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from mindscope.engine.runtime import LoadedModel

Stage = Literal["initial", "trained", "both"]
StageName = Literal["initial", "trained"]
Parameter = Literal["kernel", "bias"]
PARAMETERS: tuple[Parameter, Parameter] = ("kernel", "bias")


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
    initial: np.ndarray
    trained: np.ndarray


def weight_tensors(loaded: LoadedModel, layers: list[str] | None = None) -> list[ParameterTensors]:
    """Per conv layer (all, or `layers` by name or index) and per parameter (kernel, bias)."""
    infos = [loaded.layer(key) for key in layers] if layers else list(loaded.layers)
    return [
        ParameterTensors(info.name, parameter, before, after)
        for info in infos
        for parameter, before, after in zip(
            PARAMETERS, loaded.initial_weights[info.name], loaded.model.get_layer(info.name).get_weights(), strict=True
        )
    ]


def weight_histograms(
    loaded: LoadedModel, stage: Stage = "both", layers: list[str] | None = None, bins: int = 50
) -> list[ParameterHistogram]:
    """Per conv layer (all, or `layers` by name or index) and per parameter (kernel, bias), both
    stages on shared bin edges."""
    stages: tuple[StageName, ...] = ("initial", "trained") if stage == "both" else (stage,)
    result = []
    for tensors in weight_tensors(loaded, layers):
        parameter, before, after = tensors.parameter, tensors.initial, tensors.trained
        low = float(min(before.min(), after.min()))
        high = float(max(before.max(), after.max()))
        edges = np.linspace(low, high if high > low else low + 1e-12, bins + 1)
        values: dict[StageName, np.ndarray] = {"initial": before, "trained": after}
        initial_norm = float(np.linalg.norm(before))
        change = float(np.linalg.norm(after - before))
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
