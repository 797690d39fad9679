"""The baseline of the gateway benchmark: the simplest grpc.aio proxy that balances per request.

    python bench/gateway/naive_proxy.py LISTEN BACKEND [BACKEND ...]

Every call is forwarded as bytes to the next backend in turn: no health checks, no metrics, no
retries. What grpcio's machinery alone costs per proxied call, measured beside the gateway.
"""

from __future__ import annotations

import asyncio
import itertools
import sys

import grpc


async def serve(listen: str, backends: list[str]) -> None:
    channels = [grpc.aio.insecure_channel(address) for address in backends]
    turn = itertools.cycle(channels)
    calls: dict[tuple[grpc.aio.Channel, str], object] = {}

    def call(channel: grpc.aio.Channel, method: str):
        found = calls.get((channel, method))
        if found is None:
            found = calls[(channel, method)] = channel.unary_unary(method)
        return found

    class Forward(grpc.GenericRpcHandler):
        def service(self, details):
            method = details.method

            async def unary(request: bytes, context) -> bytes:
                return await call(next(turn), method)(request, timeout=context.time_remaining())

            return grpc.unary_unary_rpc_method_handler(unary)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Forward(),))
    server.add_insecure_port(listen)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2:]))
