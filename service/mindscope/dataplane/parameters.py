"""What every explanation takes beside the image, as one set of models for every front end: the
REST routes read them from the query (query models), the V1 protocol and jobs from a JSON
`parameters` object; one set of bounds for all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field

from mindscope.engine.explain.evaluation import Evaluate
from mindscope.engine.explain.explanation import Smoothing
from mindscope.engine.explain.method import Method, MethodParams, Score, validated
from mindscope.errors import InvalidInput


def split_commas(values: object) -> object:
    """`?channels=0,1,2`, `?channels=0&channels=1&channels=2` and any mix of the two are one list."""
    if isinstance(values, str):  # JSON parameters (V1 :explain) may give the comma form as one string
        values = [values]
    if not isinstance(values, list):
        return values
    return [part.strip() for value in values for part in str(value).split(",") if part.strip()]


# Every list-valued query parameter takes this beside its Query(...): both forms, everywhere
# (tests/api/test_query_lists.py checks each array parameter of the OpenAPI schema).
CommaSeparated = BeforeValidator(split_commas)


def _as_text(value: object) -> object:
    """A class index sent as a JSON number is the same as its digits in a query string."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class AskParameters(BaseModel):
    """What every method takes beside its own parameters: the REST routes read them from the query
    (a query model), the V1 protocol from its JSON `parameters`; one set of bounds for both."""

    target: Annotated[str | None, BeforeValidator(_as_text)] = Field(
        None, max_length=64, description="class index or name; default: the predicted class"
    )
    score: Score = Field(
        "probability",
        description="what to attribute: the target's probability, or its logit (pre-softmax score; for models "
        "that output logits or end in a separate softmax layer; GET /models/{name} lists a model's scores)",
    )
    evaluate: Annotated[list[str] | None, CommaSeparated] = Field(
        None,
        max_length=8,
        description="scores of the map, comma-separated or repeated: deletion, insertion (probability curves "
        "and their areas), sanity (rank correlation with the same method on the untrained model)",
    )
    evaluate_steps: int = Field(16, ge=2, le=256, description="points of the deletion/insertion curves")

    def evaluation(self) -> Evaluate:
        return Evaluate(tuple(dict.fromkeys(self.evaluate or ())), self.evaluate_steps)


class SmoothingParameters(BaseModel):
    """SmoothGrad, for the methods that take it."""

    samples: int = Field(
        0, description="SmoothGrad: noisy copies to average, 0 (off) to the cap (MINDSCOPE_MAX_SAMPLES)"
    )
    noise: float = Field(0.15, gt=0, le=1, description="SmoothGrad: noise sigma / (max - min of the image)")
    smooth: Literal["mean", "square", "var"] = Field(
        "mean", description="SmoothGrad: how samples combine: mean (SmoothGrad), square (SquareGrad), var (VarGrad)"
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="SmoothGrad: the noise's seed")

    def smoothing(self) -> Smoothing:
        return Smoothing(self.samples, self.noise, self.smooth, self.seed)


@dataclass(frozen=True)
class ExplainParameters:
    """A JSON `parameters` object split into the method's own, the shared ones and SmoothGrad's,
    each validated by the same models the REST routes read from the query."""

    params: MethodParams
    ask: AskParameters
    smoothing: Smoothing

    @classmethod
    def of(cls, method: Method, values: object) -> ExplainParameters:
        if not isinstance(values, dict):
            raise InvalidInput('"parameters" is an object of the method\'s parameters, e.g. {"steps": 32}')
        shared = set(AskParameters.model_fields)
        smoothing = set(SmoothingParameters.model_fields) if method.smooths else set()
        own = {k: v for k, v in values.items() if k not in shared | smoothing}
        ask = validated(AskParameters, {k: v for k, v in values.items() if k in shared}, "parameters")
        smooth = validated(SmoothingParameters, {k: v for k, v in values.items() if k in smoothing}, "parameters")
        return cls(method.parse(own), ask, smooth.smoothing())
