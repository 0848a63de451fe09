"""Payload logging, KServe's logger convention: with MINDSCOPE_PAYLOAD_LOG_URL set, each inference
request and its response (or only one of them, or a sampled fraction) goes to that URL as a
CloudEvent in binary content mode: the body as it travelled, `ce-*` headers (`ce-id` is the request
id, `ce-type` org.kubeflow.serving.inference.request or .response as KServe's logger sends), and
the model and version as the `ce-inferenceservicename` and `ce-modelversion` extension attributes.

Nothing waits for the sink: the middleware copies what it saw into a bounded queue and goes on; one
thread sends. A full queue (a slow or absent sink) drops the event and counts it, never slowing or
failing a request. Bodies travel as their bytes, or, with MINDSCOPE_PAYLOAD_LOG_BODIES=digest, as
their SHA-256 and size (a JSON document of type application/vnd.mindscope.digest+json).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import queue
import random
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("mindscope.payload_log")
# What is logged: inference, the routes that run the model on a body.
LOGGED = re.compile(r"^/(predict|explain/[^/]+|activations/.+|v1/models/[^/]+:(predict|explain)|v2/models/.+/infer)$")
V2_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
V1_MODEL = re.compile(r"^/v1/models/([^/:]+)")
DIGEST_TYPE = "application/vnd.mindscope.digest+json"
REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
MAX_BODY = 16 * 2**20  # a body past this travels as its digest whatever the setting


@dataclass(frozen=True)
class PayloadLogSettings:
    url: str
    mode: Literal["all", "request", "response"] = "all"
    sample: float = 1.0  # the fraction of requests logged
    bodies: Literal["bytes", "digest"] = "bytes"
    queue_size: int = 1000  # events waiting to be sent; past it, new ones are dropped and counted
    timeout_s: float = 5.0  # a send that takes longer fails and is counted


@dataclass
class Event:
    id: str
    type: str
    time: str
    content_type: str
    body: bytes
    model: str | None
    version: str | None
    endpoint: str
    extra: dict[str, str] = field(default_factory=dict)


class PayloadSink:
    """The bounded queue and the thread that sends its events, one at a time, as CloudEvents."""

    def __init__(self, settings: PayloadLogSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self._queue: queue.Queue[Event | None] = queue.Queue(settings.queue_size)
        self.sent = Counter("mindscope_payload_log_sent", "payload events the sink accepted", registry=registry)
        self.dropped = Counter(
            "mindscope_payload_log_dropped", "payload events dropped: the queue was full", registry=registry
        )
        self.failed = Counter(
            "mindscope_payload_log_failed", "payload events the sink refused or did not answer", registry=registry
        )
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="payload-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:  # the thread is a daemon: what is still queued goes with the process
                return
            self._thread.join(timeout=self.settings.timeout_s + 1)

    def offer(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped.inc()

    def _run(self) -> None:
        """Send events one at a time over one kept-alive connection (http.client: a fraction of an
        httpx request's Python, which competes with the model for the cores)."""
        target = urlsplit(self.settings.url)
        path = (target.path or "/") + (f"?{target.query}" if target.query else "")
        connection: http.client.HTTPConnection | None = None
        while (event := self._queue.get()) is not None:
            try:
                if connection is None:
                    kind = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
                    connection = kind(target.hostname or "localhost", target.port, timeout=self.settings.timeout_s)
                connection.request("POST", path, body=event.body, headers=cloud_event_headers(event))
                answer = connection.getresponse()
                answer.read()
                if answer.status >= 300:
                    raise http.client.HTTPException(f"the sink answered {answer.status}")
                self.sent.inc()
            except (OSError, http.client.HTTPException) as exc:
                self.failed.inc()
                logger.warning("payload log: %s to %s failed: %s", event.type, self.settings.url, exc)
                if connection is not None:
                    connection.close()
                connection = None
        if connection is not None:
            connection.close()


def cloud_event_headers(event: Event) -> dict[str, str]:
    """The CloudEvents 1.0 binary content mode headers of the event."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event.id,
        "ce-source": "mindscope",
        "ce-type": event.type,
        "ce-time": event.time,
        "ce-endpoint": event.endpoint,
        "content-type": event.content_type,
    }
    if event.model is not None:
        headers["ce-inferenceservicename"] = event.model
    if event.version is not None:
        headers["ce-modelversion"] = event.version
    return headers | {f"ce-{name}": value for name, value in event.extra.items()}


class PayloadLogger:
    """ASGI middleware: copies the inference requests and responses it passes to the sink."""

    def __init__(self, app: ASGIApp, sink: PayloadSink) -> None:
        self.app = app
        self.sink = sink
        self.settings = sink.settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not LOGGED.match(scope["path"])
            or random.random() >= self.settings.sample  # noqa: S311 (sampling, not security)
        ):
            await self.app(scope, receive, send)
            return
        request_body: list[bytes] = []
        response_body: list[bytes] = []
        started: dict[str, object] = {}
        request_type = dict(scope["headers"]).get(b"content-type", b"application/octet-stream").decode("latin-1")

        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                request_body.append(message.get("body", b""))
            return message

        async def sending(message: Message) -> None:
            await send(message)  # the request id header is added to the message as it is sent
            if message["type"] == "http.response.start":
                started["status"] = message["status"]
                started["headers"] = {k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])}
            elif message["type"] == "http.response.body":
                response_body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self._log(scope, request_type, b"".join(request_body), started, b"".join(response_body))

        await self.app(scope, receiving, sending)

    def _log(
        self, scope: Scope, request_type: str, request: bytes, started: dict[str, object], response: bytes
    ) -> None:
        headers: dict[str, str] = started.get("headers", {})  # type: ignore[assignment]
        request_id = headers.get("x-request-id", "")
        response_type = headers.get("content-type", "application/octet-stream")
        model, version = model_of(scope, response, response_type)
        now = datetime.now(UTC).isoformat()
        path = scope["path"]
        if self.settings.mode in ("all", "request"):
            body, kind = self._body(request, request_type)
            self.sink.offer(Event(request_id, REQUEST, now, kind, body, model, version, path))
        if self.settings.mode in ("all", "response"):
            body, kind = self._body(response, response_type)
            status = {"status": str(started.get("status", ""))}
            event_id = f"{request_id}-response" if self.settings.mode == "all" else request_id
            self.sink.offer(Event(event_id, RESPONSE, now, kind, body, model, version, path, status))

    def _body(self, data: bytes, content_type: str) -> tuple[bytes, str]:
        if self.settings.bodies == "bytes" and len(data) <= MAX_BODY:
            return data, content_type
        digest = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "content_type": content_type}
        return json.dumps(digest).encode(), DIGEST_TYPE


def model_of(scope: Scope, response: bytes, content_type: str) -> tuple[str | None, str | None]:
    """The model and version a request went to: as its JSON answer names them (every JSON answer
    does), else as its path or query names them."""
    if content_type.startswith("application/json") and response[:1] == b"{":
        try:
            body = json.loads(response)
        except ValueError:
            body = None
        if isinstance(body, dict):
            named = body.get("model")
            if isinstance(named, dict) and "name" in named:
                return str(named["name"]), str(named.get("version")) if named.get("version") is not None else None
            if "model_name" in body:
                version = body.get("model_version")
                return str(body["model_name"]), None if version is None else str(version)
    found = V2_MODEL.match(scope["path"])
    if found:
        return found.group(1), found.group(2)
    found = V1_MODEL.match(scope["path"])
    if found:
        return found.group(1), None
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return (query["model"][0] if "model" in query else None), (query["version"][0] if "version" in query else None)
