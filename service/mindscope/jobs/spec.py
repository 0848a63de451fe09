"""What a job asks for: its kind of work, the model, the method and its parameters, and where its
images are. Checked whole at submit, with the synchronous routes' own errors, before anything is
stored; kept as JSON in the job's row so a restarted server runs the same work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mindscope.dataplane.decoding import Instance
from mindscope.dataplane.parameters import ExplainParameters
from mindscope.engine.concepts import MIN_RUNS
from mindscope.engine.embedding import embedding_layer
from mindscope.engine.explain.evaluation import Evaluate
from mindscope.engine.explain.method import Caps, Context, Method
from mindscope.engine.explain.registry import method_named
from mindscope.engine.explain.runner import check
from mindscope.engine.layer_paths import SEPARATOR
from mindscope.engine.loaded_model import LoadedModel
from mindscope.errors import InvalidInput
from mindscope.jobs.indexes import check_name

JobKind = Literal["predict", "explain", "index", "tcav", "audit"]


class JobRequest(BaseModel):
    """POST /jobs as JSON. The images: `folder` (under the server's MINDSCOPE_DATA_ROOT) or
    `instances` (as /predict takes them); an archive is uploaded instead of either (multipart
    field `archive` beside a `job` field with this JSON, or a raw zip/tar body with these fields in
    the query)."""

    model_config = ConfigDict(extra="forbid")

    kind: JobKind = Field(
        description="predict; explain (with `method`); or index: embed the images at a layer and keep a "
        'nearest-neighbour index of them for POST /explain/examples (parameters {"name": ..., "layer": ...}); '
        "or tcav: how much a registered concept moves a class's score over these images (the class's images; "
        'parameters {"concept": ..., "target": ..., "random_folder": ..., "layers": [...], "runs": 10, "seed": 0}); '
        "or audit: a report of a labelled dataset (accuracy, confusion, calibration, mistakes, trust in the "
        "explanations per class, what each channel responds to), GET /jobs/{id}/report"
    )
    model: str | None = Field(None, max_length=64, description="model name; default: the store's")
    version: int | None = Field(None, ge=1, description="model version; default: its newest, pinned at submit")
    method: str | None = Field(None, max_length=64, description="explain: a method of GET /explain")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="explain: the method's parameters and target, score, evaluate, evaluate_steps, SmoothGrad's, "
        'as POST /explain/{method} takes them in its query, e.g. {"steps": 32, "evaluate": ["deletion"]}; '
        'index: {"name": "cifar-train", "layer": "conv8"} (layer: default, the one feeding the classifier)',
    )
    folder: str | None = Field(None, max_length=1024, description="a folder relative to the data root")
    instances: list[Instance] | None = Field(None, min_length=1, description="images, as /predict takes them")
    value_range: Literal["0-255", "0-1"] | None = Field(None, description="of raw array instances, as /predict")


@dataclass(frozen=True)
class Indexing:
    name: str
    layer: str


class TcavParameters(BaseModel):
    """A tcav job's parameters (the job's images are the class's)."""

    model_config = ConfigDict(extra="forbid")

    concept: str = Field(max_length=64, description="a concept of GET /concepts")
    target: str | int = Field(description="the class whose score is tested: index or name")
    random_folder: str = Field(
        max_length=1024, description="a data-root folder the random counterexample sets are drawn from"
    )
    layers: list[str] | None = Field(None, max_length=8, description="default: the layers the animation walks")
    runs: int = Field(MIN_RUNS, ge=MIN_RUNS, le=50, description="random sets the concept is tested against")
    size: int | None = Field(None, ge=5, le=500, description="images in each random set; default: the concept's")
    seed: int = Field(0, ge=0, description="draws the random sets and seeds the classifiers")


@dataclass(frozen=True)
class Testing:
    """A tcav job's parameters, checked against the model."""

    concept: str
    target: int
    random_folder: str
    layers: tuple[str, ...]
    runs: int
    size: int | None
    seed: int
    score: str


TrustScore = Literal["deletion", "insertion", "sanity"]
DEFAULT_TRUST: tuple[TrustScore, ...] = ("deletion", "insertion")


class AuditParameters(BaseModel):
    """An audit job's parameters (the job's images are the labelled dataset)."""

    model_config = ConfigDict(extra="forbid")

    methods: list[str] = Field(
        default_factory=lambda: ["grad-cam", "integrated-gradients"],
        min_length=1,
        max_length=4,
        description="methods whose trust is measured class by class; the first two draw the mistakes' maps",
    )
    evaluate: list[TrustScore] = Field(
        default_factory=lambda: list(DEFAULT_TRUST), min_length=1, description="the trust scores"
    )
    explain_per_class: int = Field(10, ge=0, le=1000, description="images of each class the methods explain")
    layers: list[str] | None = Field(None, max_length=4, description="layers whose channels' examples are shown")
    channels: int = Field(8, ge=1, le=64, description="each layer's first channels shown")
    examples: int = Field(6, ge=1, le=16, description="dataset examples a channel")
    mistakes: int = Field(6, ge=0, le=32, description="confident mistakes (and unsure correct answers) shown")
    visualization_steps: int = Field(128, ge=8, le=1024, description="gradient-ascent steps of each feature picture")


@dataclass(frozen=True)
class Auditing:
    """An audit job's parameters, checked against the model."""

    methods: tuple[tuple[Method, ExplainParameters], ...]
    explain_per_class: int
    layers: tuple[str, ...]
    channels: int
    examples: int
    mistakes: int
    visualization_steps: int


@dataclass(frozen=True)
class Work:
    """A job's work, parsed and checked against its model."""

    kind: JobKind
    method: Method | None
    explaining: ExplainParameters | None
    context: Context
    indexing: Indexing | None = None
    testing: Testing | None = None
    auditing: Auditing | None = None

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
    if request.kind == "index":
        return Work("index", None, None, Context(caps=caps), indexing(request, model))
    if request.kind == "audit":
        return Work("audit", None, None, Context(caps=caps), auditing=auditing(request, model, caps))
    if request.kind == "tcav":
        return Work("tcav", None, None, Context(caps=caps), testing=testing(request, model))
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


def indexing(request: JobRequest, model: LoadedModel) -> Indexing:
    if request.method is not None:
        raise InvalidInput("an index job takes no method; it embeds the images at a layer")
    unknown = sorted(set(request.parameters) - {"name", "layer"})
    if unknown:
        raise InvalidInput(f"an index job takes the parameters name and layer; not {', '.join(unknown)}")
    layer = request.parameters.get("layer")
    if layer is not None and not isinstance(layer, str | int):
        raise InvalidInput("layer is a layer's name or 1-based index (GET /models/{name} lists them)")
    chosen = embedding_layer(model, None if layer is None else str(layer))
    return Indexing(check_name(request.parameters.get("name")), chosen.name)


def testing(request: JobRequest, model: LoadedModel) -> Testing:
    if request.method is not None:
        raise InvalidInput("a tcav job takes no method; it tests a concept (parameters.concept)")
    try:
        asked = TcavParameters.model_validate(request.parameters)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'parameters'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"the tcav parameters are not valid: {problems}") from None
    if asked.layers:
        layers = tuple(model.layer(key).name for key in asked.layers)
        nested = [name for name in layers if SEPARATOR in name]
        if nested:
            raise InvalidInput(
                f"{nested[0]} is inside a nested model; TCAV takes gradients with respect to layers of the outer "
                "model: name outer layers (GET /models/{name} lists the layers)",
                layer=nested[0],
            )
    else:  # the animation's layers, those of the outer model; else its last spatial layer
        outer = [info.name for info in model.layers if SEPARATOR not in info.name]
        layers = tuple(name for name in model.animation_layers if SEPARATOR not in name) or tuple(outer[-1:])
        if not layers:
            raise InvalidInput("the model has no outer layer with a spatial output to test concepts at")
    score = "logit" if "logit" in model.scores else "probability"
    return Testing(
        asked.concept,
        model.class_index(asked.target),
        asked.random_folder,
        layers,
        asked.runs,
        asked.size,
        asked.seed,
        score,
    )


def auditing(request: JobRequest, model: LoadedModel, caps: Caps) -> Auditing:
    if request.method is not None:
        raise InvalidInput("an audit job takes no method; name the methods to trust in parameters.methods")
    try:
        asked = AuditParameters.model_validate(request.parameters)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'parameters'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"the audit parameters are not valid: {problems}") from None
    methods = []
    for name in asked.methods:
        method = method_named(name)
        explaining = ExplainParameters.of(method, {"evaluate": list(asked.evaluate)})
        check(model, method, explaining.params, Context(caps=caps), explaining.ask.evaluation())
        methods.append((method, explaining))
    if asked.layers:
        layers = tuple(model.layer(key).name for key in asked.layers)
    else:
        names = [name for name in model.animation_layers if SEPARATOR not in name] or [model.layers[-1].name]
        layers = (names[len(names) // 2],)
    return Auditing(
        tuple(methods),
        asked.explain_per_class,
        layers,
        asked.channels,
        asked.examples,
        asked.mistakes,
        asked.visualization_steps,
    )
