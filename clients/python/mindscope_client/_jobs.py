"""Jobs from the SDK: `client.jobs.submit(...)` answers a `Job`; `job.wait(progress=True)` follows
its Server-Sent Events (a tqdm bar when tqdm is installed); `job.results()` is a pandas DataFrame
when pandas is installed (else a list of dicts); `job.maps()` the attribution maps as arrays;
`job.cancel()`. `AsyncClient.jobs` has the same, awaited."""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mindscope_client._exceptions import MindscopeError, TransportError, raise_for_error

FINISHED = ("succeeded", "failed", "cancelled")


def _checked(response: httpx.Response) -> httpx.Response:
    raise_for_error(response.status_code, response.json, response.text)
    return response


def _instances(images: Sequence[Any]) -> list[dict[str, str]]:
    out = []
    for image in images:
        data = Path(image).read_bytes() if isinstance(image, (str, Path)) else bytes(image)
        out.append({"b64": base64.b64encode(data).decode()})
    return out


def _archive_type(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "application/zip"
    if name.endswith((".tar.gz", ".tgz")):
        return "application/gzip"
    if name.endswith(".tar"):
        return "application/x-tar"
    raise MindscopeError(f"{path}: an archive is a .zip, .tar, .tar.gz or .tgz")


def zip_folder(folder: Path) -> bytes:
    """The folder's files, relative paths kept (class-named folders label their images)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


@dataclass(frozen=True)
class _Submission:
    json: dict[str, Any] | None
    files: dict[str, Any] | None
    data: dict[str, str] | None


def _submission(
    kind: str,
    method: str | None,
    parameters: dict[str, Any] | None,
    model: str | None,
    version: int | None,
    folder: str | None,
    images: Sequence[Any] | None,
    archive: str | Path | bytes | None,
) -> _Submission:
    job: dict[str, Any] = {"kind": kind}
    for key, value in (("method", method), ("parameters", parameters), ("model", model), ("version", version)):
        if value:
            job[key] = value
    if sum(x is not None for x in (folder, images, archive)) != 1:
        raise MindscopeError("give exactly one of folder= (on the server's data root), images= or archive=")
    if folder is not None:
        return _Submission({**job, "folder": folder}, None, None)
    if images is not None:
        return _Submission({**job, "instances": _instances(images)}, None, None)
    assert archive is not None
    return _Submission(None, {"archive": _upload(archive)}, {"job": json.dumps(job)})


def _upload(archive: str | Path | bytes) -> tuple[str, bytes, str]:
    """An archive as a multipart file: zip bytes, a .zip/.tar file, or a local folder zipped."""
    if isinstance(archive, bytes):
        return ("images.zip", archive, "application/zip")
    path = Path(archive)
    if path.is_dir():
        return (path.name + ".zip", zip_folder(path), "application/zip")
    return (path.name, path.read_bytes(), _archive_type(path))


def _table(rows: list[dict[str, Any]]) -> Any:
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows)


def _maps(data: bytes) -> dict[int, Any]:
    import numpy as np

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {
            int(Path(name).stem): np.load(io.BytesIO(archive.read(name)), allow_pickle=False)
            for name in archive.namelist()
            if name.startswith("maps/") and name.endswith(".npy")
        }


def _events(lines: Any) -> Any:
    """(event, data) pairs of a Server-Sent Events stream's lines."""
    kind = "message"
    for line in lines:
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            yield kind, json.loads(line[5:].strip())
            kind = "message"


class _Bar:
    """A tqdm bar when tqdm is installed; else a line per change on stderr."""

    def __init__(self, total: int, label: str) -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            self._bar = None
        else:
            self._bar = tqdm(total=total, desc=label, unit="img")
        self._label = label
        self._shown = 0

    def update(self, state: dict[str, Any]) -> None:
        items = state["items"]
        finished = items["done"] + items["failed"]
        if self._bar is not None:
            self._bar.total = items["total"]
            self._bar.update(finished - self._shown)
            self._bar.set_postfix(failed=items["failed"], state=state["state"])
        elif finished != self._shown:
            import sys

            print(f"{self._label}: {finished}/{items['total']} ({items['failed']} failed)", file=sys.stderr)
        self._shown = finished

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _JobState:
    """A job as of its last refresh: its JSON (`state`), id and whether it has ended."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state: dict[str, Any] = state

    @property
    def id(self) -> str:
        return str(self.state["id"])

    @property
    def done(self) -> bool:
        return self.state["state"] in FINISHED

    def __repr__(self) -> str:
        items = self.state["items"]
        name = type(self).__name__
        return f"<{name} {self.id} {self.state['state']} {items['done']}/{items['total']} failed={items['failed']}>"


class Job(_JobState):
    """A job on the server; `state` is as of the last refresh."""

    def __init__(self, http: httpx.Client, headers: dict[str, str], state: dict[str, Any]) -> None:
        super().__init__(state)
        self._http = http
        self._headers = headers

    def _get(self, path: str, **params: Any) -> httpx.Response:
        return _checked(self._http.get(f"/jobs/{self.id}{path}", params=params, headers=self._headers))

    def refresh(self) -> Job:
        self.state = self._get("").json()
        return self

    def wait(self, progress: bool = False, timeout: float | None = None) -> Job:
        """Until the job ends, following its events; a dropped stream is picked up again."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = _Bar(self.state["items"]["total"], f"job {self.id[:8]}") if progress else None
        try:
            while not self.done:
                try:
                    with self._http.stream(
                        "GET", f"/jobs/{self.id}/events", headers=self._headers, timeout=httpx.Timeout(30, read=60)
                    ) as stream:
                        if stream.status_code >= 400:
                            stream.read()
                            _checked(stream)
                        for _, state in _events(stream.iter_lines()):
                            self.state = state
                            if bar is not None:
                                bar.update(state)
                            if deadline is not None and time.monotonic() > deadline:
                                raise TransportError(f"job {self.id} did not end within {timeout} s")
                except httpx.TransportError:
                    time.sleep(1)
                self.refresh()
            if bar is not None:
                bar.update(self.state)
        finally:
            if bar is not None:
                bar.close()
        return self

    def results(self) -> Any:
        """One row per image so far: a pandas DataFrame (with pandas installed), else a list of dicts."""
        return _table(self._get("/results").json()["rows"])

    def maps(self) -> dict[int, Any]:
        """Each explained item's attribution map, by item number (numpy arrays; needs numpy)."""
        return _maps(self._get("/results", format="zip").content)

    def download(self, folder: str | Path) -> Path:
        """results.parquet, results.csv, job.json and maps/<n>.npy into `folder`."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(self._get("/results", format="zip").content)) as archive:
            archive.extractall(target)
        return target

    def item(self, n: int) -> dict[str, Any]:
        """The item's answer, as the synchronous route gives it."""
        return dict(self._get(f"/items/{n}").json())

    def report(self, as_png: bool = False) -> dict[str, Any] | bytes:
        """A tcav job's scores so far, per layer, with the t-test against random CAVs, or an audit's
        report.json (a dict); as_png: a tcav job's chart (PNG bytes)."""
        response = self._get("/report", format="png" if as_png else "json")
        return response.content if as_png else dict(response.json())

    def report_html(self) -> str:
        """An audit's report.html: one self-contained page."""
        return self._get("/report", format="html").text

    def cancel(self) -> Job:
        self.state = _checked(self._http.delete(f"/jobs/{self.id}", headers=self._headers)).json()
        return self


class Jobs:
    def __init__(self, http: httpx.Client, headers: dict[str, str]) -> None:
        self._http = http
        self._headers = headers

    def submit(
        self,
        kind: str = "explain",
        *,
        method: str | None = None,
        parameters: dict[str, Any] | None = None,
        folder: str | None = None,
        images: Sequence[Any] | None = None,
        archive: str | Path | bytes | None = None,
        model: str | None = None,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """A job over a folder under the server's data root, a list of images (paths or bytes), or
        an archive (a .zip/.tar/.tar.gz file, a local folder zipped on the way, or zip bytes)."""
        sent = _submission(kind, method, parameters, model, version, folder, images, archive)
        headers = {**self._headers, **({"Idempotency-Key": idempotency_key} if idempotency_key else {})}
        response = self._http.post("/jobs", json=sent.json, files=sent.files, data=sent.data, headers=headers)
        return Job(self._http, self._headers, _checked(response).json())

    def get(self, job_id: str) -> Job:
        return Job(self._http, self._headers, _checked(self._http.get(f"/jobs/{job_id}", headers=self._headers)).json())

    def list(self, state: str | None = None) -> list[Job]:
        params = {"state": state} if state else {}
        body = _checked(self._http.get("/jobs", params=params, headers=self._headers)).json()
        return [Job(self._http, self._headers, job) for job in body["jobs"]]


class AsyncJob(_JobState):
    """`Job`, awaited."""

    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str], state: dict[str, Any]) -> None:
        super().__init__(state)
        self._http = http
        self._headers = headers

    async def _get(self, path: str, **params: Any) -> httpx.Response:
        return _checked(await self._http.get(f"/jobs/{self.id}{path}", params=params, headers=self._headers))

    async def refresh(self) -> AsyncJob:
        self.state = (await self._get("")).json()
        return self

    async def wait(self, progress: bool = False, poll_s: float = 0.5) -> AsyncJob:
        bar = _Bar(self.state["items"]["total"], f"job {self.id[:8]}") if progress else None
        import asyncio

        try:
            while not (await self.refresh()).done:
                if bar is not None:
                    bar.update(self.state)
                await asyncio.sleep(poll_s)
            if bar is not None:
                bar.update(self.state)
        finally:
            if bar is not None:
                bar.close()
        return self

    async def results(self) -> Any:
        return _table((await self._get("/results")).json()["rows"])

    async def maps(self) -> dict[int, Any]:
        return _maps((await self._get("/results", format="zip")).content)

    async def item(self, n: int) -> dict[str, Any]:
        return dict((await self._get(f"/items/{n}")).json())

    async def report(self, as_png: bool = False) -> dict[str, Any] | bytes:
        response = await self._get("/report", format="png" if as_png else "json")
        return response.content if as_png else dict(response.json())

    async def report_html(self) -> str:
        return (await self._get("/report", format="html")).text

    async def cancel(self) -> AsyncJob:
        self.state = _checked(await self._http.delete(f"/jobs/{self.id}", headers=self._headers)).json()
        return self


class AsyncJobs:
    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self._http = http
        self._headers = headers

    async def submit(
        self,
        kind: str = "explain",
        *,
        method: str | None = None,
        parameters: dict[str, Any] | None = None,
        folder: str | None = None,
        images: Sequence[Any] | None = None,
        archive: str | Path | bytes | None = None,
        model: str | None = None,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncJob:
        sent = _submission(kind, method, parameters, model, version, folder, images, archive)
        headers = {**self._headers, **({"Idempotency-Key": idempotency_key} if idempotency_key else {})}
        response = await self._http.post("/jobs", json=sent.json, files=sent.files, data=sent.data, headers=headers)
        return AsyncJob(self._http, self._headers, _checked(response).json())

    async def get(self, job_id: str) -> AsyncJob:
        response = await self._http.get(f"/jobs/{job_id}", headers=self._headers)
        return AsyncJob(self._http, self._headers, _checked(response).json())


class Concepts:
    """Concepts for TCAV: named sets of example images (client.concepts.create("striped", folder=...))."""

    def __init__(self, http: httpx.Client, headers: dict[str, str]) -> None:
        self._http = http
        self._headers = headers

    def create(
        self, name: str, *, folder: str | None = None, archive: str | Path | bytes | None = None
    ) -> dict[str, Any]:
        """From a folder under the server's data root, or an archive: a .zip/.tar file, a local
        folder (zipped on the way) or zip bytes."""
        if archive is not None:
            files = {"archive": _upload(archive)}
            response = self._http.post(
                "/concepts", files=files, data={"concept": json.dumps({"name": name})}, headers=self._headers
            )
        else:
            response = self._http.post("/concepts", json={"name": name, "folder": folder}, headers=self._headers)
        return dict(_checked(response).json())

    def list(self) -> list[dict[str, Any]]:
        return list(_checked(self._http.get("/concepts", headers=self._headers)).json()["concepts"])

    def delete(self, name: str) -> None:
        _checked(self._http.delete(f"/concepts/{name}", headers=self._headers))
