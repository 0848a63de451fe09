"""Where a job's images come from, made safe before anything is stored.

- An archive (zip or tar, any compression tarfile reads): every member is checked before one byte
  is extracted: no absolute names or `..` parts (zip slip), no links or devices, at most
  `max_files` files and `max_bytes` uncompressed bytes as the archive declares them; extraction
  then counts the bytes it really writes and stops at the same cap (a zip may lie about sizes).
- A folder under the data root: resolved, and refused unless it lies inside the root; a file that
  resolves outside the root (a link) fails as an item, never read.
- Images in the request (as /predict takes them): decoded at submit, kept as arrays.

Labels come from class-named folders: an item whose parent folder is one of the model's classes
has that class as its label.
"""

from __future__ import annotations

import errno
import io
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from mindscope.errors import InvalidInput, PayloadTooLarge
from mindscope.jobs.store import NewItem

SKIPPED_PARTS = ("__MACOSX",)  # what archivers add beside the files


class UnsafeArchive(InvalidInput):
    code = "unsafe_archive"


@dataclass(frozen=True)
class ArchiveLimits:
    max_files: int
    max_bytes: int


@dataclass(frozen=True)
class _Member:
    name: PurePosixPath
    size: int


def _safe_name(raw: str) -> PurePosixPath | None:
    """The member's relative path, None for what is skipped (folders, archivers' extras); raises on a
    name that would land outside the extraction folder."""
    name = raw.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"archive member {raw!r} has an absolute name; archives must hold relative paths")
    if ".." in path.parts:
        raise UnsafeArchive(f"archive member {raw!r} climbs out of the archive ('..'); it was refused whole")
    if not path.parts or name.endswith("/") or any(p.startswith(".") or p in SKIPPED_PARTS for p in path.parts):
        return None
    return path


def _zip_members(archive: zipfile.ZipFile) -> list[tuple[_Member, zipfile.ZipInfo]]:
    members = []
    for info in archive.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchive(f"archive member {info.filename!r} is a link; links are refused")
        if info.is_dir():
            continue
        name = _safe_name(info.filename)
        if name is not None:
            members.append((_Member(name, info.file_size), info))
    return members


def _tar_members(archive: tarfile.TarFile) -> list[tuple[_Member, tarfile.TarInfo]]:
    members = []
    for info in archive.getmembers():
        if info.issym() or info.islnk():
            raise UnsafeArchive(f"archive member {info.name!r} is a link; links are refused")
        if info.isdir():
            continue
        if not info.isfile():
            raise UnsafeArchive(f"archive member {info.name!r} is not a regular file (a device or a pipe)")
        name = _safe_name(info.name)
        if name is not None:
            members.append((_Member(name, info.size), info))
    return members


def _check_totals(members: Sequence[_Member], limits: ArchiveLimits) -> None:
    if len(members) > limits.max_files:
        raise PayloadTooLarge(
            f"the archive holds {len(members)} files; a job takes at most {limits.max_files} "
            "(MINDSCOPE_JOBS_MAX_FILES): split it",
            files=len(members),
            max_files=limits.max_files,
        )
    total = sum(m.size for m in members)
    if total > limits.max_bytes:
        raise PayloadTooLarge(
            f"the archive unpacks to {total} bytes; a job's archive may unpack to at most {limits.max_bytes} "
            "(MINDSCOPE_JOBS_MAX_ARCHIVE_BYTES)",
            uncompressed_bytes=total,
            max_bytes=limits.max_bytes,
        )
    if not members:
        raise InvalidInput("the archive holds no files")


class _Written:
    """Counts the bytes extraction really writes, against the cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0

    def copy(self, source: IO[bytes], target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("xb") as out:
            while chunk := source.read(1 << 20):
                self.total += len(chunk)
                if self.total > self.limit:
                    raise PayloadTooLarge(
                        f"the archive unpacks to more than {self.limit} bytes (MINDSCOPE_JOBS_MAX_ARCHIVE_BYTES), "
                        "more than its members declare",
                        max_bytes=self.limit,
                    )
                out.write(chunk)


def extract_archive(data: bytes, folder: Path, limits: ArchiveLimits) -> list[str]:
    """Check every member, then extract into `folder` (which must not exist yet): the members'
    relative paths, sorted. On any refusal the caller removes `folder`."""
    try:
        return _extract(data, folder, limits)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        raise InvalidInput(f"the archive is damaged and was not unpacked: {exc}") from None


def _extract(data: bytes, folder: Path, limits: ArchiveLimits) -> list[str]:
    folder.mkdir(parents=True)
    written = _Written(limits.max_bytes)
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            zipped = _zip_members(archive)
            _check_totals([m for m, _ in zipped], limits)
            for member, info in zipped:
                with archive.open(info) as f:
                    written.copy(f, folder / member.name)
        return sorted(str(m.name) for m, _ in zipped)
    try:
        archive_file = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except tarfile.TarError:
        raise InvalidInput(
            "the body is neither a zip nor a tar archive; send application/zip or application/x-tar "
            "(gzip, bzip2 and xz tars are read too)"
        ) from None
    with archive_file as archive:
        tarred = _tar_members(archive)
        _check_totals([m for m, _ in tarred], limits)
        for member, tar_info in tarred:
            source = archive.extractfile(tar_info)
            assert source is not None  # a regular file
            written.copy(source, folder / member.name)
    return sorted(str(m.name) for m, _ in tarred)


def folder_files(root: Path, folder: str) -> tuple[Path, list[str]]:
    """The folder (resolved) and its files' paths relative to the data root, sorted; refused unless
    the folder lies inside the root."""
    root = root.resolve()
    if Path(folder).is_absolute():
        raise InvalidInput(
            f"folder {folder!r} is absolute; name a folder relative to the data root (MINDSCOPE_DATA_ROOT)"
        )
    target = (root / folder).resolve()
    if not target.is_relative_to(root):
        raise InvalidInput(f"folder {folder!r} is outside the data root; only folders under it can be read")
    if not target.is_dir():
        raise InvalidInput(f"folder {folder!r} is not a folder under the data root", folder=folder)
    files = sorted(
        str(path.relative_to(root))
        for path in _walk(target)
        if not any(part.startswith(".") for part in path.relative_to(target).parts)
    )
    if not files:
        raise InvalidInput(f"folder {folder!r} holds no files")
    return target, files


def _walk(folder: Path) -> Iterator[Path]:
    for dirpath, _, filenames in os.walk(folder, followlinks=False):
        for name in filenames:
            yield Path(dirpath) / name


def inside(root: Path, relative: str) -> Path:
    """The file `relative` names under `root`, refused if it resolves outside it (a link)."""
    root = root.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise InvalidInput(f"{relative} leads outside the data root (a link); it is not read")
    return path


class DataRoot:
    """Reads files under a data root for one job run, each refused if it resolves outside the root.

    Resolving every file's whole path took a quarter of a predict job's own Python (a `realpath`
    walks each part), so each folder is resolved once per run, and a file is opened without
    following a link (`O_NOFOLLOW`): only a file that is itself a link is resolved in full."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._folders: dict[str, Path] = {}

    def read(self, relative: str) -> bytes:
        parent, name = os.path.split(relative)
        if name in ("", ".", ".."):
            return inside(self.root, relative).read_bytes()
        try:
            handle = os.open(self._folder(parent, relative) / name, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            return inside(self.root, relative).read_bytes()  # a link: followed only if it stays inside
        with os.fdopen(handle, "rb") as file:
            return file.read()

    def _folder(self, parent: str, relative: str) -> Path:
        folder = self._folders.get(parent)
        if folder is None:
            folder = (self.root / parent).resolve()
            if not folder.is_relative_to(self.root):
                raise InvalidInput(f"{relative} leads outside the data root (a link); it is not read")
            self._folders[parent] = folder
        return folder


def labelled(paths: Sequence[str], classes: Sequence[str]) -> list[NewItem]:
    """Items for these paths, labelled by their parent folder when it names a class."""
    known = set(classes)
    items = []
    for path in paths:
        parent = PurePosixPath(path).parent.name
        items.append(NewItem(path, parent if parent in known else None))
    return items


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in _walk(folder)) if folder.exists() else 0


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
