"""A lean closed-loop HTTP/1.1 load generator: `concurrency` keep-alive connections, each sending the
next request as soon as its previous answer is in, until `total` requests are done.

It writes pre-built request bytes and reads just the status line, headers and Content-Length body,
so a request costs the generator tens of microseconds of CPU rather than the millisecond or so of a
full client; on a 2-core machine that shares its cores with the server, that CPU is the server's.
Run it in its own process (`python bench/loadgen.py URL BODY_FILE --concurrency N --total M`): it
prints one JSON line with requests/s, every latency in seconds and the CPU seconds it used itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from urllib.parse import urlsplit


def build_request(host: str, path: str, body: bytes, content_type: str, headers: tuple[str, ...] = ()) -> bytes:
    extra = "".join(f"{header}\r\n" for header in headers)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode("ascii") + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """The status code of one response; its body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = next((int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")), 0)
    await reader.readexactly(length)
    return status


async def run(
    url: str, body: bytes, content_type: str, concurrency: int, total: int, headers: tuple[str, ...] = ()
) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = build_request(f"{host}:{port}", target, body, content_type, headers)
    remaining = iter(range(total))
    latencies: list[float] = []
    failures: dict[int, int] = {}

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for _ in remaining:
                start = time.perf_counter()
                writer.write(request)
                status = await read_response(reader)
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    failures[status] = failures.get(status, 0) + 1
        finally:
            writer.close()

    start, cpu_start = time.perf_counter(), time.process_time()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {
        "requests_per_s": total / elapsed,
        "latencies_s": latencies,
        "failures": failures,
        "cpu_s": time.process_time() - cpu_start,  # this generator's own share of the machine
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("body", type=Path, help="file sent as the request body")
    parser.add_argument("--content-type", default="image/jpeg")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--total", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20, help="requests sent first and not counted")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    args = parser.parse_args()
    body, headers = args.body.read_bytes(), tuple(args.header)
    asyncio.run(run(args.url, body, args.content_type, args.concurrency, args.warmup, headers))
    print(json.dumps(asyncio.run(run(args.url, body, args.content_type, args.concurrency, args.total, headers))))


if __name__ == "__main__":
    main()
