"""The Open Inference Protocol (KServe V2, Triton) over REST, with the binary tensor data extension.

Tensors in and out follow `protocols.tensors`; errors answer `{"error": "..."}` as the protocol
asks (`ProtocolRoute`); auth, body limits, deadlines and metrics are the service's own.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from mindscope import __version__, tracing
from mindscope.api.deps import RegistryDep, SettingsDep, require_api_key
from mindscope.api.protocol_errors import PROTOCOL_ERRORS, ProtocolError, ProtocolRoute, protocol_not_found
from mindscope.api.schemas import (
    ModelMetadataV2Response,
    RepositoryModelOut,
    ServerLiveV2Response,
    ServerMetadataV2Response,
    TensorMetadataOut,
)
from mindscope.config import Settings
from mindscope.dataplane.budget import DecodeBudget
from mindscope.dataplane.decoding import DecodeLimits
from mindscope.dataplane.models import serving_model
from mindscope.dataplane.tensors import (
    InputTensor,
    check_outputs,
    images_from,
    infer,
    model_inputs,
    model_outputs,
    numeric_array,
    split_bytes_elements,
)
from mindscope.engine.loaded_model import LoadedModel
from mindscope.engine.registry import ModelRegistry
from mindscope.engine.store import ModelRef, parse_version
from mindscope.errors import InvalidInput, InvalidJSON

HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data", "model_repository"]
PLATFORM = "keras"

router = APIRouter(
    prefix="/v2", tags=["open inference protocol (V2)"], route_class=ProtocolRoute, responses=PROTOCOL_ERRORS
)
secured = [Depends(require_api_key)]


@router.get("", dependencies=secured, summary="Server metadata")
def server_metadata() -> ServerMetadataV2Response:
    return ServerMetadataV2Response(name="mindscope", version=__version__, extensions=EXTENSIONS)


@router.get("/health/live", summary="The server answers")
def server_live() -> ServerLiveV2Response:
    return ServerLiveV2Response(live=True)


@router.get("/health/ready", summary="The default model is loaded (503 until then)")
def server_ready(registry: RegistryDep) -> Response:
    return _readiness(registry.ready)


async def protocol_model(registry: RegistryDep, name: str, version: str | None = None) -> LoadedModel:
    return await serving_model(registry, name, parse_version(version))


ModelName = Annotated[str, Path(max_length=64)]


@router.get("/models/{name}", dependencies=secured, summary="Model metadata: inputs and outputs")
@router.get("/models/{name}/versions/{version}", dependencies=secured, summary="Model metadata of one version")
async def model_metadata(registry: RegistryDep, name: ModelName, version: str | None = None) -> ModelMetadataV2Response:
    loaded = await protocol_model(registry, name, version)
    return metadata_of(loaded, registry.store.versions(loaded.ref.name))


def metadata_of(loaded: LoadedModel, versions: list[int]) -> ModelMetadataV2Response:
    return ModelMetadataV2Response(
        name=loaded.ref.name,
        versions=[str(v) for v in versions],
        platform=PLATFORM,
        inputs=[TensorMetadataOut(**vars(spec)) for spec in model_inputs(loaded)],
        outputs=[TensorMetadataOut(**vars(spec)) for spec in model_outputs(loaded)],
    )


@router.get("/models/{name}/ready", dependencies=secured, summary="The model is loaded")
@router.get("/models/{name}/versions/{version}/ready", dependencies=secured, summary="The version is loaded")
async def model_ready(registry: RegistryDep, name: ModelName, version: str | None = None) -> Response:
    await protocol_model(registry, name, version)  # loads it, or answers why it cannot
    return _readiness(True)


def _readiness(ready: bool) -> Response:
    return Response(json.dumps({"ready": ready}), 200 if ready else 503, media_type="application/json")


@router.post("/models/{name}/infer", dependencies=secured, summary="Inference: JSON or binary tensors")
@router.post("/models/{name}/versions/{version}/infer", dependencies=secured, summary="Inference on one version")
async def model_infer(
    request: Request, registry: RegistryDep, settings: SettingsDep, name: ModelName, version: str | None = None
) -> Response:
    loaded = await protocol_model(registry, name, version)
    body, length = await request.body(), request.headers.get(HEADER_LENGTH)
    return await answer_infer(loaded, body, length, settings, request.app.state.decode_budget)


async def answer_infer(
    loaded: LoadedModel, body: bytes, header_length: str | None, settings: Settings, budget: DecodeBudget
) -> Response:
    """An inference request's body -> its response. The route and the fast path
    (`api.v2_fast_path`) both answer through here."""
    with tracing.span("decode"):
        header, binary = split_body(body, header_length)
        inputs = _input_tensors(header, binary)
        if len(inputs) != 1:
            raise InvalidInput(f"{loaded.ref.label} takes one input; got {len(inputs)}")
        limits = DecodeLimits(loaded.input_shape, settings.max_image_pixels, settings.max_batch_instances, budget)
        images = await images_from(loaded, inputs[0], limits)
    requested = header.get("outputs") or []
    if not isinstance(requested, list) or not all(isinstance(o, dict) and "name" in o for o in requested):
        raise InvalidInput('"outputs" must be a list of {"name": ..., "parameters": {...}}')
    names = check_outputs(loaded, [str(o["name"]) for o in requested])
    results = await infer(loaded, images, names)
    binary_default = bool(_parameters(header).get("binary_data_output", False))
    binary_by_name = {str(o["name"]): bool(_parameters(o).get("binary_data", binary_default)) for o in requested}
    with tracing.span("render", format="v2"):
        return infer_response(
            loaded, header.get("id"), results, {n: binary_by_name.get(n, binary_default) for n in results}
        )


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON request and the binary tensor data after it (`Inference-Header-Content-Length`)."""
    if header_length is None:
        json_part, binary = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {header_length!r} must be the JSON's length in bytes, "
                f"at most the body's {len(body)}"
            )
        json_part, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        header = json.loads(json_part)
    except (ValueError, RecursionError) as exc:
        raise InvalidJSON(f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidInput('the inference request must be a JSON object with "inputs"')
    return header, binary


def _parameters(item: dict[str, Any]) -> dict[str, Any]:
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput('"parameters" must be an object')
    return parameters


def _input_tensors(header: dict[str, Any], binary: bytes) -> list[InputTensor]:
    """Each input with its data: from the binary section in order (`binary_data_size`), else
    from JSON `data` (BYTES elements as base64 strings)."""
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput('the inference request needs "inputs": [{"name", "shape", "datatype", "data"}]')
    tensors, offset = [], 0
    for item in inputs:
        if not isinstance(item, dict) or not {"name", "shape", "datatype"} <= item.keys():
            raise InvalidInput('each input needs "name", "shape" and "datatype"')
        shape, datatype = item["shape"], str(item["datatype"])
        if not isinstance(shape, list) or not all(isinstance(size, int) and size >= 0 for size in shape):
            raise InvalidInput(f"an input's shape must be a list of non-negative integers; got {shape!r}")
        size = _parameters(item).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInput(
                    f"input {item['name']!r} says binary_data_size {size!r}; "
                    f"{len(binary) - offset} bytes of binary data are left"
                )
            data: Any = binary[offset : offset + size]
            offset += size
        elif "data" in item:
            data = item["data"]
        else:
            raise InvalidInput(f"input {item['name']!r} has neither data nor binary_data_size")
        count = math.prod(shape)
        if datatype == "BYTES":
            values: np.ndarray | list[bytes] = (
                split_bytes_elements(data, count) if isinstance(data, bytes) else _base64_elements(data)
            )
        else:
            values = numeric_array(datatype, shape, data)
        tensors.append(InputTensor(str(item["name"]), datatype, shape, values))
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data belong to no input")
    return tensors


def _base64_elements(data: Any) -> list[bytes]:
    flat = np.asarray(data, dtype=object).ravel().tolist() if isinstance(data, list) else None
    if flat is None or not all(isinstance(item, str) for item in flat):
        raise InvalidInput("BYTES data in JSON is a list of base64 strings, one encoded image each")
    try:
        return [base64.b64decode(item, validate=True) for item in flat]
    except (binascii.Error, ValueError):
        raise InvalidInput("a BYTES element is not valid base64; send binary data or base64 strings") from None


def infer_response(
    loaded: LoadedModel, request_id: Any, results: dict[str, np.ndarray], binary: dict[str, bool]
) -> Response:
    """The inference response: outputs as JSON `data`, or after the JSON as binary tensor data."""
    outputs, blobs = [], []
    for name, values in results.items():
        values = np.ascontiguousarray(values, dtype="<f4")
        output: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(values.shape)}
        if binary[name]:
            blob = values.tobytes()
            output["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            output["data"] = values.ravel().tolist()
        outputs.append(output)
    body: dict[str, Any] = {"model_name": loaded.ref.name, "model_version": str(loaded.ref.version)}
    if request_id is not None:
        body["id"] = str(request_id)
    body["outputs"] = outputs
    encoded = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return Response(encoded, media_type="application/json")
    return Response(
        encoded + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(encoded))},
    )


@router.post("/repository/index", dependencies=secured, summary="Every stored version; READY when in memory")
async def repository_index(request: Request, registry: RegistryDep) -> list[RepositoryModelOut]:
    """Triton's model repository extension: `{"ready": true}` lists only the models in memory."""
    body = await request.body()
    try:
        asked = json.loads(body) if body.strip() else {}
    except ValueError:
        raise InvalidJSON('the index request must be JSON, e.g. {} or {"ready": true}') from None
    ready_only = bool(asked.get("ready", False)) if isinstance(asked, dict) else False
    return await run_in_threadpool(_repository_index, registry, ready_only)  # the store is read from disk


def _repository_index(registry: ModelRegistry, ready_only: bool) -> list[RepositoryModelOut]:
    resident, store, index = set(registry.loaded()), registry.store, []
    for name in store.names():
        for version in store.versions(name):
            loaded = ModelRef(name, version) in resident
            if loaded or not ready_only:
                state, reason = ("READY", "") if loaded else ("UNAVAILABLE", "unloaded")
                index.append(RepositoryModelOut(name=name, version=str(version), state=state, reason=reason))
    return index


@router.post("/repository/models/{name}/load", dependencies=secured, summary="Load (and warm up) a model now")
async def repository_load(registry: RegistryDep, name: ModelName) -> Response:
    await run_in_threadpool(registry.get, name)
    return Response(b"{}", media_type="application/json")


@router.post(
    "/repository/models/{name}/unload",
    dependencies=secured,
    summary="Take a model out of memory",
    responses={
        409: {"model": ProtocolError, "description": "the serving default, or a model a job runs on, stays loaded"}
    },
)
async def repository_unload(registry: RegistryDep, name: ModelName) -> Response:
    await run_in_threadpool(registry.unload, name)
    return Response(b"{}", media_type="application/json")


# Last: every other /v2 path answers the protocol's 404.
router.add_api_route("/{rest:path}", protocol_not_found, methods=["GET", "POST"], include_in_schema=False)
