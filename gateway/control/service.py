"""The KServe v2 `GRPCInferenceService` as the gateway serves it: raw-bytes handlers per method.

Inference (`ModelInfer`, `ModelStreamInfer`) goes through the front door, not here. `ServerLive` and `ServerReady` are
answered here (ready while at least one pod is; gateway/control/readiness.py). The fleet answers as one server:
`ModelStatistics` is the sum over the pods (gateway/control/statistics.py), `RepositoryIndex` their merged index
(gateway/control/repository_index.py), and `ServerMetadata`, `ModelMetadata` and `ModelConfig` the answer of
the first pod by address that has the model READY, the others asked too so that a pod answering
differently is logged. Admin methods are refused unless enabled; then a model load or unload is
rolled out, one pod first (gateway/control/rollout.py), and the other admin calls go to every pod.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from gateway import wire
from gateway.control import repository_index, rollout, statistics
from gateway.control.readiness import Readiness
from gateway.control.upstream import UpstreamError, upstream_metadata
from gateway.fleet.backends import Backend, BackendPool
from gateway.routing.lifecycle import says_model_missing

log = logging.getLogger("tritonfleet.gateway")

SERVICE_NAME = "inference.GRPCInferenceService"
# ModelReady is answered on the data plane (gateway/routing/unary.py).
PER_MODEL_METHODS = ("ModelMetadata", "ModelConfig", "ModelStatistics")
_ROLLED_OUT = ("RepositoryModelLoad", "RepositoryModelUnload")
# How long a pod has to answer a question the gateway asks every pod (index, statistics, metadata).
ASK_TIMEOUT_S = 5.0
# The answers compared between pods, by method: a pod whose answer differs is logged.
_ANSWERS = {
    "ServerMetadata": service_pb2.ServerMetadataResponse,
    "ModelMetadata": service_pb2.ModelMetadataResponse,
    "ModelConfig": service_pb2.ModelConfigResponse,
}
ADMIN_METHODS = (
    "RepositoryModelLoad", "RepositoryModelUnload",
    "SystemSharedMemoryStatus", "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
    "TraceSetting", "LogSettings",
)
_READY = service_pb2.ServerReadyResponse(ready=True).SerializeToString()
_NOT_READY = service_pb2.ServerReadyResponse(ready=False).SerializeToString()
_LIVE = service_pb2.ServerLiveResponse(live=True).SerializeToString()


class InferenceService:
    def __init__(self, pool: BackendPool, catalog, allow_admin: bool, on_model_change,
                 admin_metadata: tuple[tuple[str, str], ...] = ()):
        """`admin_metadata`: what the pods' restricted protocols ask of an admin call or repository
        index (`triton_admin_header`); a client's own header of that name never reaches a pod."""
        self.pool = pool
        self.admin_metadata = admin_metadata
        self._admin_keys = frozenset(key for key, _ in admin_metadata)
        self.catalog = catalog
        self.allow_admin = allow_admin
        self.on_model_change = on_model_change
        self.readiness = Readiness(pool)
        self.rollouts = asyncio.Lock()  # one model load or unload at a time

    def generic_handler(self) -> grpc.GenericRpcHandler:
        handlers = {
            "ServerLive": self._unary(self.server_live),
            "ServerReady": self._unary(self.server_ready),
            "ServerMetadata": self._unary(self.server_metadata),
            "RepositoryIndex": self._unary(self.repository_index),
        }
        for method in PER_MODEL_METHODS:
            handlers[method] = self._unary(self._per_model(method))
        for method in ADMIN_METHODS:
            handlers[method] = self._unary(self._admin(method))
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    @staticmethod
    def _unary(function):
        return grpc.unary_unary_rpc_method_handler(function)

    @property
    def draining(self) -> bool:
        return self.readiness.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.readiness.draining = value

    # ---- answered here --------------------------------------------------------------------------

    def _metadata(self, context, privileged: bool) -> tuple[tuple[str, str], ...]:
        metadata = tuple((k, v) for k, v in upstream_metadata(context) if k not in self._admin_keys)
        return metadata + self.admin_metadata if privileged else metadata

    async def server_live(self, request: bytes, context) -> bytes:
        return _LIVE

    async def server_ready(self, request: bytes, context) -> bytes:
        return _READY if self.readiness.ready() else _NOT_READY

    # ---- per-model questions and merged answers -------------------------------------------------

    def _per_model(self, method: str):
        async def handle(request: bytes, context) -> bytes:
            try:
                model = wire.parse_model_name(request)
            except wire.MalformedMessage as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {method}Request: {exc}")
            try:
                if method == "ModelStatistics":
                    return await self._statistics(request, context)
                # Where no pod has the model READY, the pods give Triton's own answer (not found, not ready).
                pods = self.pool.candidates(model) if model else []
                return await self._consistent(method, model, request, context, pods or self._live_backends())
            except UpstreamError as exc:
                await _abort(context, exc)
        return handle

    async def server_metadata(self, request: bytes, context) -> bytes:
        try:
            return await self._consistent("ServerMetadata", "", request, context, self._live_backends())
        except UpstreamError as exc:
            await _abort(context, exc)

    async def _ask_all(self, method: str, request: bytes, context, backends: list[Backend]) -> list:
        """Each pod's reply or gRPC error, in the order of `backends`, within the client's deadline and
        at most ASK_TIMEOUT_S: a pod that hangs makes the call fail, not wait forever."""
        remaining = context.time_remaining()
        timeout = ASK_TIMEOUT_S if remaining is None else min(remaining, ASK_TIMEOUT_S)
        metadata = self._metadata(context, privileged=method == "RepositoryIndex")

        async def ask(backend: Backend):
            try:
                return await backend.unary(method)(request, metadata=metadata, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                return exc
        return await asyncio.gather(*(ask(b) for b in backends))

    async def _consistent(self, method: str, model: str, request: bytes, context, backends: list[Backend]) -> bytes:
        """The answer of the first of `backends` by address that answers OK; the others are asked too,
        and any that answers differently is logged. None answered OK: the first one's error."""
        if not backends:
            raise UpstreamError(grpc.StatusCode.UNAVAILABLE, "no live backend")
        ranked = sorted(backends, key=lambda b: b.address)
        replies = await self._ask_all(method, request, context, ranked)
        answered = [(b, r) for b, r in zip(ranked, replies) if not isinstance(r, grpc.aio.AioRpcError)]
        if not answered:
            error = next((r for r in replies if r.code() != grpc.StatusCode.UNAVAILABLE), replies[0])
            raise UpstreamError(error.code(), error.details() or "")
        chosen, reply = answered[0]
        parse = _ANSWERS[method].FromString
        differing = [b.address for b, other in answered[1:] if other != reply and parse(other) != parse(reply)]
        if differing:
            log.warning("pods answer differently", extra={
                "method": method, "model": model, "answered_from": chosen.address, "differing": differing})
        return reply

    async def _statistics(self, request: bytes, context) -> bytes:
        """The sum of every live pod's statistics; a pod that does not have the model adds nothing, a pod
        that does not answer fails the call (a partial sum would make before/after snapshots disagree)."""
        backends = sorted(self._live_backends(), key=lambda b: b.address)
        if not backends:
            raise UpstreamError(grpc.StatusCode.UNAVAILABLE, "no live backend")
        replies = await self._ask_all("ModelStatistics", request, context, backends)
        answered, missing = [], []
        for backend, reply in zip(backends, replies):
            if not isinstance(reply, grpc.aio.AioRpcError):
                answered.append(service_pb2.ModelStatisticsResponse.FromString(reply))
            elif _lacks_model(reply):
                missing.append(reply)
            else:
                raise UpstreamError(grpc.StatusCode.UNAVAILABLE,
                                    f"ModelStatistics failed on backend {backend.address} ({reply.code().name}: "
                                    f"{reply.details()}); a sum without it would be wrong")
        if not answered:
            raise UpstreamError(missing[0].code(), missing[0].details() or "")
        return statistics.merge(answered).SerializeToString()

    def _live_backends(self) -> list[Backend]:
        return [b for b in self.pool.backends.values() if b.admitted]

    async def repository_index(self, request: bytes, context) -> bytes:
        """Every model any live pod knows, once per version (gateway/control/repository_index.py); a live pod
        that does not answer fails the call instead of leaving its models out."""
        try:
            query = service_pb2.RepositoryIndexRequest.FromString(request)
        except DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed RepositoryIndexRequest: {exc}")
        backends = sorted(self._live_backends(), key=lambda b: b.address)
        if not backends:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no live backend")
        replies = await self._ask_all("RepositoryIndex", request, context, backends)
        indexes = {}
        for backend, reply in zip(backends, replies):
            if isinstance(reply, grpc.aio.AioRpcError):
                await context.abort(grpc.StatusCode.UNAVAILABLE,
                                    f"RepositoryIndex failed on backend {backend.address} ({reply.code().name}: "
                                    f"{reply.details()}); the index would miss its models")
            indexes[backend.address] = service_pb2.RepositoryIndexResponse.FromString(reply)
        models = repository_index.merge(indexes)
        if query.ready:
            models = [m for m in models if m.state == "READY"]
        return service_pb2.RepositoryIndexResponse(models=models).SerializeToString()

    # ---- admin ----------------------------------------------------------------------------------

    def _admin(self, method: str):
        async def handle(request: bytes, context) -> bytes:
            if not self.allow_admin:
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{method} is disabled on this gateway (set allow_admin to enable it)",
                )
            backends = list(self.pool.backends.values())
            if not backends:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "no backend to apply it to")
            if method in _ROLLED_OUT:
                return await self._roll_out(method, request, context, backends)
            # Shared memory, trace and log settings: applied to every pod at once.
            metadata = self._metadata(context, privileged=True)
            replies = await asyncio.gather(
                *(b.unary(method)(request, metadata=metadata, timeout=context.time_remaining())
                  for b in backends),
                return_exceptions=True,
            )
            failures = [(b, r) for b, r in zip(backends, replies) if isinstance(r, BaseException)]
            if failures:
                backend, exc = failures[0]
                code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else grpc.StatusCode.INTERNAL
                details = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                await context.abort(code, f"{method} failed on {len(failures)} of {len(backends)} backends; "
                                          f"{backend.address}: {details}")
            return replies[0]
        return handle

    async def _roll_out(self, method: str, request: bytes, context, backends: list[Backend]) -> bytes:
        try:
            model = wire.parse_model_name(request, field_number=2)  # 1 is the repository name
        except wire.MalformedMessage as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {method}Request: {exc}")
        metadata = self._metadata(context, privileged=True)

        def send(backend: Backend):
            return backend.unary(method)(request, metadata=metadata, timeout=context.time_remaining())

        async with self.rollouts:
            try:
                reply, done = await rollout.roll_out(method, model, backends, send)
            except rollout.RolloutFailed as exc:
                await self.on_model_change()
                await context.abort(exc.code, exc.message)
            await self.on_model_change()
        context.set_trailing_metadata(((rollout.TRAILER, done.summary()),))
        return reply


def _lacks_model(error: grpc.aio.AioRpcError) -> bool:
    """Whether a pod's error means it has no such model or version (so it adds nothing to a sum)."""
    details = error.details() or ""
    return says_model_missing(error.code(), details) or (
        error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        and "requested model" in details)


async def _abort(context, exc: UpstreamError):
    await context.abort(exc.code, exc.details, exc.trailing_metadata or ())
