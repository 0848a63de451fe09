"""A bounded soak: two minutes of steady mixed load, no errors, no memory growth after warm-up."""

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from ..servers import start_server

DURATION_S = 120
CONCURRENCY = 8


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def drive(base: str, body: bytes, seconds: float) -> list[int]:
    statuses: list[int] = []
    deadline = time.monotonic() + seconds
    paths = ["/predict", "/predict", "/predict", "/activations/conv3", "/explain/integrated-gradients?steps=32"]
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:

        async def worker(offset: int) -> None:
            i = offset
            while time.monotonic() < deadline:
                response = await client.post(
                    paths[i % len(paths)], content=body, headers={"Content-Type": "image/jpeg"}
                )
                statuses.append(response.status_code)
                i += 1

        await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))
    return statuses


@pytest.mark.slow
def test_soak_has_no_errors_and_no_memory_growth(tmp_path, committed_store, sample_jpeg):
    server = start_server(tmp_path, committed_store.root)
    try:
        server.wait_ready()
        warm = asyncio.run(drive(server.base_url, sample_jpeg, 20))
        before = rss_mib(server.process.pid)
        statuses = asyncio.run(drive(server.base_url, sample_jpeg, DURATION_S))
        after = rss_mib(server.process.pid)
    finally:
        server.stop()
    assert set(warm) == {200} and set(statuses) == {200}
    assert len(statuses) > 100
    assert after - before < max(30.0, 0.05 * before), (before, after)
