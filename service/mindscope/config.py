"""Service settings, read from MINDSCOPE_* environment variables when the app is created."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mindscope.engine.batching import FORWARD_BATCHING, GRADIENT_BATCHING, BatchingConfig
from mindscope.engine.explain.method import Caps
from mindscope.jobs.settings import JobSettings

if TYPE_CHECKING:
    from mindscope.api.payload_log import PayloadLogSettings
    from mindscope.engine.registry import Residency


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MINDSCOPE_", frozen=True)

    model_store_dir: Path = Path("model_store")
    default_model: str | None = Field(None, description="model name used when a request names none")

    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    header_timeout_s: float = Field(10.0, gt=0, description="a connection's request headers must arrive within this")
    body_timeout_s: float = Field(
        10.0, gt=0, description="a request body must arrive within this, plus a second per body_min_rate bytes"
    )
    body_min_rate: int = Field(64 * 1024, ge=1, description="bytes per second that earn a body one more second")
    max_image_pixels: int = Field(4096 * 4096, ge=32 * 32, description="decoded width * height cap")
    max_batch_instances: int = Field(64, ge=1, description="images per /predict request")
    decode_budget_bytes: int = Field(
        256 * 1024 * 1024, ge=16 * 1024 * 1024, description="decoded pixel memory in flight across requests"
    )
    decode_wait_s: float = Field(1.0, ge=0, description="how long a large image waits for decode memory before 503")

    max_steps: int = Field(1024, ge=2, description="cap on integrated-gradients steps")
    internal_batch_size: int = Field(64, ge=1, description="gradient rows evaluated at once")
    max_alphas: int = Field(32, ge=1, description="cap on interior-gradients alphas")
    max_samples: int = Field(64, ge=1, description="cap on SmoothGrad samples")
    max_rows: int = Field(
        16384, ge=2, description="cap on the model rows one explanation evaluates (samples x steps, occlusion patches)"
    )

    batch_max_rows: int = Field(FORWARD_BATCHING.max_batch_rows, ge=1, description="images per compiled forward call")
    gradient_batch_max_rows: int = Field(
        GRADIENT_BATCHING.max_batch_rows, ge=1, description="gradient rows per compiled call"
    )
    batch_max_delay_ms: float = Field(0.0, ge=0, le=1000, description="wait for a batch to fill (0: none)")
    queue_size: int = Field(
        FORWARD_BATCHING.max_queue, ge=1, description="waiting calls per batcher before 503 overloaded"
    )
    gradient_core_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of the cores explanations may take while predictions wait (1: no limit)",
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="a request's model work past this many seconds is dropped with 504"
    )

    reload_interval_s: float = Field(
        0.0, ge=0, description="check the store for a new default version this often (0: only POST /admin/reload)"
    )
    preload: str = Field(
        "", description="models to load at start besides the default, comma-separated names (others load on first use)"
    )
    max_loaded_models: int = Field(
        0,
        ge=0,
        description="models kept in memory, the default included; past it the least recently used is "
        "unloaded (0: no limit)",
    )
    model_memory_mb: float = Field(
        0.0,
        ge=0,
        description="megabytes of weights kept in memory across models; past it the least recently "
        "used is unloaded (0: no budget)",
    )

    api_key: SecretStr | None = Field(None, description="when set, every route but /health/* needs it")

    grpc_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="the Open Inference Protocol's gRPC port; `mindscope serve` makes it its HTTP port + 1 "
        "when unset; 0: off",
    )
    grpc_host: str = Field("127.0.0.1", description="the address gRPC listens on (`mindscope serve --host` sets it)")

    jobs_dir: Path = Field(
        Path("jobs"),
        description="jobs' state (SQLite) and results, example indexes, concepts; servers that share it must share "
        "the model store too (one of them runs every job)",
    )
    data_root: Path | None = Field(
        None, description="jobs may read folders under this one (and nothing outside it); unset: none"
    )
    jobs_max_bytes: int = Field(
        10 * 1024**3, ge=1, description="disk the jobs' inputs and results may take; new jobs get 507 past it"
    )
    jobs_retention_s: float = Field(
        7 * 24 * 3600.0, gt=0, description="a finished job's results are deleted this long after it ended"
    )
    jobs_max_files: int = Field(100_000, ge=1, description="images in one job (an archive's files, a folder's)")
    jobs_max_archive_bytes: int = Field(
        2 * 1024**3, ge=1024, description="uncompressed bytes one job's archive may unpack to"
    )
    jobs_max_upload_bytes: int = Field(512 * 1024**2, ge=1024, description="body size of POST /jobs (an archive)")
    jobs_workers: int = Field(2, ge=1, le=64, description="a job's images explained at once (their rows share batches)")
    ray_address: str | None = Field(
        None, description="run jobs on this Ray cluster (ray://host:10001, auto, local); unset: in this process"
    )
    jobs_ray_actors: int = Field(2, ge=1, description="Ray actors (each holding the model) one job uses")
    jobs_ray_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves for each of those actors")

    payload_log_url: str | None = Field(
        None, description="send each inference request and response here as a CloudEvent (KServe's logger)"
    )
    payload_log_mode: Literal["all", "request", "response"] = Field("all", description="what is sent")
    payload_log_sample: float = Field(1.0, ge=0, le=1, description="the fraction of requests sent")
    payload_log_bodies: Literal["bytes", "digest"] = Field(
        "bytes", description="bodies as they travelled, or their SHA-256 and size"
    )
    payload_log_queue: int = Field(
        1000, ge=1, description="events waiting to be sent; past it new ones are dropped (and counted)"
    )
    payload_log_timeout_s: float = Field(5.0, gt=0, description="a send that takes longer fails (and is counted)")

    def payload_log_settings(self) -> PayloadLogSettings | None:
        from mindscope.api.payload_log import PayloadLogSettings

        if self.payload_log_url is None:
            return None
        return PayloadLogSettings(
            self.payload_log_url,
            self.payload_log_mode,
            self.payload_log_sample,
            self.payload_log_bodies,
            self.payload_log_queue,
            self.payload_log_timeout_s,
        )

    def job_settings(self) -> JobSettings:
        return JobSettings(
            self.jobs_dir,
            self.data_root,
            self.jobs_max_bytes,
            self.jobs_retention_s,
            self.jobs_max_files,
            self.jobs_max_archive_bytes,
            self.max_image_pixels,
            self.jobs_workers,
            Caps.of(self),
            self.ray_address,
            self.jobs_ray_actors,
            self.jobs_ray_cpus,
        )

    def residency(self) -> Residency:
        from mindscope.engine.registry import Residency

        return Residency(self.max_loaded_models, int(self.model_memory_mb * 1e6))

    def preload_names(self) -> list[str]:
        return [name.strip() for name in self.preload.split(",") if name.strip()]

    def forward_batching(self) -> BatchingConfig:
        return BatchingConfig(self.batch_max_rows, self.batch_max_delay_ms / 1000, self.queue_size)

    def gradient_batching(self) -> BatchingConfig:
        return BatchingConfig(
            self.gradient_batch_max_rows,
            self.batch_max_delay_ms / 1000,
            self.queue_size,
            core_share=self.gradient_core_share,
            # A lane told to wait for batches to fill does not run a lone caller at once.
            inline_when_idle=GRADIENT_BATCHING.inline_when_idle and self.batch_max_delay_ms == 0,
        )
