"""What a job asks for: its kind of work, the model, the method and its parameters, and where its
images are. Checked whole at submit, with the synchronous routes' own errors, before anything is
stored; kept as JSON in the job's row so a restarted server runs the same work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mindscope.dataplane.decoding import Instance
from mindscope.dataplane.parameters import ExplainParameters
from mindscope.engine.explain.evaluation import Evaluate
from mindscope.engine.explain.method import Caps, Context, Method
from mindscope.engine.explain.registry import method_named
from mindscope.engine.explain.runner import check
from mindscope.engine.loaded_model import LoadedModel
from mindscope.errors import InvalidInput

JobKind = Literal["predict", "explain"]


class JobRequest(BaseModel):
    """POST /jobs as JSON. The images: `folder` (under the server's MINDSCOPE_DATA_ROOT) or
    `instances` (as /predict takes them); an archive is uploaded instead of either (multipart
    field `archive` beside a `job` field with this JSON, or a raw zip/tar body with these fields in
    the query)."""

    model_config = ConfigDict(extra="forbid")

    kind: JobKind = Field(description="predict, or explain (with `method`)")
    model: str | None = Field(None, max_length=64, description="model name; default: the store's")
    version: int | None = Field(None, ge=1, description="model version; default: its newest, pinned at submit")
    method: str | None = Field(None, max_length=64, description="explain: a method of GET /explain")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="explain: the method's parameters and target, score, evaluate, evaluate_steps, SmoothGrad's, "
        'as POST /explain/{method} takes them in its query, e.g. {"steps": 32, "evaluate": ["deletion"]}',
    )
    folder: str | None = Field(None, max_length=1024, description="a folder relative to the data root")
    instances: list[Instance] | None = Field(None, min_length=1, description="images, as /predict takes them")
    value_range: Literal["0-255", "0-1"] | None = Field(None, description="of raw array instances, as /predict")


@dataclass(frozen=True)
class Work:
    """A job's work, parsed and checked against its model."""

    kind: JobKind
    method: Method | None
    explaining: ExplainParameters | None
    context: Context

    @property
    def evaluate(self) -> Evaluate:
        return Evaluate() if self.explaining is None else self.explaining.ask.evaluation()


def parse_work(request: JobRequest, model: LoadedModel, caps: Caps) -> Work:
    """The job's work, refused with the synchronous routes' errors (404 unknown method, 422 bad
    parameters or over a cap) before anything is stored."""
    if request.kind == "predict":
        if request.method is not None or request.parameters:
            raise InvalidInput("a predict job takes no method or parameters; use kind=explain to explain")
        return Work("predict", None, None, Context(caps=caps))
    if request.method is None:
        raise InvalidInput("an explain job needs a method (GET /explain lists them), e.g. integrated-gradients")
    method = method_named(request.method)
    explaining = ExplainParameters.of(method, request.parameters)
    context = Context(explaining.ask.score, explaining.smoothing, caps)
    evaluate = explaining.ask.evaluation()
    check(model, method, explaining.params, context, evaluate)
    if explaining.ask.target is not None:
        model.class_index(explaining.ask.target)  # 422 naming the classes, before any work
    return Work("explain", method, explaining, context)
