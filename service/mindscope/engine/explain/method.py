"""The one contract every explanation method follows (PAIR saliency's `CoreSaliency` over one model
call, Captum's `attribute(inputs, target, **params)`).

A method is one object: its `name` (the route and the registry key), its `title` (pictures), a typed
`Params` model (its own parameters, their defaults and bounds; the server-wide caps come from
`Caps`), `rows(...)`, what it will cost in model rows before it runs, and `run(...)`. Every model
call goes through the `ModelPort`: forward probabilities, input gradients of a score, a layer's
activations and gradients, all through the model's shared batchers with the current request's
deadline and cancellation (`engine.work`). The runner (`runner.py`) picks the target, applies the
caps, SmoothGrad and the trust scores; front ends never call a method any other way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mindscope.engine.explain.explanation import NO_SMOOTHING, Explanation, Smoothing
from mindscope.engine.explain.rows import GradientFn
from mindscope.errors import InvalidInput

if TYPE_CHECKING:
    from mindscope.config import Settings
    from mindscope.engine.explain.grad_cam import LayerGradientFn
    from mindscope.engine.loaded_model import LayerInfo

Score = Literal["probability", "logit"]
BaseModelT = TypeVar("BaseModelT", bound=BaseModel)
Sign = Literal["all", "positive", "negative", "absolute"]
MIN_STEPS = 2


class ModelPort(Protocol):
    """What a method may ask of a model (a `LoadedModel` is one)."""

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    @property
    def layers(self) -> Sequence[LayerInfo]: ...

    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, H, W, C) -> probabilities (N, K), through the forward batcher."""
        ...

    def gradients_for(self, score: str) -> GradientFn:
        """d score[target] / d image for rows of images, through the gradient batcher."""
        ...

    def layer_gradients(self, name: str, score: str = "probability") -> LayerGradientFn:
        """A layer's activations and d score[target] / d them."""
        ...

    def layer(self, key: str) -> LayerInfo: ...


@dataclass(frozen=True)
class Caps:
    """The server-wide limits on one explanation (Settings: MINDSCOPE_MAX_STEPS, ...)."""

    max_steps: int = 1024
    max_rows: int = 16_384
    max_samples: int = 64
    rows_per_chunk: int = 64  # MINDSCOPE_INTERNAL_BATCH_SIZE: gradient rows queued per chunk

    @classmethod
    def of(cls, settings: Settings) -> Caps:
        return cls(settings.max_steps, settings.max_rows, settings.max_samples, settings.internal_batch_size)

    def steps(self, asked: int | None, default: int) -> int:
        """`asked`, or the method's default (the cap where that is lower), within 2..max_steps."""
        chosen = min(default, self.max_steps) if asked is None else asked
        return within("steps", chosen, MIN_STEPS, self.max_steps, "MINDSCOPE_MAX_STEPS")


def within(name: str, value: int, minimum: int, maximum: int, setting: str, unit: str = "") -> int:
    """`value` if it lies within [minimum, maximum], the cap being a Setting; else 422 saying both."""
    if minimum <= value <= maximum:
        return value
    counted = f"{value} {unit}".strip()
    raise InvalidInput(
        f"{name} must be between {minimum} and {maximum} {unit}".rstrip()
        + f" (this server's cap, {setting}); got {counted}",
        parameter=name,
        minimum=minimum,
        maximum=maximum,
    )


def steps_field(default: int) -> Any:
    """`steps` of a path method: its default, or the server's cap where that is lower."""
    return Field(
        None,
        description=f"points of the path, from 2 to the server's cap (MINDSCOPE_MAX_STEPS); default {default}, "
        "or the cap where it is lower",
    )


def validated(model: type[BaseModelT], values: dict[str, object], what: str) -> BaseModelT:
    """`model` from plain values, or 422 naming each value that is wrong and why."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = [{"parameter": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()]
        described = "; ".join(f"{e['parameter']}: {e['message']}" for e in errors)
        raise InvalidInput(f"invalid {what}: {described}", errors=errors) from None


class MethodParams(BaseModel):
    """A method's own parameters; subclasses add fields (with `Field` bounds and descriptions)."""

    model_config = ConfigDict(frozen=True)


@dataclass(frozen=True)
class Context:
    """What every run is asked with besides the image, target and the method's own parameters."""

    score: Score = "probability"
    smoothing: Smoothing = NO_SMOOTHING
    caps: Caps = Caps()
    baseline_image: np.ndarray | None = None  # an uploaded baseline (integrated gradients)


class Method(ABC):
    """One explanation method. Subclasses set the class attributes and implement `rows` and `run`."""

    name: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]  # one line for GET /explain, the OpenAPI schema and the CLI help
    Params: ClassVar[type[MethodParams]]
    smooths: ClassVar[bool] = True  # takes SmoothGrad (samples, noise, smooth, seed)
    sign: ClassVar[Sign] = "all"  # how its picture shows the map by default
    signed: ClassVar[bool] = True  # the request may choose `sign`
    scores: ClassVar[tuple[Score, ...]] = ("probability", "logit")
    answer: ClassVar[str] = "explanation"  # the answer's shape: "explanation" or "integrated-gradients"
    lane: ClassVar[Literal["gradients", "forward"]] = "gradients"  # the batcher its rows go to

    def what_rows(self) -> str:
        """What the rows count, for the cap's message."""
        return "samples"

    def parse(self, values: dict[str, object]) -> MethodParams:
        """The parameters from a plain mapping (the V1 protocol's JSON `parameters`), or 422 naming them."""
        known = set(self.Params.model_fields)
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidInput(
                f"{self.name} takes no parameter {', '.join(unknown)}; it takes: {', '.join(sorted(known)) or 'none'}",
                unknown=unknown,
                valid=sorted(known),
            )
        return validated(self.Params, values, f"{self.name}'s parameters")

    def check(self, port: ModelPort, params: MethodParams, context: Context) -> None:  # noqa: B027
        """Refuse what this method cannot do for this model and request, before any work."""

    @abstractmethod
    def rows(self, port: ModelPort, params: MethodParams, context: Context) -> int:
        """Model rows one image costs (before SmoothGrad's samples multiply it)."""

    def depth(self, port: ModelPort, params: MethodParams, context: Context) -> int:
        """Model calls that must run one after another (each needs the last one's answer): 1 for a
        method that queues all its rows at once, the steps for a path the gradients choose."""
        return 1

    @abstractmethod
    def run(
        self, port: ModelPort, image: np.ndarray, target: int, params: MethodParams, context: Context
    ) -> Explanation:
        """float32 (H, W, C) image in [0, 1] (the model's input) -> its map for class `target`."""


class PathMethod(Method):
    """A method that walks `paths` paths of `steps` points each (integrated gradients and its
    kin): one gradient row a point, the steps from the request or the method's default, capped."""

    default_steps: ClassVar[int]
    paths: ClassVar[int] = 1

    def steps(self, params: MethodParams, context: Context) -> int:
        return context.caps.steps(getattr(params, "steps", None), self.default_steps)

    def what_rows(self) -> str:
        return "samples x steps" if self.paths == 1 else f"{self.paths} baselines x steps"

    def rows(self, port: ModelPort, params: MethodParams, context: Context) -> int:
        return self.paths * self.steps(params, context)
