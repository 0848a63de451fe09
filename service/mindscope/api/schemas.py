"""Wire schemas, named by direction. Arrays travel as {shape, dtype, data} with data row-major."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mindscope.dataplane.decoding import ImageInfo


class ArrayPayload(BaseModel):
    shape: list[int]
    dtype: Literal["float32", "int64"]
    data: list[float] | list[int] = Field(description="values in row-major (C) order; len = prod(shape)")

    @classmethod
    def of(cls, array: np.ndarray) -> ArrayPayload:
        if np.issubdtype(array.dtype, np.integer):
            return cls(shape=list(array.shape), dtype="int64", data=array.astype(np.int64).ravel().tolist())
        return cls(shape=list(array.shape), dtype="float32", data=array.astype(np.float32).ravel().tolist())


class ErrorDetail(BaseModel):
    code: str = Field(examples=["unknown_layer"])
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelRefOut(BaseModel):
    name: str
    version: int


class Prediction(BaseModel):
    label: str
    class_index: int
    confidence: float
    probabilities: ArrayPayload
    classes: list[str]
    input: ImageInfo


class PredictResponse(Prediction):
    model: ModelRefOut


class BatchPredictResponse(BaseModel):
    predictions: list[Prediction]
    model: ModelRefOut


class LayerOut(BaseModel):
    index: int = Field(description="1-based: layer 3 is conv3")
    name: str
    output_shape: list[int]


class ChannelStatistics(BaseModel):
    mean: ArrayPayload
    max: ArrayPayload
    fraction_positive: ArrayPayload


class ActivationsResponse(BaseModel):
    layer: LayerOut
    channels: list[int]
    activations: ArrayPayload = Field(description="(H, W, len(channels)) float32")
    statistics: ChannelStatistics
    input: ImageInfo
    model: ModelRefOut


class StageHistogramOut(BaseModel):
    counts: ArrayPayload
    mean: float
    std: float
    min: float
    max: float


class ParameterHistogramOut(BaseModel):
    layer: str
    parameter: str = Field(description="the weight's name in its layer: kernel, bias, gamma, beta, moving_mean...")
    shape: list[int]
    edges: ArrayPayload = Field(description="bins + 1 edges, shared by both stages")
    stages: dict[Literal["initial", "trained"], StageHistogramOut]
    relative_change: float | None = Field(
        description="||trained - initial|| / ||initial||; null when the initial tensor is all zeros"
    )


class WeightHistogramsResponse(BaseModel):
    stage: Literal["initial", "trained", "both"]
    bins: int
    histograms: list[ParameterHistogramOut]
    source: Literal["served", "learned"] = Field(
        description="served: the weights the service runs; learned: as the optimizer trained them (BatchNorm unfolded)"
    )
    weights: str | None = Field(
        None, description="which weights these are, in words (e.g. BatchNorm folded into the served kernels)"
    )
    model: ModelRefOut


class TargetOut(BaseModel):
    index: int
    label: str


class Completeness(BaseModel):
    """Sum of attributions against F(input) - F(baseline); F is the target's score (`score`:
    its probability, or its logit)."""

    attribution_sum: float
    output_at_input: float
    output_at_baseline: float
    delta: float
    relative_delta: float


class ToleranceOut(BaseModel):
    """What `tolerance` asked for and whether the answer reached it within the steps cap."""

    requested: float
    met: bool = Field(description="relative_delta <= requested; false when the steps cap was reached first")
    relative_delta: float
    max_steps: int = Field(description="the server's steps cap, where refinement stops")


ScoreField = Field(description="what was differentiated: the target's probability, or its logit (pre-softmax score)")


class CurveOut(BaseModel):
    fractions: list[float] = Field(description="share of pixels removed (deletion) or inserted (insertion), 0 to 1")
    scores: list[float] = Field(description="the target's probability at each fraction")
    area: float = Field(description="area under the curve (trapezoids); deletion: lower is better, insertion: higher")


class SanityOut(BaseModel):
    rank_correlation: float = Field(
        description="Spearman correlation of the map's per-pixel magnitudes with the same method's on the model's "
        "initial (untrained) weights; low is good: near 1, the map explains the input, not the model"
    )
    target: int = Field(description="the class explained on the untrained model (the same index)")


class EvaluationOut(BaseModel):
    """How far to trust the map (`evaluate=deletion,insertion,sanity`)."""

    deletion: CurveOut | None = None
    insertion: CurveOut | None = None
    sanity: SanityOut | None = None


class IntegratedGradientsResponse(BaseModel):
    target: TargetOut
    score: Literal["probability", "logit"] = ScoreField
    method: str
    baseline: str
    steps: int = Field(description="quadrature points of the final integral")
    gradient_evaluations: int = Field(description="gradients computed in all, refinements included")
    attributions: ArrayPayload = Field(description="(H, W, C) float32, the model's input shape")
    completeness: Completeness
    tolerance: ToleranceOut | None = Field(None, description="present when the request gave a tolerance")
    smoothing: dict[str, Any] | None = Field(
        None,
        description="SmoothGrad (samples > 0): samples, noise, kind, seed; the attributions are the mean of each "
        "noisy copy's, and completeness compares their sum with the mean score of the copies",
    )
    evaluation: EvaluationOut | None = Field(None, description="present when the request asked `evaluate`")
    probabilities: ArrayPayload = Field(description="the class probabilities at the input, whatever the score")
    classes: list[str]
    input: ImageInfo
    model: ModelRefOut


class EvaluationsOut(BaseModel):
    gradient: int = Field(description="gradient rows the model computed")
    forward: int = Field(description="forward rows (predictions) the model computed")


class ExplanationResponse(BaseModel):
    """Every method's answer (POST /explain/{method}), the same shape for each."""

    method: str
    target: TargetOut
    score: Literal["probability", "logit"] = ScoreField
    attributions: ArrayPayload = Field(
        description="(H, W, C) float32 like the input, or (H, W, 1) for a map of pixels (grad-cam, occlusion)"
    )
    parameters: dict[str, Any] = Field(description="what the method was computed with, defaults included")
    values: str = Field(
        description="what one value of `attributions` is: an attribution to the score, or (occlusion) the mean "
        "fall in the target's probability when a patch hides the pixel"
    )
    regions: ArrayPayload | None = Field(
        None, description="xrai: (H, W) int64, each pixel's region by rank of importance, 1 = the most important"
    )
    evaluations: EvaluationsOut
    evaluation: EvaluationOut | None = Field(None, description="present when the request asked `evaluate`")
    seconds: float = Field(description="time spent computing the explanation on the server")
    probabilities: ArrayPayload = Field(description="the class probabilities at the input")
    classes: list[str]
    input: ImageInfo
    model: ModelRefOut


class InteriorGradientsResponse(BaseModel):
    target: TargetOut
    score: Literal["probability", "logit"] = ScoreField
    alphas: ArrayPayload
    outputs: ArrayPayload = Field(description="F(alpha * x) for each alpha: the target's probability or logit")
    gradients: ArrayPayload = Field(description="(len(alphas), H, W, C) float32")
    input: ImageInfo
    model: ModelRefOut


class ParameterOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    required: bool
    description: str | None = None
    schema_: dict[str, Any] = Field(
        alias="schema", description="its JSON Schema, as in /openapi.json: type, default, minimum, maximum, enum"
    )


class ExplainMethodOut(BaseModel):
    name: str = Field(examples=["integrated-gradients"])
    path: str
    summary: str
    parameters: list[ParameterOut]


class ExplainMethodsResponse(BaseModel):
    methods: list[ExplainMethodOut]


class ModelSummary(BaseModel):
    name: str
    versions: list[int]
    default_version: int
    loaded_versions: list[int] = Field(default_factory=list, description="the versions in memory now")


class RepositoryModelOut(BaseModel):
    """One entry of Triton's model repository index."""

    name: str
    version: str
    state: str = Field(description="READY when in memory; UNAVAILABLE when stored but not loaded")
    reason: str = ""


class ModelListResponse(BaseModel):
    models: list[ModelSummary]
    default: ModelRefOut | None = Field(description="the version serving requests that name none")


class ModelDetailResponse(BaseModel):
    name: str
    version: int
    versions: list[int]
    class_names: list[str]
    input_shape: list[int]
    validation_accuracy: float | None
    layers: list[LayerOut] = Field(
        description="the layers with a spatial output (activations); inside a nested model by path, outer/inner"
    )
    weight_layers: list[LayerOut] = Field(description="the layers with weights (histograms) of the served network")
    weight_sources: list[Literal["served", "learned"]] = Field(
        description="the weights /weights/histogram can show (?weights=), the default first"
    )
    scores: list[Literal["probability", "logit"]] = Field(
        description="what attributions can differentiate (?score=): the logit where the model has one"
    )
    metadata: dict[str, Any] = Field(description="the store entry's metadata.json")


class HealthResponse(BaseModel):
    status: Literal["ok", "loading", "failed"]
    detail: str | None = None
    models: list[ModelRefOut] = Field(default_factory=list)


class ReloadResponse(BaseModel):
    serving: ModelRefOut
    changed: bool = Field(description="whether a new version was swapped in")


class FeatureOut(BaseModel):
    channel: int
    image: ArrayPayload = Field(description="(H, W, C) float32 in [0, 1], the model's input shape")
    activation: float = Field(description="the channel's mean activation on this image")
    on_noise: float = Field(description="the channel's mean activation on uniform noise (same seed), for scale")


class FeaturesResponse(BaseModel):
    layer: LayerOut
    steps: int
    seed: int
    features: list[FeatureOut]
    model: ModelRefOut


# The standard protocols' answers, in their own shapes (api/routes/v1.py, v2.py).


class TensorMetadataOut(BaseModel):
    name: str
    datatype: str = Field(examples=["FP32"])
    shape: list[int] = Field(description="-1: any size (the batch)")


class ServerMetadataV2Response(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLiveV2Response(BaseModel):
    live: bool


class ModelMetadataV2Response(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadataOut] = Field(description="the model's one input, under its Keras input layer's name")
    outputs: list[TensorMetadataOut] = Field(description="probabilities, then every activation layer by name")


class VersionStatusOut(BaseModel):
    version: str
    state: Literal["AVAILABLE"]
    status: dict[str, str] = Field(examples=[{"error_code": "OK", "error_message": ""}])


class ModelStatusV1Response(BaseModel):
    """TF Serving's model status, with KServe V1's `name` and `ready` beside it."""

    model_version_status: list[VersionStatusOut]
    name: str
    ready: bool


class ModelListV1Response(BaseModel):
    models: list[str]


class TcavLayerOut(BaseModel):
    layer: str
    significant: bool = Field(description="the t-test against random CAVs passed (p below alpha)")
    score: float | None = Field(description="the mean TCAV score; null when not significant (no finding)")
    mean: float = Field(description="the concept's mean score over the random sets, significant or not")
    std: float
    random_mean: float = Field(description="random-vs-random CAVs' mean score")
    random_std: float
    p_value: float = Field(description="two-sided Welch t-test of the concept's scores against the random ones")
    scores: list[float] = Field(description="the concept's score against each random set")
    random_scores: list[float]


class TcavReportOut(BaseModel):
    job: str
    state: str
    concept: str
    target: str = Field(description="the class tested")
    images: int = Field(description="the class's images scored so far")
    runs: int = Field(description="random sets")
    alpha: float = Field(description="0.05 over the number of layers tested (Bonferroni)")
    layers: list[TcavLayerOut]


class DatasetExampleOut(BaseModel):
    n: int = Field(description="the item in the audit job")
    source: str
    label: str | None
    activation: float = Field(description="the channel's peak activation on this image")
    box: list[int] = Field(description="the receptive-field patch: top, left, bottom, right (exclusive), in pixels")
    image: str = Field(description="the image, a PNG data: URL")
    patch: str = Field(description="the patch, a PNG data: URL")


class DatasetExamplesOut(BaseModel):
    model: ModelRefOut
    layer: str
    channel: int
    job: str = Field(description="the audit job that found them")
    feature: str = Field(description="the channel's feature visualization, a PNG data: URL")
    examples: list[DatasetExampleOut] = Field(description="the images that activate the channel most, strongest first")
