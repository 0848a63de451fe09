"""A job service's settings (`Settings.job_settings()`): light to import, as `mindscope.config` is
read before TensorFlow loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mindscope.engine.explain.method import Caps


@dataclass(frozen=True)
class JobSettings:
    folder: Path
    data_root: Path | None
    max_bytes: int
    retention_s: float
    max_files: int
    max_archive_bytes: int
    max_image_pixels: int
    workers: int  # explain items computed at once (their rows share batches)
    caps: Caps
    ray_address: str | None = None  # jobs compute on this Ray cluster (`jobs.ray_runner`)
    ray_actors: int = 2
    ray_cpus_per_actor: float = 1.0
