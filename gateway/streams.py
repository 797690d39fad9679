"""`ModelStreamInfer` through the gateway: one client stream, many pods.

Each message of a client stream is routed on its own:
- a stateless model's request is balanced like a unary request (it goes to its pod as `ModelInfer`),
  and its response comes back on the client's stream, with its request id, when it is ready — so a
  long-lived camera stream spreads over the fleet instead of pinning one pod;
- a request in a sequence (non-zero `sequence_id`) goes to the pod its sequence started on, over one
  upstream stream per pod, which keeps the sequence's order; a lost pod ends its sequences with a clear
  error message and later messages of those sequences get the same until the client starts them again;
- a decoupled model's request (0..n responses) is balanced per message too, over the upstream streams,
  since only a stream can carry several responses.
Per-message errors are sent as `error_message` on the stream, as Triton does, and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from gateway import wire
from gateway.backends import Backend, BackendPool, NoBackendError
from gateway.forwarding import Forwarder, UpstreamError, unreachable, upstream_metadata

log = logging.getLogger("tritonfleet.gateway")

METHOD = "ModelStreamInfer"
# Messages of one stream being forwarded at once; a client that sends faster waits for room.
MAX_OUTSTANDING = 256
_END = object()


class _Upstream:
    """One stream from this client stream to one pod, for sequences and decoupled models."""

    def __init__(self, backend: Backend, call):
        self.backend = backend
        self.call = call
        self.counted = 0  # messages counted as in flight on the pod, released as their responses come
        self.reader: asyncio.Task | None = None


class StreamSession:
    def __init__(self, pool: BackendPool, forwarder: Forwarder, catalog, context, draining):
        self.pool = pool
        self.forwarder = forwarder
        self.catalog = catalog
        self.context = context
        self.metadata = upstream_metadata(context)
        self.out: asyncio.Queue = asyncio.Queue()
        self.tasks: set[asyncio.Task] = set()
        self.room = asyncio.Semaphore(MAX_OUTSTANDING)
        self.upstreams: dict[Backend, _Upstream] = {}
        self.sequences: dict[tuple[str, int | str], Backend] = {}
        self.lost: dict[tuple[str, int | str], str] = {}
        self.reader: asyncio.Task | None = None
        self.drained = False

    async def run(self, request_iterator):
        """Async generator of response bytes for the client's stream."""
        self.reader = asyncio.create_task(self._read(request_iterator))
        try:
            while True:
                item = await self.out.get()
                if item is _END:
                    break
                yield item
            if self.drained:
                self.context.set_code(grpc.StatusCode.UNAVAILABLE)
                self.context.set_details("the gateway is shutting down; reconnect to continue the stream")
        finally:
            self._cancel_everything()

    def drain(self) -> None:
        """Stop reading new messages; what is in flight finishes, then the stream ends (UNAVAILABLE)."""
        self.drained = True
        if self.reader is not None:
            self.reader.cancel()

    # ---- reading the client's messages ------------------------------------------------------------

    async def _read(self, request_iterator) -> None:
        try:
            async for data in request_iterator:
                await self._dispatch(data)
        except asyncio.CancelledError:
            if not self.drained:
                raise
        await self._finish()
        self.out.put_nowait(_END)

    async def _dispatch(self, data: bytes) -> None:
        try:
            route = wire.parse_infer_request(data)
        except wire.MalformedMessage as exc:
            self.pool.metrics.count("", "none", METHOD, "INVALID_ARGUMENT")
            self.out.put_nowait(wire.stream_error(f"INVALID_ARGUMENT: malformed ModelInferRequest: {exc}"))
            return
        if route.in_sequence or self.catalog.get(route.model).decoupled:
            await self._send_upstream(route, data)
            return
        await self.room.acquire()
        task = asyncio.create_task(self._unary(route, data))
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        self.room.release()

    async def _unary(self, route: wire.RequestRoute, data: bytes) -> None:
        try:
            reply = await self.forwarder.unary("ModelInfer", route.model, data, self.metadata,
                                               self.context.time_remaining(), metric_method=METHOD)
            self.out.put_nowait(wire.stream_response(reply))
        except UpstreamError as exc:
            self.out.put_nowait(wire.stream_error(_describe(route, exc.code, exc.details)))

    # ---- sequences and decoupled models: upstream streams ------------------------------------------

    async def _send_upstream(self, route: wire.RequestRoute, data: bytes) -> None:
        key = (route.model, route.sequence_id)
        try:
            backend = await self._backend_for(route, key)
        except (NoBackendError, UpstreamError) as exc:
            self.pool.metrics.count(route.model, "none", METHOD, exc.code.name)
            self.out.put_nowait(wire.stream_error(_describe(route, exc.code, str(exc))))
            return
        upstream = self.upstreams.get(backend) or self._open(backend)
        counted = not self.catalog.get(route.model).decoupled
        if counted:
            upstream.counted += 1
        else:
            self.pool.release(backend, None)  # a decoupled request's end is not visible; count only the send
        self.pool.metrics.bytes_in.inc(len(data))
        try:
            await upstream.call.write(data)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the upstream's reader reports the lost pod to every sequence on it
        if route.in_sequence and route.sequence_end:
            self.sequences.pop(key, None)

    async def _backend_for(self, route: wire.RequestRoute, key) -> Backend:
        if not route.in_sequence:
            return await self.pool.acquire(route.model)
        if route.sequence_start:
            self.lost.pop(key, None)
            backend = self.sequences[key] = await self.pool.acquire(route.model)
            return backend
        backend = self.sequences.get(key)
        if backend is None:
            reason = self.lost.get(key, "it was not started on this stream (no sequence_start)")
            raise UpstreamError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"sequence {route.sequence_id} of model '{route.model}' cannot continue: {reason}")
        self.pool.hold(backend)
        return backend

    def _open(self, backend: Backend) -> _Upstream:
        call = backend.stream(METHOD)(metadata=self.metadata, timeout=self.context.time_remaining())
        upstream = self.upstreams[backend] = _Upstream(backend, call)
        upstream.reader = asyncio.create_task(self._relay(upstream))
        return upstream

    async def _relay(self, upstream: _Upstream) -> None:
        """Pass one pod's responses to the client; when the pod is lost, end its sequences clearly."""
        lost = None
        try:
            async for response in upstream.call:
                model = wire.stream_response_model(response)
                if upstream.counted and not self.catalog.get(model).decoupled:
                    upstream.counted -= 1
                    self.pool.release(upstream.backend, None)
                self.pool.metrics.bytes_out.inc(len(response))
                self.pool.metrics.count(model, upstream.backend.address, METHOD, "OK")
                self.out.put_nowait(response)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self._lose(upstream, exc)
                lost = exc
        finally:
            for _ in range(upstream.counted):
                self.pool.release(upstream.backend, None)
            upstream.counted = 0
            self.upstreams.pop(upstream.backend, None)
        # Asked after the stream is let go, so that no message is sent on it meanwhile; a stream the pod
        # itself ended (UNAVAILABLE included) leaves the pod in rotation.
        if lost is not None and await unreachable(upstream.backend, lost):
            self.pool.eject(upstream.backend, lost.details() or "stream lost")

    def _lose(self, upstream: _Upstream, exc: grpc.aio.AioRpcError) -> None:
        backend = upstream.backend
        reason = f"its pod {backend.address} was lost ({exc.code().name}: {exc.details()}); start it again"
        log.warning("upstream stream lost", extra={"backend": backend.address, "code": exc.code().name})
        for key in [k for k, b in self.sequences.items() if b is backend]:
            del self.sequences[key]
            self.lost[key] = reason
            self.pool.metrics.count(key[0], backend.address, METHOD, exc.code().name)
            self.out.put_nowait(wire.stream_error(
                f"UNAVAILABLE: sequence {key[1]} of model '{key[0]}' ended: {reason}"))
        if upstream.counted:
            self.out.put_nowait(wire.stream_error(
                f"UNAVAILABLE: {upstream.counted} request(s) in flight on pod {backend.address} were lost"))

    # ---- ending ------------------------------------------------------------------------------------

    async def _finish(self) -> None:
        """The client is done sending (or the gateway drains): let every outstanding message finish."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
        for upstream in list(self.upstreams.values()):
            try:
                await upstream.call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass
        readers = [u.reader for u in self.upstreams.values() if u.reader is not None]
        await asyncio.gather(*readers, return_exceptions=True)

    def _cancel_everything(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        for task in list(self.tasks):
            task.cancel()
        for upstream in list(self.upstreams.values()):
            upstream.call.cancel()


def _describe(route: wire.RequestRoute, code: grpc.StatusCode, details: str) -> str:
    who = f"request '{route.request_id}'" if route.request_id else "request"
    return f"{code.name}: {who} for model '{route.model}': {details}"
