"""The KServe v2 `GRPCInferenceService` as the gateway serves it: raw-bytes handlers per method.

Inference (`ModelInfer`, `ModelStreamInfer`) goes through the front door, not here. `ServerLive` and `ServerReady` are
answered here (ready while at least one pod is). Per-model questions go to a pod with the model READY;
`RepositoryIndex` is merged over the pods. Admin methods are refused unless enabled, and then a model
load or unload goes to every pod, so the fleet stays uniform.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from tritonclient.grpc import service_pb2

from gateway import wire
from gateway.backends import Backend, BackendPool
from gateway.forwarding import Forwarder, UpstreamError, upstream_metadata

log = logging.getLogger("tritonfleet.gateway")

SERVICE_NAME = "inference.GRPCInferenceService"
_PER_MODEL = ("ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics")
_ADMIN = (
    "RepositoryModelLoad", "RepositoryModelUnload",
    "SystemSharedMemoryStatus", "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
    "TraceSetting", "LogSettings",
)
_READY = service_pb2.ServerReadyResponse(ready=True).SerializeToString()
_NOT_READY = service_pb2.ServerReadyResponse(ready=False).SerializeToString()
_LIVE = service_pb2.ServerLiveResponse(live=True).SerializeToString()
_MODEL_NOT_READY = service_pb2.ModelReadyResponse(ready=False).SerializeToString()


class InferenceService:
    def __init__(self, pool: BackendPool, forwarder: Forwarder, catalog, allow_admin: bool, on_model_change):
        self.pool = pool
        self.forwarder = forwarder
        self.catalog = catalog
        self.allow_admin = allow_admin
        self.on_model_change = on_model_change
        self.draining = False

    def generic_handler(self) -> grpc.GenericRpcHandler:
        handlers = {
            "ServerLive": self._unary(self.server_live),
            "ServerReady": self._unary(self.server_ready),
            "ServerMetadata": self._unary(self.server_metadata),
            "RepositoryIndex": self._unary(self.repository_index),
        }
        for method in _PER_MODEL:
            handlers[method] = self._unary(self._per_model(method))
        for method in _ADMIN:
            handlers[method] = self._unary(self._admin(method))
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    @staticmethod
    def _unary(function):
        return grpc.unary_unary_rpc_method_handler(function)

    # ---- answered here --------------------------------------------------------------------------

    async def server_live(self, request: bytes, context) -> bytes:
        return _LIVE

    async def server_ready(self, request: bytes, context) -> bytes:
        ready = not self.draining and any(b.admitted for b in self.pool.backends.values())
        return _READY if ready else _NOT_READY

    # ---- per-model questions and merged answers -------------------------------------------------

    def _per_model(self, method: str):
        async def handle(request: bytes, context) -> bytes:
            try:
                model = wire.parse_model_name(request)
            except wire.MalformedMessage as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {method}Request: {exc}")
            if model and not self.pool.candidates(model):
                if method == "ModelReady":
                    return _MODEL_NOT_READY
                # Let a live pod give Triton's own answer (not found, not ready) for the model.
                model = ""
            try:
                if model:
                    return await self.forwarder.unary(method, model, request, upstream_metadata(context),
                                                      context.time_remaining())
                return await self._any_pod(method, request, context)
            except UpstreamError as exc:
                await _abort(context, exc)
        return handle

    async def server_metadata(self, request: bytes, context) -> bytes:
        try:
            return await self._any_pod("ServerMetadata", request, context)
        except UpstreamError as exc:
            await _abort(context, exc)

    async def _any_pod(self, method: str, request: bytes, context) -> bytes:
        for backend in self._live_backends():
            try:
                return await backend.unary(method)(request, metadata=upstream_metadata(context),
                                                   timeout=context.time_remaining())
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise UpstreamError(exc.code(), exc.details() or "") from None
        raise UpstreamError(grpc.StatusCode.UNAVAILABLE, "no live backend")

    def _live_backends(self) -> list[Backend]:
        return [b for b in self.pool.backends.values() if b.admitted]

    async def repository_index(self, request: bytes, context) -> bytes:
        """Every model any live pod knows, once; READY when it is READY on at least one pod."""
        try:
            wire.parse_model_name(request)
        except wire.MalformedMessage as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed RepositoryIndexRequest: {exc}")
        query = service_pb2.RepositoryIndexRequest.FromString(request)
        replies = await asyncio.gather(
            *(b.unary("RepositoryIndex")(request, timeout=context.time_remaining()) for b in self._live_backends()),
            return_exceptions=True,
        )
        merged: dict[tuple[str, str], service_pb2.RepositoryIndexResponse.ModelIndex] = {}
        for reply in replies:
            if isinstance(reply, BaseException):
                continue
            for model in service_pb2.RepositoryIndexResponse.FromString(reply).models:
                key = (model.name, model.version)
                if key not in merged or (model.state == "READY" and merged[key].state != "READY"):
                    merged[key] = model
        models = sorted(merged.values(), key=lambda m: (m.name, m.version))
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
            # Applied to every pod, so that a load or unload leaves the fleet uniform.
            replies = await asyncio.gather(
                *(b.unary(method)(request, metadata=upstream_metadata(context), timeout=context.time_remaining())
                  for b in backends),
                return_exceptions=True,
            )
            if method in ("RepositoryModelLoad", "RepositoryModelUnload"):
                await self.on_model_change()
            failures = [(b, r) for b, r in zip(backends, replies) if isinstance(r, BaseException)]
            if failures:
                backend, exc = failures[0]
                code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else grpc.StatusCode.INTERNAL
                details = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                await context.abort(code, f"{method} failed on {len(failures)} of {len(backends)} backends; "
                                          f"{backend.address}: {details}")
            return replies[0]
        return handle


async def _abort(context, exc: UpstreamError):
    await context.abort(exc.code, exc.details, exc.trailing_metadata or ())
