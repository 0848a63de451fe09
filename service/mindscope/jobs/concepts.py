"""Concepts for TCAV: named sets of example images (striped textures, wheels, or any set a user
brings), registered from a data-root folder or an uploaded archive and kept as their files under
`<jobs dir>/concepts/<name>/images/` (a concept is the same images for any model; each model decodes
them at its own input size when a `tcav` job runs). A concept is written whole under a temporary
name and renamed into place; a name is never replaced (delete it first)."""

from __future__ import annotations

import io
import json
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mindscope.errors import ConceptExists, InvalidInput, UnknownConcept
from mindscope.jobs import sources
from mindscope.jobs.indexes import NAME

MIN_IMAGES = 5


@dataclass(frozen=True)
class ConceptInfo:
    name: str
    count: int
    skipped: list[str]  # files that were not images
    source: str  # the data-root folder, or "archive"
    created: float


def check_concept_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(
            "a concept needs a name of 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            name=name,
        )
    return name


def _is_image(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.verify()
        return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False


class ConceptStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, name: str) -> Path:
        return self.root / check_concept_name(name)

    def create(
        self,
        name: str,
        limits: sources.ArchiveLimits,
        data_root: Path | None = None,
        folder: str | None = None,
        archive: bytes | None = None,
    ) -> ConceptInfo:
        """The concept from a data-root folder or an archive (checked as a job's are); refused, with
        nothing stored, when it holds fewer than MIN_IMAGES images or the name is taken."""
        target = self.folder(name)
        if target.exists():
            raise ConceptExists(f"concept {name!r} exists; DELETE /concepts/{name} first to replace it", name=name)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".incoming-{uuid.uuid4().hex}"
        try:
            images = staging / "images"
            if archive is not None:
                files = sources.extract_archive(archive, images, limits)
                origin = "archive"
            elif folder is not None:
                if data_root is None:
                    raise InvalidInput("this server has no data root (MINDSCOPE_DATA_ROOT); upload an archive")
                found, listed = sources.folder_files(data_root, folder)
                if len(listed) > limits.max_files:
                    raise InvalidInput(f"folder {folder!r} holds {len(listed)} files; at most {limits.max_files}")
                images.mkdir(parents=True)
                reader = sources.DataRoot(data_root)
                files = []
                for relative in listed:
                    name_in = str(Path(relative).relative_to(found.relative_to(data_root.resolve())))
                    (images / name_in).parent.mkdir(parents=True, exist_ok=True)
                    (images / name_in).write_bytes(reader.read(relative))
                    files.append(name_in)
                origin = folder
            else:
                raise InvalidInput('a concept needs its images: {"folder": ...} under the data root, or an archive')
            skipped = []
            for relative in files:
                if not _is_image((images / relative).read_bytes()):
                    (images / relative).unlink()
                    skipped.append(relative)
            count = len(files) - len(skipped)
            if count < MIN_IMAGES:
                raise InvalidInput(
                    f"a concept needs at least {MIN_IMAGES} images; this one has {count}"
                    + (f" ({len(skipped)} files were not images)" if skipped else ""),
                    images=count,
                )
            info = ConceptInfo(name, count, skipped, origin, time.time())
            (staging / "meta.json").write_text(json.dumps(asdict(info)))
            staging.rename(target)
            return info
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def get(self, name: str) -> ConceptInfo:
        meta = self.folder(name) / "meta.json"
        if not meta.exists():
            names = [info.name for info in self.listed()]
            raise UnknownConcept(
                f"no concept {name!r}" + (f"; there are {', '.join(names)}" if names else "; POST /concepts makes one"),
                concepts=names,
            )
        return ConceptInfo(**json.loads(meta.read_text()))

    def listed(self) -> list[ConceptInfo]:
        if not self.root.is_dir():
            return []
        return [
            ConceptInfo(**json.loads(meta.read_text()))
            for meta in sorted(self.root.glob("*/meta.json"))
            if not meta.parent.name.startswith(".")
        ]

    def images(self, name: str) -> list[tuple[str, bytes]]:
        """The concept's image files, sorted by path: (path, bytes)."""
        self.get(name)
        folder = self.folder(name) / "images"
        return [
            (str(path.relative_to(folder)), path.read_bytes()) for path in sorted(folder.rglob("*")) if path.is_file()
        ]

    def delete(self, name: str) -> None:
        self.get(name)
        shutil.rmtree(self.folder(name))
