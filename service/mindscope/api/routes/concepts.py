"""Concepts for TCAV: POST /concepts registers a named set of example images (a data-root folder, or
an uploaded archive), GET lists them, DELETE removes one. A `tcav` job (POST /jobs) then tests how a
concept moves a class's score; GET /jobs/{id}/report answers its scores."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from mindscope.api.codecs import content_type, read_body
from mindscope.api.errors import ERROR_RESPONSES
from mindscope.errors import InvalidInput, InvalidJSON, UnsupportedMediaType
from mindscope.jobs import sources
from mindscope.jobs.concepts import ConceptInfo
from mindscope.jobs.service import JobService

router = APIRouter(prefix="/concepts", tags=["concepts"])
ARCHIVE_TYPES = ("application/zip", "application/x-tar", "application/gzip", "application/x-gzip")


class ConceptRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64, description="letters, digits, '.', '_' or '-'")
    folder: str | None = Field(None, max_length=1024, description="a folder under the data root; or upload an archive")


class ConceptOut(BaseModel):
    name: str
    count: int = Field(description="images kept")
    skipped: list[str] = Field(description="files that were not images, left out")
    source: str = Field(description="the data-root folder, or archive")
    created: float

    @classmethod
    def of(cls, info: ConceptInfo) -> ConceptOut:
        return cls(name=info.name, count=info.count, skipped=info.skipped, source=info.source, created=info.created)


class ConceptsOut(BaseModel):
    concepts: list[ConceptOut]


def _jobs(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


def _parsed(text: str | bytes, what: str) -> ConceptRequest:
    try:
        return ConceptRequest.model_validate_json(text)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise InvalidJSON(f"{what} is not valid JSON") from None
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"{what} is not a concept: {problems}") from None


@router.post(
    "",
    status_code=201,
    response_model=ConceptOut,
    responses=ERROR_RESPONSES,
    summary="Register a concept: example images from a data-root folder or an uploaded archive",
)
async def create_concept(
    request: Request, name: Annotated[str | None, Query(max_length=64, description="raw archive bodies")] = None
) -> Response:
    jobs = _jobs(request)
    media_type = content_type(request.headers)
    archive: bytes | None = None
    if media_type == "application/json":
        asked = _parsed(await read_body(request), "the body")
    elif media_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=4) as form:
            field, upload = form.get("concept"), form.get("archive")
            if not isinstance(field, str) or not isinstance(upload, UploadFile):
                raise InvalidInput("a multipart concept needs a field 'concept' (its JSON) and a file field 'archive'")
            asked = _parsed(field, "the 'concept' field")
            archive = await upload.read()
    elif media_type in ARCHIVE_TYPES:
        if name is None:
            raise InvalidInput("an archive body needs the concept's name in the query: POST /concepts?name=striped")
        asked = ConceptRequest(name=name)
        archive = await read_body(request)
    else:
        raise UnsupportedMediaType(
            f"POST /concepts takes application/json, multipart/form-data or an archive; got {media_type or 'none'}",
            accepted=["application/json", "multipart/form-data", *ARCHIVE_TYPES],
        )
    if (asked.folder is None) == (archive is None):
        raise InvalidInput("a concept takes its images from exactly one of: folder (under the data root), an archive")
    limits = sources.ArchiveLimits(jobs.settings.max_files, jobs.settings.max_archive_bytes)
    info = await run_in_threadpool(
        jobs.concepts.create, asked.name, limits, jobs.settings.data_root, asked.folder, archive
    )
    return Response(
        ConceptOut.of(info).model_dump_json(),
        status_code=201,
        media_type="application/json",
        headers={"Location": f"/concepts/{info.name}"},
    )


@router.get("", response_model=ConceptsOut, responses=ERROR_RESPONSES, summary="The registered concepts")
def list_concepts(request: Request) -> ConceptsOut:
    return ConceptsOut(concepts=[ConceptOut.of(info) for info in _jobs(request).concepts.listed()])


@router.get("/{name}", response_model=ConceptOut, responses=ERROR_RESPONSES, summary="One concept")
def get_concept(request: Request, name: str) -> ConceptOut:
    return ConceptOut.of(_jobs(request).concepts.get(name))


@router.delete("/{name}", status_code=204, responses=ERROR_RESPONSES, summary="Delete a concept")
def delete_concept(request: Request, name: str) -> Response:
    _jobs(request).concepts.delete(name)
    return Response(status_code=204)
