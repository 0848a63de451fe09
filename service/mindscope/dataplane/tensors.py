"""Named, typed tensors in and out of a served model: what the standard protocols exchange.

TF Serving / KServe V1 (`api.routes.v1`), the Open Inference Protocol's REST routes
(`api.routes.v2`) and its gRPC service (`protocols.grpc_service`) all go through here, so every
protocol takes the same inputs, checks them the same way and answers from the same batched model:

- input `<the model's input name>` (e.g. `image`): FP32 `[N, H, W, C]` in the model's own input
  range (what the Keras model takes: 0-1 for the CIFAR models, -1..1 or 0-255 or mean/std for an
  imported one), UINT8 `[N, H, W, C]` pixels, or BYTES `[N]` encoded PNG/JPEG/WebP images;
- outputs `probabilities` (FP32 `[N, classes]`, the default) and, by name, any activation layer
  (FP32 `[N, h, w, c]`): what `/predict` and `/activations/{layer}` answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from mindscope.dataplane.decoding import DecodeLimits, decode_raw_body
from mindscope.engine.loaded_model import LoadedModel
from mindscope.errors import InvalidInput, PayloadTooLarge, UnknownLayer

PROBABILITIES = "probabilities"
# The protocol's datatype names -> numpy dtypes (little-endian, as the binary formats lay them out).
NUMERIC_DATATYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "UINT8": np.dtype("u1"),
}
INPUT_DATATYPES = (*NUMERIC_DATATYPES, "BYTES")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]  # -1: any size


def input_name(loaded: LoadedModel) -> str:
    """The model's input as its clients name it: the Keras input layer's name."""
    return str(loaded.model.inputs[0].name)


def model_inputs(loaded: LoadedModel) -> list[TensorSpec]:
    return [TensorSpec(input_name(loaded), "FP32", [-1, *loaded.input_shape])]


def model_outputs(loaded: LoadedModel) -> list[TensorSpec]:
    """`probabilities`, then each activation layer by name."""
    classes = [TensorSpec(PROBABILITIES, "FP32", [-1, len(loaded.class_names)])]
    return classes + [TensorSpec(info.name, "FP32", [-1, *info.output_shape]) for info in loaded.layers]


@dataclass(frozen=True)
class InputTensor:
    """One input as received: numbers (already shaped) or, for BYTES, the encoded elements."""

    name: str
    datatype: str
    shape: list[int]
    values: np.ndarray | list[bytes]


def numeric_array(datatype: str, shape: list[int], data: bytes | list[Any] | np.ndarray) -> np.ndarray:
    """A numeric tensor from raw little-endian bytes or a (nested or flat) list, checked against
    `shape`."""
    dtype = NUMERIC_DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidInput(
            f"datatype {datatype!r} is not accepted; send FP32 (the model's input range), UINT8 pixels "
            "or BYTES (encoded images)",
            valid_datatypes=list(INPUT_DATATYPES),
        )
    if any(not isinstance(size, int) or size < 0 for size in shape):
        raise InvalidInput(f"shape {shape} must be non-negative integers", shape=shape)
    expected = math.prod(shape)
    if isinstance(data, bytes | bytearray | memoryview):
        if len(data) != expected * dtype.itemsize:
            raise InvalidInput(
                f"shape {shape} of {datatype} needs {expected * dtype.itemsize} bytes; got {len(data)}",
                expected_bytes=expected * dtype.itemsize,
                bytes=len(data),
            )
        return np.frombuffer(data, dtype).reshape(shape)
    try:
        array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"the {datatype} data must be numbers") from None
    if array.size != expected:
        raise InvalidInput(
            f"shape {shape} holds {expected} elements; the data has {array.size}", shape=shape, elements=array.size
        )
    return array.reshape(shape)


def split_bytes_elements(data: bytes, count: int) -> list[bytes]:
    """BYTES in the binary format: each element a 4-byte little-endian length, then its bytes."""
    elements, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise InvalidInput("a BYTES element's 4-byte length is cut short")
        size = int.from_bytes(data[offset : offset + 4], "little")
        offset += 4
        if offset + size > len(data):
            raise InvalidInput(f"a BYTES element says it holds {size} bytes; fewer follow")
        elements.append(bytes(data[offset : offset + size]))
        offset += size
    if len(elements) != count:
        raise InvalidInput(f"the BYTES tensor's shape holds {count} elements; the data has {len(elements)}")
    return elements


def join_bytes_elements(elements: list[bytes]) -> bytes:
    return b"".join(len(item).to_bytes(4, "little") + item for item in elements)


def to_unit_range(loaded: LoadedModel, values: np.ndarray) -> np.ndarray:
    """Model input (its own range) -> the [0, 1] images every compiled function takes, which
    apply the model's preprocessing again (`InputSpec`): the inverse of `InputSpec.apply`."""
    spec = loaded.input_spec
    values = values.astype(np.float32, copy=False)
    if spec.range == "0-255":
        return values / np.float32(255)
    if spec.range == "-1-1":
        return (values + np.float32(1)) / np.float32(2)
    if spec.range == "mean-std":
        return values * np.asarray(spec.std, np.float32) + np.asarray(spec.mean, np.float32)
    return values


async def images_from(loaded: LoadedModel, tensor: InputTensor, limits: DecodeLimits) -> np.ndarray:
    """The input tensor as float32 (N, H, W, C) images in [0, 1] of the model's input shape."""
    expected_name = input_name(loaded)
    if tensor.name != expected_name:
        raise InvalidInput(
            f"{loaded.ref.label} has one input, {expected_name!r}; got {tensor.name!r}",
            inputs=[expected_name],
        )
    count = tensor.shape[0] if tensor.shape else 0
    if count < 1:
        raise InvalidInput(f"{expected_name} holds no images: its first dimension is the batch, at least 1")
    if count > limits.max_instances:
        raise PayloadTooLarge(
            f"{count} images in one request; at most {limits.max_instances} are accepted",
            max_instances=limits.max_instances,
        )
    if tensor.datatype == "BYTES":
        elements = tensor.values
        assert isinstance(elements, list)
        if math.prod(tensor.shape) != count or len(elements) != count:
            raise InvalidInput(
                f"a BYTES input holds one encoded image per row: shape [N] or [N, 1]; got {tensor.shape}",
                shape=tensor.shape,
            )
        # As a raw /predict body: small images on the event loop, large ones off it within the budget.
        shape = loaded.input_shape
        decoded = [(await decode_raw_body(data, limits)).images[0].pixels for data in elements]
        return np.stack(decoded) if decoded else np.zeros((0, *shape), np.float32)
    values = tensor.values
    assert isinstance(values, np.ndarray)
    height, width, channels = loaded.input_shape
    if channels == 1 and values.shape[1:] == (height, width):
        values = values[..., None]
    if values.shape[1:] != (height, width, channels):
        raise InvalidInput(
            f"{expected_name} has shape [-1, {height}, {width}, {channels}]; got {list(values.shape)}",
            expected_shape=[-1, height, width, channels],
            shape=list(values.shape),
        )
    if tensor.datatype == "UINT8":
        return values.astype(np.float32) / np.float32(255)
    if not np.isfinite(values).all():
        raise InvalidInput(f"the {tensor.datatype} values must be finite")
    return to_unit_range(loaded, values)


def check_outputs(loaded: LoadedModel, names: list[str]) -> list[str]:
    """The requested outputs (default: probabilities), each one this model has."""
    if not names or names == [PROBABILITIES]:
        return [PROBABILITIES]
    valid = [spec.name for spec in model_outputs(loaded)]
    for name in names:
        if name not in valid:
            raise UnknownLayer(
                f"{loaded.ref.label} has no output {name!r}: ask for 'probabilities' or an activation layer",
                valid_outputs=valid,
            )
    return names or [PROBABILITIES]


async def infer(loaded: LoadedModel, images: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
    """The requested outputs for float32 (N, H, W, C) images in [0, 1]: probabilities from the
    batched forward lane (as /predict), layers from the activation function (as /activations)."""
    result: dict[str, np.ndarray] = {}
    if PROBABILITIES in outputs:
        result[PROBABILITIES] = await loaded.predict_async(images)
    layers = [name for name in outputs if name != PROBABILITIES]
    if layers:
        activations = await run_in_threadpool(loaded.activations, images)
        for name in layers:
            result[name] = activations[loaded.layer(name).index - 1]
    return {name: result[name] for name in outputs}
