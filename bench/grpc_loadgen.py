"""The gRPC counterpart of bench/loadgen.py: `concurrency` clients, each on its own connection,
each sending the next ModelInfer as soon as its previous answer is in, until `total` are done.

The request is serialized once and sent as bytes (identity serializers), and answers are not
parsed, so a call costs this generator little of the machine's CPU. Run it in its own process:
`python bench/grpc_loadgen.py HOST:PORT REQUEST_FILE --concurrency N --total M` prints one JSON line
like loadgen's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import grpc

METHOD = "/inference.GRPCInferenceService/ModelInfer"


async def run(
    address: str, request: bytes, concurrency: int, total: int, connections: int | None = None
) -> dict[str, object]:
    remaining = iter(range(total))
    latencies: list[float] = []
    failures: dict[str, int] = {}
    # `connections` channels (default: one per client), each its own HTTP/2 connection (no shared
    # subchannel pool); clients take turns on them, as the calls of one app share its channel.
    count = connections or concurrency
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(count)]

    async def client(channel: grpc.aio.Channel) -> None:
        call = channel.unary_unary(METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        for _ in remaining:
            start = time.perf_counter()
            try:
                await call(request)
            except grpc.aio.AioRpcError as exc:
                failures[exc.code().name] = failures.get(exc.code().name, 0) + 1
            latencies.append(time.perf_counter() - start)

    for channel in channels:
        await channel.channel_ready()
    start, cpu_start = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(channels[i % count]) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    for channel in channels:
        await channel.close()
    return {
        "requests_per_s": total / elapsed,
        "latencies_s": latencies,
        "failures": failures,
        "cpu_s": time.process_time() - cpu_start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("request", type=Path, help="a serialized ModelInferRequest")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--total", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--connections", type=int, help="channels the clients share (default: one each)")
    args = parser.parse_args()
    request = args.request.read_bytes()
    asyncio.run(run(args.address, request, args.concurrency, args.warmup, args.connections))
    print(json.dumps(asyncio.run(run(args.address, request, args.concurrency, args.total, args.connections))))


if __name__ == "__main__":
    main()
