"""TF Serving's REST API and KServe's V1 protocol (TF Serving's, plus the `:explain` verb).

`:predict` takes TF Serving's row format (`{"instances": [...]}`, answered `{"predictions": ...}`)
and columnar format (`{"inputs": ...}`, answered `{"outputs": ...}`); an instance is an array in
the model's input range, `{"b64": "<encoded image>"}`, or either under the input's name. Errors
answer `{"error": "..."}` (`ProtocolRoute`).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from mindscope.api.deps import RegistryDep, SettingsDep, decode_limits, require_api_key
from mindscope.api.explanations import Answering
from mindscope.api.explanations import answer as explanation_answer
from mindscope.api.protocol_errors import PROTOCOL_ERRORS, ProtocolRoute, protocol_not_found
from mindscope.api.schemas import ModelListV1Response, ModelStatusV1Response, VersionStatusOut
from mindscope.dataplane.decoding import DecodedImage, DecodeLimits, ImageInfo
from mindscope.dataplane.models import serving_model
from mindscope.dataplane.parameters import ExplainParameters
from mindscope.dataplane.tensors import (
    PROBABILITIES,
    InputTensor,
    images_from,
    infer,
    input_name,
    numeric_array,
)
from mindscope.engine.explain.method import Caps, Context
from mindscope.engine.explain.registry import method_named
from mindscope.engine.explain.runner import explain as run_explanation
from mindscope.engine.loaded_model import LoadedModel
from mindscope.errors import InvalidInput, InvalidJSON

router = APIRouter(prefix="/v1", tags=["TF Serving / KServe V1"], route_class=ProtocolRoute, responses=PROTOCOL_ERRORS)
secured = [Depends(require_api_key)]
ModelName = Annotated[str, Path(max_length=64)]
SIGNATURE = "serving_default"


@router.get("/models", dependencies=secured, summary="The stored models (KServe V1)")
def list_models(registry: RegistryDep) -> ModelListV1Response:
    return ModelListV1Response(models=registry.store.names())


@router.get("/models/{name}", dependencies=secured, summary="Model status (TF Serving), and ready (KServe V1)")
@router.get("/models/{name}/versions/{version}", dependencies=secured, summary="One version's status")
async def model_status(registry: RegistryDep, name: ModelName, version: int | None = None) -> ModelStatusV1Response:
    loaded = await serving_model(registry, name, version)
    versions = [version] if version is not None else registry.store.versions(loaded.ref.name)[::-1]
    ok = {"error_code": "OK", "error_message": ""}
    statuses = [VersionStatusOut(version=str(v), state="AVAILABLE", status=ok) for v in versions]
    return ModelStatusV1Response(model_version_status=statuses, name=loaded.ref.name, ready=True)


@router.get("/models/{name}/metadata", dependencies=secured, summary="The model's signature (TF Serving)")
@router.get("/models/{name}/versions/{version}/metadata", dependencies=secured, summary="One version's signature")
async def model_metadata(registry: RegistryDep, name: ModelName, version: int | None = None) -> dict[str, Any]:
    loaded = await serving_model(registry, name, version)

    def tensor(tensor_name: str, shape: list[int]) -> dict[str, Any]:
        dims = [{"size": str(size), "name": ""} for size in shape]
        return {"dtype": "DT_FLOAT", "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": tensor_name}

    signature = {
        "inputs": {input_name(loaded): tensor(input_name(loaded), [-1, *loaded.input_shape])},
        "outputs": {PROBABILITIES: tensor(PROBABILITIES, [-1, len(loaded.class_names)])},
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": loaded.ref.name, "signature_name": "", "version": str(loaded.ref.version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature}}},
    }


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError) as exc:
        raise InvalidJSON(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput('send a JSON object: {"instances": [...]} or {"inputs": ...}')
    signature = body.get("signature_name", SIGNATURE)
    if signature not in (SIGNATURE, ""):
        raise InvalidInput(f"the model has one signature, {SIGNATURE!r}; got {signature!r}")
    return body


async def _images(loaded: LoadedModel, body: dict[str, Any], limits: DecodeLimits) -> tuple[np.ndarray, str]:
    """The images of a row (`instances`) or columnar (`inputs`) body, and which it was."""
    if "instances" in body:
        rows, form = body["instances"], "instances"
        if not isinstance(rows, list):
            raise InvalidInput('"instances" must be a list, one entry per image')
    elif "inputs" in body:
        rows, form = body["inputs"], "inputs"
    else:
        raise InvalidInput('send {"instances": [...]} (one entry per image) or {"inputs": ...} (columnar)')
    name = input_name(loaded)
    rows = _unnamed(rows, name)
    if form == "instances":
        rows = [_unnamed(row, name) for row in rows]
    if isinstance(rows, list) and rows and all(isinstance(row, dict) and "b64" in row for row in rows):
        try:
            encoded = [base64.b64decode(row["b64"], validate=True) for row in rows]
        except (binascii.Error, ValueError, TypeError):
            raise InvalidInput('a {"b64": ...} instance is not valid base64') from None
        tensor = InputTensor(name, "BYTES", [len(encoded)], encoded)
    else:
        try:
            array = np.asarray(rows, dtype=np.float32)
        except (ValueError, TypeError):
            raise InvalidInput(
                f"each instance is an array of shape {list(loaded.input_shape)} in the model's input range, "
                'or {"b64": "<PNG/JPEG/WebP>"}'
            ) from None
        tensor = InputTensor(name, "FP32", list(array.shape), numeric_array("FP32", list(array.shape), array))
    return await images_from(loaded, tensor, limits), form


def _unnamed(value: Any, name: str) -> Any:
    """`{"<input name>": x}` -> x: TF Serving's named form, for the model's one input."""
    if isinstance(value, dict) and "b64" not in value:
        if set(value) != {name}:
            raise InvalidInput(f"the model has one input, {name!r}; got {sorted(value)}", inputs=[name])
        return value[name]
    return value


@router.post("/models/{name}:predict", dependencies=secured, summary="Predict (TF Serving REST / KServe V1)")
@router.post("/models/{name}/versions/{version}:predict", dependencies=secured, summary="Predict with one version")
async def predict(
    request: Request, registry: RegistryDep, settings: SettingsDep, name: ModelName, version: int | None = None
) -> dict[str, Any]:
    loaded = await serving_model(registry, name, version)
    images, form = await _images(loaded, await _body(request), decode_limits(request, settings, loaded))
    probabilities = (await infer(loaded, images, [PROBABILITIES]))[PROBABILITIES]
    key = "predictions" if form == "instances" else "outputs"
    return {key: probabilities.tolist()}


@router.post("/models/{name}:explain", dependencies=secured, summary="Explain (KServe V1): IG, or any method")
@router.post("/models/{name}/versions/{version}:explain", dependencies=secured, summary="Explain with one version")
async def explain(
    request: Request, registry: RegistryDep, settings: SettingsDep, name: ModelName, version: int | None = None
) -> Response:
    """`{"instances": [...], "method": "integrated-gradients", "parameters": {"steps": 32, ...}}`:
    each instance explained as `POST /explain/{method}` explains it (the same runner and answer),
    with this request's deadline and id, answered `{"predictions": [...], "explanations": [...]}`."""
    loaded = await serving_model(registry, name, version)
    body = await _body(request)
    images, _ = await _images(loaded, body, decode_limits(request, settings, loaded))
    method_name = body.get("method", "integrated-gradients")
    if not isinstance(method_name, str):
        raise InvalidInput('"method" names one of GET /explain\'s methods, e.g. "integrated-gradients"')
    method = method_named(method_name)
    asked = ExplainParameters.of(method, body.get("parameters") or {})
    context = Context(asked.ask.score, asked.smoothing, Caps.of(settings))
    evaluate = asked.ask.evaluation()
    predictions, explanations = [], []
    for pixels in images:
        image = DecodedImage(
            pixels, ImageInfo(width=pixels.shape[1], height=pixels.shape[0], mode="array", format="array")
        )
        explained = await run_in_threadpool(
            run_explanation, loaded, method, pixels, asked.params, asked.ask.target, context, evaluate
        )
        answered = explanation_answer(loaded, method, asked.params, context, image, explained, Answering())
        assert isinstance(answered, BaseModel)
        predictions.append(explained.probabilities.tolist())
        explanations.append(answered.model_dump(mode="json"))
    return Response(
        json.dumps({"predictions": predictions, "explanations": explanations}), media_type="application/json"
    )


router.add_api_route("/{rest:path}", protocol_not_found, methods=["GET", "POST"], include_in_schema=False)
