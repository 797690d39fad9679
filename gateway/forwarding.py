"""Requests the gateway's gRPC service (grpcio) forwards to a pod, through the same `Lifecycle` as the
frames: what the control service still sends to one pod with the model (ModelStatistics).

grpcio does not say whether an UNAVAILABLE came from the pod or from a lost connection, so here a
failed call's pod is asked (`lifecycle.unreachable`) before it is ejected.
"""

from __future__ import annotations

import asyncio

import grpc

from gateway.backends import Backend, NoBackendError
from gateway.routing.lifecycle import Lifecycle, Router, says_model_missing, unreachable

# Metadata that belongs to one HTTP/2 hop and is set again by the gateway's own channel.
_HOP_HEADERS = frozenset({"user-agent", "te", "content-type", "host", "connection"})


class UpstreamError(Exception):
    """A request that ended with a non-OK status, from a pod or from the gateway itself."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata=None):
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def upstream_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    """The client's metadata minus per-hop headers, to send on to the pod."""
    return tuple(
        (key, value) for key, value in context.invocation_metadata() or ()
        if key not in _HOP_HEADERS and not key.startswith((":", "grpc-"))
    )


class Forwarder:
    def __init__(self, router: Router):
        self.router = router
        self.pool = router.pool
        self.budget = router.budget

    async def unary(self, method: str, model: str, data: bytes, metadata, timeout: float | None,
                    retryable: bool = True, metric_method: str | None = None,
                    pinned: Backend | None = None) -> bytes:
        """Send `data` to a pod with `model` READY and return the reply bytes, or raise UpstreamError."""
        lifecycle = Lifecycle(self.router, model, metric_method or method, timeout, pinned, retryable, len(data))
        while True:
            try:
                backend = await lifecycle.pick()
            except NoBackendError as exc:
                lifecycle.ended(exc.code)
                raise UpstreamError(exc.code, str(exc)) from None
            lifecycle.sent(backend)
            try:
                reply = await backend.unary(method)(data, metadata=metadata, timeout=lifecycle.time_left())
            except grpc.aio.AioRpcError as exc:
                code, details = exc.code(), exc.details() or ""
                missing = says_model_missing(code, details)
                lost = not missing and await unreachable(backend, code, details)
                if missing or lost:
                    if lifecycle.failed(details or code.name, retryable=True, model_missing=missing, unreachable=lost):
                        continue
                lifecycle.ended(code)
                raise UpstreamError(code, details, exc.trailing_metadata()) from None
            except asyncio.CancelledError:
                lifecycle.cancelled()
                raise
            lifecycle.succeeded(len(reply))
            return reply
