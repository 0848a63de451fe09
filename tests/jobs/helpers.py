"""Waiting for a job to end (the jobs tests' server and client are fixtures: tests/jobs/conftest.py)."""

from __future__ import annotations

import httpx

from tests.servers import wait_until


def finished(http: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    wait_until(
        lambda: http.get(f"/jobs/{job_id}").json()["state"] in ("succeeded", "failed", "cancelled"), timeout=timeout
    )
    return http.get(f"/jobs/{job_id}").json()
