"""Calls a server through the kserve package's REST client, V1 and V2; prints what it answered.

Run by test_standard_clients.py in its own process (stdin: JSON with base_url, model, pixels):
kserve registers the `inference.*` protobuf messages that tritonclient.grpc registers too.
"""

import asyncio
import json
import sys

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def main(request: dict) -> dict:
    base, model = request["base_url"], request["model"]
    pixels = np.asarray(request["pixels"], np.float32)
    v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
    v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
    answers = {
        "server_live": await v2.is_server_live(base),
        "server_ready": await v2.is_server_ready(base),
        "model_ready_v1": await v1.is_model_ready(base, model),
        "model_ready_v2": await v2.is_model_ready(base, model),
    }
    answers["v1_predictions"] = (await v1.infer(base, {"instances": pixels.tolist()}, model))["predictions"]
    tensor = InferInput("image", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=True)
    response = await v2.infer(base, InferRequest(model_name=model, infer_inputs=[tensor]), model)
    (output,) = response.outputs
    answers["v2_probabilities"] = output.as_numpy().tolist()
    body = {"instances": pixels[:1].tolist(), "parameters": {"steps": 16}}
    answers["v1_explain"] = await v1.explain(base, model, body)
    try:
        await v1.infer(base, {"instances": pixels.tolist()}, "no-such-model")
    except httpx.HTTPStatusError as exc:
        answers["v1_unknown_model"] = exc.response.json()["error"]
    await v1.close()
    await v2.close()
    return answers


print(json.dumps(asyncio.run(main(json.loads(sys.stdin.read())))))
