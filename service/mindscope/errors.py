"""Domain errors. Each carries its HTTP status and a stable machine-readable code.

The engine raises these; `mindscope.api.errors` maps every one of them (and the framework's own
404/405/422) to the single envelope `{"error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

from typing import Any


class MindscopeError(Exception):
    status_code = 500
    code = "internal_error"
    headers: dict[str, str] = {}

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ModelNotFound(MindscopeError):
    status_code = 404
    code = "model_not_found"


class ModelIntegrityError(MindscopeError):
    """A store entry's files do not match the SHA-256 values in its metadata, or cannot be read."""

    status_code = 503
    code = "model_integrity_error"


class ModelPinned(MindscopeError):
    """The serving default cannot be unloaded: readiness depends on it."""

    status_code = 409
    code = "model_pinned"


class ModelNotReady(MindscopeError):
    status_code = 503
    code = "model_not_ready"
    headers = {"Retry-After": "1"}


class UnknownLayer(MindscopeError):
    status_code = 404
    code = "unknown_layer"


class LayersUnavailable(MindscopeError):
    """The model has no layers to tap (a SavedModel holds a graph, not Keras layers): activations,
    Grad-CAM and embeddings need them."""

    status_code = 404
    code = "layers_unavailable"


class UnknownIndex(MindscopeError):
    """No nearest-neighbour index of that name for the model version (an `index` job builds one)."""

    status_code = 404
    code = "unknown_index"


class UnknownConcept(MindscopeError):
    """No registered concept of that name (POST /concepts registers one)."""

    status_code = 404
    code = "unknown_concept"


class ConceptExists(MindscopeError):
    status_code = 409
    code = "concept_exists"


class DatasetExamplesMissing(MindscopeError):
    """No audit job has found a layer's dataset examples for this model version."""

    status_code = 404
    code = "dataset_examples_missing"


class ReportNotReady(MindscopeError):
    """A job's report is written when the job ends."""

    status_code = 409
    code = "report_not_ready"


class UnknownMethod(MindscopeError):
    status_code = 404
    code = "unknown_method"


class InitialWeightsMissing(MindscopeError):
    """The model's store entry holds no weights from before training, so there is no "before"."""

    status_code = 404
    code = "initial_weights_missing"


class WeightsMissing(MindscopeError):
    """The set of weights asked for (e.g. the learned, unfolded ones) is not in the store entry."""

    status_code = 404
    code = "weights_missing"


class UnknownClass(MindscopeError):
    status_code = 422
    code = "unknown_class"


class InvalidImage(MindscopeError):
    """The body could not be decoded as an image of a supported kind."""

    status_code = 400
    code = "invalid_image"


class NoImage(MindscopeError):
    """The request carried no body (or an empty one) where an image was expected."""

    status_code = 400
    code = "no_image"


class InvalidJSON(MindscopeError):
    """The body is not parseable JSON (or nests too deeply to parse)."""

    status_code = 400
    code = "invalid_json"


class InvalidInput(MindscopeError):
    """The request is well-formed but its values cannot be used (wrong array shape, bad option)."""

    status_code = 422
    code = "invalid_input"


class UnsupportedMediaType(MindscopeError):
    status_code = 415
    code = "unsupported_media_type"


class PayloadTooLarge(MindscopeError):
    status_code = 413
    code = "payload_too_large"


class Overloaded(MindscopeError):
    status_code = 503
    code = "overloaded"
    headers = {"Retry-After": "1"}


class RequestTimeout(MindscopeError):
    """The client took longer to send its request body than the server waits for one."""

    status_code = 408
    code = "request_timeout"
    headers = {"Connection": "close"}


class Unauthorized(MindscopeError):
    status_code = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="mindscope"'}


class DeadlineExceeded(MindscopeError):
    status_code = 504
    code = "deadline_exceeded"


class RequestCancelled(MindscopeError):
    """The client went away before the answer; nobody reads this response, the access log does."""

    status_code = 499
    code = "client_closed_request"


class AdminDisabled(MindscopeError):
    status_code = 403
    code = "admin_disabled"
