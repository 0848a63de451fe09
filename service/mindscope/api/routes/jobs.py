"""/jobs: submit work over many images, follow it (JSON or Server-Sent Events), read its results
(Parquet, CSV, a zip with the maps, or one item as the synchronous route answers it), cancel it.
The work itself is `jobs.service`: these routes only read requests and map answers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from mindscope.api.codecs import content_type, read_body, wants_png
from mindscope.api.errors import ERROR_RESPONSES
from mindscope.api.explanations import Answering, answer
from mindscope.api.responses import PNG_RESPONSE, json_response, picture_response
from mindscope.api.routes.predict import predictions_out
from mindscope.api.schemas import TcavReportOut
from mindscope.dataplane.decoding import DecodedImage, DecodedRequest
from mindscope.errors import InvalidInput, InvalidJSON, ReportNotReady, UnsupportedMediaType
from mindscope.jobs import results
from mindscope.jobs.service import JobService, Submitted
from mindscope.jobs.spec import JobRequest
from mindscope.jobs.store import FINISHED, STATES, JobRow
from mindscope.render.charts import probability_chart, tcav_chart

router = APIRouter(prefix="/jobs", tags=["jobs"])

ARCHIVE_TYPES = (
    "application/zip",
    "application/x-zip-compressed",
    "application/x-tar",
    "application/gzip",
    "application/x-gzip",
    "application/x-bzip2",
    "application/x-xz",
)
ERRORS_SHOWN = 20  # per-item errors a job's JSON lists (the results table has all)


class ItemsOut(BaseModel):
    total: int
    done: int = Field(description="items finished with a result")
    failed: int = Field(description="items finished with an error (the job goes on)")
    queued: int = Field(description="items still to run")


class ItemErrorOut(BaseModel):
    n: int
    source: str
    error: str


class JobOut(BaseModel):
    id: str
    kind: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    model: dict[str, Any]
    method: str | None
    parameters: dict[str, Any]
    source: str = Field(description="folder, archive or images")
    created: str
    started: str | None
    finished: str | None
    items: ItemsOut
    rate: float | None = Field(description="items per second since the job started")
    eta_s: float | None = Field(description="seconds left at that rate")
    error: str | None = Field(description="why the job failed, when it did")
    errors: list[ItemErrorOut] = Field(description=f"the first {ERRORS_SHOWN} items that failed")
    bytes: int = Field(description="bytes the job's inputs and results take on disk")
    links: dict[str, str]


class JobsOut(BaseModel):
    jobs: list[JobOut]


def _when(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def job_out(jobs: JobService, job: JobRow) -> JobOut:
    finished = job.done + job.failed
    queued = 0 if job.state in FINISHED else job.total - finished
    rate = eta = None
    if job.started is not None and finished:
        elapsed = (job.finished or time.time()) - job.started
        rate = finished / elapsed if elapsed > 0 else None
        eta = None if rate is None or job.state in FINISHED else queued / rate
    failed_items = jobs.store.items(job.id, "failed", ERRORS_SHOWN) if job.failed else []
    base = f"/jobs/{job.id}"
    return JobOut(
        id=job.id,
        kind=job.kind,
        state=job.state,
        model={"name": job.spec["model"], "version": job.spec["version"]},
        method=job.spec.get("method"),
        parameters=job.spec.get("parameters", {}),
        source=job.spec["source"],
        created=_when(job.created) or "",
        started=_when(job.started),
        finished=_when(job.finished),
        items=ItemsOut(total=job.total, done=job.done, failed=job.failed, queued=queued),
        rate=rate,
        eta_s=eta,
        error=job.error,
        errors=[ItemErrorOut(n=i.n, source=i.source, error=i.error or "") for i in failed_items],
        bytes=job.bytes,
        links={
            "self": base,
            "events": f"{base}/events",
            "results": f"{base}/results",
            "items": f"{base}/items/{{n}}",
        },
    )


def _jobs(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


def accepted(jobs: JobService, submitted: Submitted) -> Response:
    """202 with the job and where to follow it."""
    headers = {"Location": f"/jobs/{submitted.job.id}"}
    if submitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    body = job_out(jobs, submitted.job).model_dump_json()
    return Response(body, status_code=202, media_type="application/json", headers=headers)


def _request_of(values: object) -> JobRequest:
    try:
        return JobRequest.model_validate(values)
    except ValidationError as exc:
        raise InvalidInput(
            "the job is not valid: see errors; POST /jobs takes "
            '{"kind": "explain", "method": "integrated-gradients", "parameters": {...}, "folder": "..."}',
            errors=json.loads(exc.json(include_url=False, include_context=False)),
        ) from None


def _json(text: str | bytes, what: str) -> object:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidJSON(f"{what} is not valid JSON: {str(exc)[:200]}") from None


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` put in place: the OpenAPI document has no `$defs` for
    `#/$defs/...` references to point into."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


JOB_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inlined(JobRequest.model_json_schema())},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["job", "archive"],
                    "properties": {
                        "job": {"type": "string", "description": "the job as JSON, without a source"},
                        "archive": {"type": "string", "format": "binary", "description": "a zip or tar of images"},
                    },
                }
            },
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
            "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    openapi_extra=JOB_BODY,
    responses=ERROR_RESPONSES,
    summary="Submit a job: predict or explain every image of a folder, an archive or a list",
)
async def submit_job(
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=255, description="a retried submission with the same key answers the same job"),
    ] = None,
    kind: Annotated[str | None, Query(description="raw archive bodies: the job's kind")] = None,
    model: Annotated[str | None, Query(max_length=64, description="raw archive bodies: the model")] = None,
    version: Annotated[int | None, Query(ge=1, description="raw archive bodies: the model's version")] = None,
    method: Annotated[str | None, Query(max_length=64, description="raw archive bodies: the method")] = None,
    parameters: Annotated[
        str | None, Query(max_length=4096, description="raw archive bodies: the method's parameters as JSON")
    ] = None,
) -> Response:
    jobs = _jobs(request)
    media_type = content_type(request.headers)
    archive: bytes | None = None
    if media_type == "application/json":
        job = _request_of(_json(await read_body(request), "the body"))
    elif media_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=4) as form:
            field, upload = form.get("job"), form.get("archive")
            if not isinstance(field, str) or not isinstance(upload, UploadFile):
                raise InvalidInput("a multipart job needs a field 'job' (its JSON) and a file field 'archive'")
            job = _request_of(_json(field, "the 'job' field"))
            archive = await upload.read()
    elif media_type in ARCHIVE_TYPES:
        fields: dict[str, Any] = {"kind": kind, "model": model, "version": version, "method": method}
        if parameters is not None:
            fields["parameters"] = _json(parameters, "?parameters")
        job = _request_of({k: v for k, v in fields.items() if v is not None})
        archive = await read_body(request)
    else:
        raise UnsupportedMediaType(
            f"POST /jobs takes application/json, multipart/form-data or an archive ({', '.join(ARCHIVE_TYPES[:3])}); "
            f"got {media_type or 'none'}",
            accepted=["application/json", "multipart/form-data", *ARCHIVE_TYPES],
        )
    submitted = await run_in_threadpool(jobs.submit, job, archive, None, idempotency_key)
    return accepted(jobs, submitted)


@router.get("", response_model=JobsOut, responses=ERROR_RESPONSES, summary="The jobs, newest first")
def list_jobs(
    request: Request,
    state: Annotated[str | None, Query(pattern="^(" + "|".join(STATES) + ")$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    jobs = _jobs(request)
    return json_response(JobsOut(jobs=[job_out(jobs, job) for job in jobs.store.listed(state, limit)]))


@router.get("/{job_id}", response_model=JobOut, responses=ERROR_RESPONSES, summary="A job's state and progress")
def get_job(request: Request, job_id: str) -> Response:
    jobs = _jobs(request)
    return json_response(job_out(jobs, jobs.get(job_id)))


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    responses={**ERROR_RESPONSES, 204: {"description": "a finished job: deleted, files and all"}},
    summary="Cancel a queued or running job (its queued items are withdrawn); delete a finished one",
)
def delete_job(request: Request, job_id: str) -> Response:
    jobs = _jobs(request)
    job = jobs.get(job_id)
    if job.state in FINISHED:
        jobs.delete(job_id)
        return Response(status_code=204)
    return json_response(job_out(jobs, jobs.cancel(job_id)))


@router.get(
    "/{job_id}/events",
    responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}}},
    summary="Server-Sent Events: the job's JSON each time its progress moves, until it ends",
)
async def job_events(
    request: Request,
    job_id: str,
    interval_s: Annotated[float, Query(ge=0.05, le=10, description="how often progress is looked at")] = 0.5,
) -> EventSourceResponse:
    jobs = _jobs(request)
    jobs.get(job_id)  # 404 before the stream starts

    async def events() -> AsyncIterator[dict[str, str]]:
        last = None
        while True:
            job = await run_in_threadpool(jobs.store.get, job_id)
            if job is None:
                yield {"event": "deleted", "data": json.dumps({"id": job_id})}
                return
            seen = (job.state, job.done, job.failed)
            if seen != last:
                last = seen
                body = await run_in_threadpool(job_out, jobs, job)
                yield {"event": "end" if job.state in FINISHED else "progress", "data": body.model_dump_json()}
            if job.state in FINISHED:
                return
            await asyncio.sleep(interval_s)

    return EventSourceResponse(events(), ping=15)


ResultsFormat = Literal["json", "csv", "parquet", "zip"]
RESULT_TYPES = {
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "zip": "application/zip",
    "json": "application/json",
}


def _results_format(request: Request, chosen: str | None) -> str:
    if chosen is not None:
        return chosen
    accept = request.headers.get("accept", "")
    for name, media in RESULT_TYPES.items():
        if media in accept:
            return name
    return "json"


@router.get(
    "/{job_id}/results",
    responses={
        **ERROR_RESPONSES,
        200: {"content": {media: {} for media in RESULT_TYPES.values()}, "description": "one row per image"},
    },
    summary="A job's results so far: one row per image (JSON, CSV, Parquet), or a zip with the maps",
)
def job_results(
    request: Request,
    job_id: str,
    format: Annotated[
        ResultsFormat | None, Query(description="json, csv, parquet or zip (maps as .npy); overrides Accept")
    ] = None,
) -> Response:
    jobs = _jobs(request)
    job = jobs.get(job_id)
    folder = jobs.folder(job_id)
    rows = results.table_rows(job, jobs.store.items(job_id), folder)
    chosen = _results_format(request, format)
    disposition = {"Content-Disposition": f'attachment; filename="job-{job_id}.{chosen}"'}
    if chosen == "csv":
        return Response(results.csv_bytes(rows), media_type="text/csv", headers=disposition)
    if chosen == "parquet":
        return Response(results.parquet_bytes(rows), media_type=RESULT_TYPES["parquet"], headers=disposition)
    if chosen == "zip":
        described = job_out(jobs, job).model_dump(mode="json")
        data = results.zip_bytes(job, rows, folder, described)
        return Response(data, media_type="application/zip", headers=disposition)
    return Response(json.dumps({"job": job_id, "rows": rows}), media_type="application/json")


@router.get(
    "/{job_id}/report",
    response_model=TcavReportOut,
    responses={**ERROR_RESPONSES, 200: PNG_RESPONSE},
    summary="A tcav job's scores so far, per layer, with their t-test (JSON), or its chart (PNG); an audit's "
    "report.html or report.json",
)
def job_report(
    request: Request,
    job_id: str,
    format: Annotated[
        str | None,
        Query(pattern="^(json|png|html)$", description="tcav: json or png; audit: html or json; overrides Accept"),
    ] = None,
) -> Response:
    jobs = _jobs(request)
    job = jobs.get(job_id)
    if job.kind == "audit":
        return _audit_report(jobs, job, request, format)
    if job.kind != "tcav":
        raise InvalidInput(f"job {job_id} is a {job.kind} job; only tcav and audit jobs have a report (see /results)")
    report = results.tcav_report(job, jobs.store.items(job_id), jobs.model_of(job).class_names)
    if wants_png(request, format):
        if not report["layers"]:
            raise InvalidInput(f"job {job_id} has no finished image yet ({job.state}); ask again once it has")
        return picture_response(tcav_chart(report["concept"], report["target"], report["layers"], report["alpha"]))
    return json_response(TcavReportOut.model_validate(report))


def _audit_report(jobs: JobService, job: JobRow, request: Request, format: str | None) -> Response:
    """The audit's report.html (one self-contained page) or report.json, written when the job ends."""
    if job.state != "succeeded":
        raise ReportNotReady(
            f"job {job.id} is {job.state}; an audit's report is written when the job has succeeded "
            f"(follow it at /jobs/{job.id}/events)",
            state=job.state,
        )
    as_json = format == "json" or (format is None and "text/html" not in request.headers.get("accept", ""))
    name = "report.json" if as_json else "report.html"
    media = "application/json" if as_json else "text/html; charset=utf-8"
    return Response((jobs.folder(job.id) / name).read_bytes(), media_type=media)


@router.get(
    "/{job_id}/items/{n}",
    responses={**ERROR_RESPONSES, 200: PNG_RESPONSE},
    summary="One item's answer, JSON or PNG, as the synchronous route answers it",
)
def job_item(
    request: Request,
    job_id: str,
    n: int,
    format: Annotated[str | None, Query(pattern="^(json|png)$")] = None,
) -> Response:
    jobs = _jobs(request)
    found = jobs.answer(job_id, n)
    item = found.item
    if found.image is None:
        status = 409 if item.state == "queued" else 422
        what = "has not run yet" if item.state == "queued" else f"is {item.state}"
        body = {
            "error": {
                "code": "item_not_answered",
                "message": f"item {n} ({item.source}) {what}" + (f": {item.error}" if item.error else ""),
                "details": {"state": item.state, "error": item.error},
            }
        }
        return Response(json.dumps(body), status_code=status, media_type="application/json")
    job = found.job
    loaded = jobs.model_of(job)
    png = wants_png(request, format)
    if job.kind == "predict":
        probabilities = np.asarray([item.result["probabilities"]], np.float32)  # type: ignore[index]
        if png:
            return picture_response(probability_chart(probabilities[0], loaded.class_names))
        decoded = DecodedRequest([found.image], None, batch=False)
        return json_response(predictions_out(loaded, probabilities, decoded))
    if job.kind == "index":
        raise InvalidInput(
            f"item {n} of an index job has no answer of its own: it is a row of the index "
            f"{job.spec['parameters'].get('name')!r}; ask POST /explain/examples?index=... with an image",
            index=job.spec["parameters"].get("name"),
        )
    if job.kind == "tcav":
        raise InvalidInput(
            f"item {n} of a tcav job has no answer of its own; the job's scores are at /jobs/{job.id}/report"
        )
    work = jobs.work_of(job, loaded)
    assert work.method is not None and work.explaining is not None and found.explained is not None
    answered = answer(
        loaded,
        work.method,
        work.explaining.params,
        work.context,
        DecodedImage(found.image.pixels, found.image.info),
        found.explained,
        Answering(png),
    )
    return answered if isinstance(answered, Response) else json_response(answered)


@router.get(
    "/{job_id}/items/{n}/map",
    responses={**ERROR_RESPONSES, 200: {"content": {"application/x-npy": {}}}},
    summary="One explained item's attribution map as a .npy file (float32, the input's shape)",
)
def job_item_map(request: Request, job_id: str, n: int) -> Response:
    jobs = _jobs(request)
    jobs.get(job_id)
    path = jobs.map_path(job_id, n)
    if not path.exists():
        found = jobs.answer(job_id, n)  # 404 for an item that does not exist
        raise InvalidInput(f"item {n} has no map: it is {found.item.state} in a {found.job.kind} job")
    return Response(path.read_bytes(), media_type="application/x-npy")
