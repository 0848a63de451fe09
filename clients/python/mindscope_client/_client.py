"""Client and AsyncClient: the same methods, sync and async, over one request builder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, TypeVar, overload

import httpx

from mindscope_client import _requests as rq
from mindscope_client._exceptions import TransportError, raise_for_error
from mindscope_client._jobs import AsyncJobs, Concepts, Jobs
from mindscope_client._tracing import traced, traced_async
from mindscope_client._types import (
    Activations,
    Attribution,
    Explanation,
    Feature,
    Histogram,
    ImageInput,
    ImageResult,
    InteriorGradients,
    ModelList,
    Prediction,
)

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
Method = Literal["gauss_legendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_midpoint"]
Score = Literal["probability", "logit"]  # what attributions differentiate; the logit where the model has one


class _Call(Generic[T]):
    def __init__(self, spec: rq.RequestSpec, parse: Callable[[Any], T]) -> None:
        self.spec = spec
        self.parse = parse


def _image_result(response: httpx.Response) -> ImageResult:
    summary = {name[5:]: value for name, value in response.headers.items() if name.lower().startswith("x-ig-")}
    return ImageResult(response.content, response.headers.get("content-type", "image/png"), summary)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


class _Builder:
    """Builds each endpoint's request and says how to read its answer."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, retries: int, backoff: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before retrying, or None when this outcome is not retried."""
        if attempt >= self.retries:
            return None
        if response is None:  # a connection error
            return self.backoff * 2**attempt
        retry_after = response.headers.get("retry-after")
        if response.status_code == 503 and retry_after is not None:
            try:
                return min(float(retry_after), 30.0)
            except ValueError:
                return self.backoff * 2**attempt
        return None

    def _result(self, call: _Call[T], response: httpx.Response) -> T:
        raise_for_error(response.status_code, response.json, response.text)
        if call.spec.binary:
            return call.parse(response)
        return call.parse(response.json())

    def _models(self) -> _Call[ModelList]:
        return _Call(rq.RequestSpec("GET", "/models"), rq.parse_models)

    def _predict(
        self, image_or_batch: Any, model: str | None, version: int | None, as_png: bool
    ) -> _Call[Prediction | list[Prediction] | ImageResult]:
        params = rq.model_params(model, version) + rq.png_params(as_png)
        spec = rq.RequestSpec("POST", "/predict", params, binary=as_png)
        if as_png:
            return _Call(rq.image_body(spec, image_or_batch), _image_result)
        if isinstance(image_or_batch, (list, tuple)):
            return _Call(rq.batch_body(spec, list(image_or_batch)), rq.parse_predictions)
        return _Call(rq.image_body(spec, image_or_batch), lambda body: rq.parse_predictions(body)[0])

    def _activations(
        self, image: Any, layer: str | int, channels: Sequence[int] | None, as_png: bool, model: str | None
    ) -> _Call[Any]:
        params = rq.model_params(model, None) + rq.png_params(as_png)
        params += [("channels", str(c)) for c in channels or ()]
        spec = rq.image_body(rq.RequestSpec("POST", f"/activations/{layer}", params, binary=as_png), image)
        return _Call(spec, _image_result if as_png else rq.parse_activations)

    def _animation(self, image: Any, model: str | None) -> _Call[ImageResult]:
        spec = rq.RequestSpec("POST", "/activations/animation", rq.model_params(model, None), binary=True)
        return _Call(rq.image_body(spec, image), _image_result)

    def _histograms(
        self,
        stage: str,
        layers: Sequence[str | int] | None,
        bins: int,
        as_png: bool,
        model: str | None,
        weights: str | None = None,
    ) -> _Call[Any]:
        params = [("stage", stage), ("bins", str(bins)), *rq.model_params(model, None), *rq.png_params(as_png)]
        params += [("weights", weights)] if weights else []
        params += [("layers", str(layer)) for layer in layers or ()]
        spec = rq.RequestSpec("GET", "/weights/histogram", params, binary=as_png)
        return _Call(spec, _image_result if as_png else rq.parse_histograms)

    def _integrated_gradients(
        self,
        image: Any,
        target: int | str | None,
        steps: int,
        baseline: Any,
        method: Method,
        tolerance: float | None,
        as_png: bool,
        model: str | None,
        score: Score,
        samples: int = 0,
        noise: float = 0.15,
        seed: int = 0,
    ) -> _Call[Any]:
        named = isinstance(baseline, str)
        params = [("steps", str(steps)), ("method", method), ("baseline", baseline if named else "upload")]
        params += [("score", score)]
        params += [("target", str(target))] if target is not None else []
        params += [("tolerance", repr(tolerance))] if tolerance is not None else []
        params += [("samples", str(samples)), ("noise", repr(noise)), ("seed", str(seed))] if samples else []
        params += rq.model_params(model, None) + rq.png_params(as_png)
        spec = rq.RequestSpec("POST", "/explain/integrated-gradients", params, binary=as_png)
        spec = rq.image_body(spec, image, None if named else baseline)
        return _Call(spec, _image_result if as_png else rq.parse_attribution)

    def _interior_gradients(
        self,
        image: Any,
        alphas: Sequence[float] | None,
        target: int | str | None,
        as_png: bool,
        model: str | None,
        score: Score,
    ) -> _Call[Any]:
        params = [("alphas", repr(float(a))) for a in alphas or ()] + [("score", score)]
        params += [("target", str(target))] if target is not None else []
        params += rq.model_params(model, None) + rq.png_params(as_png)
        spec = rq.image_body(rq.RequestSpec("POST", "/explain/interior-gradients", params, binary=as_png), image)
        return _Call(spec, _image_result if as_png else rq.parse_interior)

    def _explain(
        self,
        image: Any,
        method: str,
        target: int | str | None,
        score: Score,
        evaluate: Sequence[str] | None,
        as_png: bool,
        model: str | None,
        parameters: dict[str, Any],
    ) -> _Call[Any]:
        params = [("score", score)] + ([("target", str(target))] if target is not None else [])
        params += [("evaluate", ",".join(evaluate))] if evaluate else []
        params += [(name, _query_value(value)) for name, value in parameters.items()]
        params += rq.model_params(model, None) + rq.png_params(as_png)
        spec = rq.image_body(rq.RequestSpec("POST", f"/explain/{method}", params, binary=as_png), image)
        return _Call(spec, _image_result if as_png else rq.parse_explanation)

    def _examples(self, image: Any, index: str, k: int, exact: bool, as_png: bool, model: str | None) -> _Call[Any]:
        params = [("index", index), ("k", str(k))] + ([("exact", "true")] if exact else [])
        params += rq.model_params(model, None) + rq.png_params(as_png)
        spec = rq.image_body(rq.RequestSpec("POST", "/explain/examples", params, binary=as_png), image)
        return _Call(spec, _image_result if as_png else dict)

    def _example_indexes(self, model: str | None) -> _Call[list[dict[str, Any]]]:
        spec = rq.RequestSpec("GET", "/explain/examples", rq.model_params(model, None))
        return _Call(spec, lambda body: list(body["indexes"]))

    def _visualize(
        self,
        layer: str | int,
        channel: int | None,
        count: int | None,
        steps: int | None,
        seed: int,
        as_png: bool,
        model: str | None,
    ) -> _Call[Any]:
        params = [("seed", str(seed))] + ([("steps", str(steps))] if steps is not None else [])
        params += [("count", str(count))] if channel is None and count is not None else []
        params += rq.model_params(model, None) + rq.png_params(as_png)
        path = f"/visualize/{layer}" + ("" if channel is None else f"/{channel}")
        spec = rq.RequestSpec("GET", path, params, binary=as_png)
        return _Call(spec, _image_result if as_png else rq.parse_features)

    def _request_kwargs(self, spec: rq.RequestSpec) -> dict[str, Any]:
        return {
            "params": spec.params,
            "content": spec.content,
            "json": spec.json,
            "files": spec.files,
            "headers": {**self.headers, **spec.headers},
        }


class Client(_Builder):
    """Synchronous client. Use as a context manager, or call close().

    >>> with Client("http://127.0.0.1:8000") as client:
    ...     client.predict("cat.png").label
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.25,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff)
        self._owns_client = http_client is None
        # The application's trace context (OpenTelemetry) travels with every request, jobs' too.
        self._http = traced(http_client or httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport))
        self.jobs = Jobs(self._http, self.headers)  # work over many images: client.jobs.submit(...)
        self.concepts = Concepts(self._http, self.headers)  # for tcav jobs: client.concepts.create(...)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_client:
            self._http.close()

    def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.spec.method, self.base_url + call.spec.path, **self._request_kwargs(call.spec)
                )
            except httpx.TransportError as exc:
                delay = self._delay(attempt, None)
                if delay is None:
                    raise TransportError(f"{self.base_url} could not be reached: {exc}") from exc
            else:
                delay = self._delay(attempt, response)
                if delay is None:
                    return self._result(call, response)
            time.sleep(delay)
            attempt += 1

    def models(self) -> ModelList:
        """The stored models (name, versions, default version) and the version serving by default."""
        return self._send(self._models())

    @overload
    def predict(
        self,
        image_or_batch: list[ImageInput] | tuple[ImageInput, ...],
        as_png: Literal[False] = False,
        *,
        model: str | None = None,
        version: int | None = None,
    ) -> list[Prediction]: ...

    @overload
    def predict(
        self,
        image_or_batch: ImageInput,
        as_png: Literal[False] = False,
        *,
        model: str | None = None,
        version: int | None = None,
    ) -> Prediction: ...

    @overload
    def predict(
        self, image_or_batch: ImageInput, as_png: Literal[True], *, model: str | None = None, version: int | None = None
    ) -> ImageResult: ...

    def predict(
        self,
        image_or_batch: ImageInput | list[ImageInput] | tuple[ImageInput, ...],
        as_png: bool = False,
        *,
        model: str | None = None,
        version: int | None = None,
    ) -> Prediction | list[Prediction] | ImageResult:
        """One image -> Prediction; a list of images -> list[Prediction]; as_png: the bar chart.

        An image is a path, bytes (PNG/JPEG/WebP), a PIL image, or an HWC array of the model's
        input size, e.g. (32, 32, 3) (uint8 in 0-255 or float in 0-1).
        """
        return self._send(self._predict(image_or_batch, model, version, as_png))

    def activations(
        self,
        image: Any,
        layer: str | int,
        channels: Sequence[int] | None = None,
        as_png: bool = False,
        *,
        model: str | None = None,
    ) -> Activations | ImageResult:
        """A layer's output (by name, "conv3", or 1-based index, 3); values: (H, W, len(channels))."""
        return self._send(self._activations(image, layer, channels, as_png, model))

    def activation_animation(self, image: Any, *, model: str | None = None) -> ImageResult:
        """GIF from the input through the activations after layers 3, 6 and 9."""
        return self._send(self._animation(image, model))

    def weight_histograms(
        self,
        stage: Literal["initial", "trained", "both"] = "both",
        layers: Sequence[str | int] | None = None,
        bins: int = 50,
        as_png: bool = False,
        *,
        model: str | None = None,
        weights: Literal["served", "learned"] | None = None,
    ) -> list[Histogram] | ImageResult:
        """Per layer and weight tensor; `weights`: served (as the service runs them) or learned (as
        the optimizer trained them, for a model that folds BatchNorm; the server's default)."""
        return self._send(self._histograms(stage, layers, bins, as_png, model, weights))

    def integrated_gradients(
        self,
        image: Any,
        target: int | str | None = None,
        steps: int = 50,
        baseline: Any = "black",
        method: Method = "gauss_legendre",
        tolerance: float | None = None,
        as_png: bool = False,
        *,
        model: str | None = None,
        score: Score = "probability",
        samples: int = 0,
        noise: float = 0.15,
        seed: int = 0,
    ) -> Attribution | ImageResult:
        """Attributions (H, W, C) like the input, with the completeness check; `baseline` a name or an
        image; `score="logit"` attributes the target's logit instead of its probability; `samples`
        > 0 averages over that many noisy copies (SmoothGrad, `noise` x the image's range, `seed`)."""
        return self._send(
            self._integrated_gradients(
                image, target, steps, baseline, method, tolerance, as_png, model, score, samples, noise, seed
            )
        )

    def interior_gradients(
        self,
        image: Any,
        alphas: Sequence[float] | None = None,
        target: int | str | None = None,
        as_png: bool = False,
        *,
        model: str | None = None,
        score: Score = "probability",
    ) -> InteriorGradients | ImageResult:
        return self._send(self._interior_gradients(image, alphas, target, as_png, model, score))

    def explain(
        self,
        image: Any,
        method: str,
        target: int | str | None = None,
        *,
        score: Score = "probability",
        evaluate: Sequence[str] | None = None,
        as_png: bool = False,
        model: str | None = None,
        **parameters: Any,
    ) -> Explanation | ImageResult:
        """Any method of `GET /explain` by name ("grad-cam", "guided-ig", ...; integrated gradients
        have `integrated_gradients`, with their completeness check), its own parameters as
        keywords (`layer="conv6"`, `samples=25`), and the trust scores `evaluate` names
        ("deletion", "insertion", "sanity")."""
        return self._send(self._explain(image, method, target, score, evaluate, as_png, model, parameters))

    def examples(
        self,
        image: Any,
        index: str,
        k: int = 9,
        *,
        exact: bool = False,
        as_png: bool = False,
        model: str | None = None,
    ) -> dict[str, Any] | ImageResult:
        """The `k` images of the dataset index `index` (an `index` job built it) that the model
        thinks `image` is like: each with its source, label, cosine distance and a thumbnail (a
        PNG data: URL), beside the model's prediction; or, `as_png`, a grid of them."""
        return self._send(self._examples(image, index, k, exact, as_png, model))

    def example_indexes(self, *, model: str | None = None) -> list[dict[str, Any]]:
        """The model version's example indexes: name, layer, count, search."""
        return self._send(self._example_indexes(model))

    def explain_methods(self) -> list[dict[str, Any]]:
        """The methods this server offers, with each parameter's schema (its defaults and caps)."""
        spec = rq.RequestSpec("GET", "/explain", [])
        return self._send(_Call(spec, lambda body: list(body["methods"])))

    def visualize(
        self,
        layer: str | int,
        channel: int | None = None,
        *,
        count: int | None = None,
        steps: int | None = None,
        seed: int = 0,
        as_png: bool = False,
        model: str | None = None,
    ) -> list[Feature] | ImageResult:
        """What a channel looks for (one `channel`), or the first `count` channels of a layer (default 8,
        every class on a last layer with one channel per class)."""
        return self._send(self._visualize(layer, channel, count, steps, seed, as_png, model))


class AsyncClient(_Builder):
    """Asynchronous twin of Client: the same methods, awaited.

    >>> async with AsyncClient("http://127.0.0.1:8000") as client:
    ...     (await client.predict("cat.png")).label
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.25,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff)
        self._owns_client = http_client is None
        self._http = traced_async(
            http_client or httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)
        )
        self.jobs = AsyncJobs(self._http, self.headers)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.spec.method, self.base_url + call.spec.path, **self._request_kwargs(call.spec)
                )
            except httpx.TransportError as exc:
                delay = self._delay(attempt, None)
                if delay is None:
                    raise TransportError(f"{self.base_url} could not be reached: {exc}") from exc
            else:
                delay = self._delay(attempt, response)
                if delay is None:
                    return self._result(call, response)
            await asyncio.sleep(delay)
            attempt += 1

    async def models(self) -> ModelList:
        return await self._send(self._models())

    @overload
    async def predict(
        self,
        image_or_batch: list[ImageInput] | tuple[ImageInput, ...],
        as_png: Literal[False] = False,
        *,
        model: str | None = None,
        version: int | None = None,
    ) -> list[Prediction]: ...

    @overload
    async def predict(
        self,
        image_or_batch: ImageInput,
        as_png: Literal[False] = False,
        *,
        model: str | None = None,
        version: int | None = None,
    ) -> Prediction: ...

    @overload
    async def predict(
        self, image_or_batch: ImageInput, as_png: Literal[True], *, model: str | None = None, version: int | None = None
    ) -> ImageResult: ...

    async def predict(
        self,
        image_or_batch: ImageInput | list[ImageInput] | tuple[ImageInput, ...],
        as_png: bool = False,
        *,
        model: str | None = None,
        version: int | None = None,
    ) -> Prediction | list[Prediction] | ImageResult:
        return await self._send(self._predict(image_or_batch, model, version, as_png))

    async def activations(
        self,
        image: Any,
        layer: str | int,
        channels: Sequence[int] | None = None,
        as_png: bool = False,
        *,
        model: str | None = None,
    ) -> Activations | ImageResult:
        return await self._send(self._activations(image, layer, channels, as_png, model))

    async def activation_animation(self, image: Any, *, model: str | None = None) -> ImageResult:
        return await self._send(self._animation(image, model))

    async def weight_histograms(
        self,
        stage: Literal["initial", "trained", "both"] = "both",
        layers: Sequence[str | int] | None = None,
        bins: int = 50,
        as_png: bool = False,
        *,
        model: str | None = None,
        weights: Literal["served", "learned"] | None = None,
    ) -> list[Histogram] | ImageResult:
        """Per layer and weight tensor; `weights`: served (as the service runs them) or learned (as
        the optimizer trained them, for a model that folds BatchNorm; the server's default)."""
        return await self._send(self._histograms(stage, layers, bins, as_png, model, weights))

    async def integrated_gradients(
        self,
        image: Any,
        target: int | str | None = None,
        steps: int = 50,
        baseline: Any = "black",
        method: Method = "gauss_legendre",
        tolerance: float | None = None,
        as_png: bool = False,
        *,
        model: str | None = None,
        score: Score = "probability",
        samples: int = 0,
        noise: float = 0.15,
        seed: int = 0,
    ) -> Attribution | ImageResult:
        return await self._send(
            self._integrated_gradients(
                image, target, steps, baseline, method, tolerance, as_png, model, score, samples, noise, seed
            )
        )

    async def interior_gradients(
        self,
        image: Any,
        alphas: Sequence[float] | None = None,
        target: int | str | None = None,
        as_png: bool = False,
        *,
        model: str | None = None,
        score: Score = "probability",
    ) -> InteriorGradients | ImageResult:
        return await self._send(self._interior_gradients(image, alphas, target, as_png, model, score))

    async def explain(
        self,
        image: Any,
        method: str,
        target: int | str | None = None,
        *,
        score: Score = "probability",
        evaluate: Sequence[str] | None = None,
        as_png: bool = False,
        model: str | None = None,
        **parameters: Any,
    ) -> Explanation | ImageResult:
        return await self._send(self._explain(image, method, target, score, evaluate, as_png, model, parameters))

    async def examples(
        self,
        image: Any,
        index: str,
        k: int = 9,
        *,
        exact: bool = False,
        as_png: bool = False,
        model: str | None = None,
    ) -> dict[str, Any] | ImageResult:
        return await self._send(self._examples(image, index, k, exact, as_png, model))

    async def example_indexes(self, *, model: str | None = None) -> list[dict[str, Any]]:
        return await self._send(self._example_indexes(model))

    async def explain_methods(self) -> list[dict[str, Any]]:
        spec = rq.RequestSpec("GET", "/explain", [])
        return await self._send(_Call(spec, lambda body: list(body["methods"])))

    async def visualize(
        self,
        layer: str | int,
        channel: int | None = None,
        *,
        count: int | None = None,
        steps: int | None = None,
        seed: int = 0,
        as_png: bool = False,
        model: str | None = None,
    ) -> list[Feature] | ImageResult:
        return await self._send(self._visualize(layer, channel, count, steps, seed, as_png, model))
