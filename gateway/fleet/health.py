"""Active health checks: is each pod live and ready, and which models are READY on it.

Every `interval` each pod is asked ServerLive, ServerReady, then RepositoryIndex for the models it knows
and the state of each of their versions (a model is ready where one of its versions is READY): three
calls a pod, however many models it has. The three answers are kept apart: `live` (the pod answers and says it
is live) decides whether the pod is in the fleet at all; `server_ready` is only recorded, because with
Triton's strict readiness it is false while any model loads or after one failed to load, and a pod in
that state still serves its other models; `ready_models` (per-model readiness) is what the picker reads.
A pod ejected after a failure (see `BackendPool.eject`) is checked again only once its backoff is over,
and comes back when the check passes. The first check of a new model also reads its config, to learn
whether it is decoupled or stateful (the stream handler routes those differently).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.fleet.backends import Backend, BackendPool

log = logging.getLogger("tritonfleet.gateway")


@dataclass(frozen=True)
class ModelTraits:
    decoupled: bool = False
    stateful: bool = False


class ModelCatalog:
    """Traits of each model by name, read once from a pod's ModelConfig."""

    def __init__(self):
        self.traits: dict[str, ModelTraits] = {}

    def get(self, model: str) -> ModelTraits:
        return self.traits.get(model, ModelTraits())


class HealthChecker:
    def __init__(self, pool: BackendPool, catalog: ModelCatalog, interval_s: float, timeout_s: float,
                 admin_metadata: tuple[tuple[str, str], ...] = ()):
        """`admin_metadata` goes with RepositoryIndex, which Triton's restricted model-repository
        protocol guards (`triton_admin_header`)."""
        self.pool = pool
        self.admin_metadata = admin_metadata
        self.catalog = catalog
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.checked = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                await self.check_all()
                self.checked.set()
                for listener in self.pool.health_listeners:
                    await listener()
            except Exception:  # noqa: BLE001 - one bad round must not end every later check
                log.exception("health check round failed")
            await asyncio.sleep(self.interval_s)

    async def check_all(self) -> None:
        backends = list(self.pool.backends.values())
        await asyncio.gather(*(self.check(b) for b in backends))

    def _stub(self, backend: Backend) -> service_pb2_grpc.GRPCInferenceServiceStub:
        # Kept on the backend: a pod removed and added again gets a new channel, and so a new stub.
        stub = backend._calls.get("health")  # noqa: SLF001 - the backend's own call cache
        if stub is None:
            stub = backend._calls["health"] = service_pb2_grpc.GRPCInferenceServiceStub(backend.channel)
        return stub

    async def check(self, backend: Backend) -> None:
        if time.monotonic() < backend.ejected_until:
            return
        stub = self._stub(backend)
        try:
            live, server_ready, ready, known = await self._probe(stub)
        except grpc.aio.UsageError:
            return  # its channel closed under the check: discovery removed the pod meanwhile
        except grpc.aio.AioRpcError as exc:
            live, server_ready, ready, known = False, False, frozenset(), backend.known_models
            if backend.live:
                log.warning("backend failed its health check", extra={
                    "backend": backend.address, "code": exc.code().name, "details": exc.details()})
        if ready is None:
            ready, known = backend.ready_models, backend.known_models
        await self._learn_traits(stub, ready - self.catalog.traits.keys())
        if self.pool.backends.get(backend.address) is not backend:
            return  # removed while the check ran: its state and series went with it
        changed = (live, server_ready, ready) != (backend.live, backend.server_ready, backend.ready_models)
        was_live, backend.live, backend.server_ready = backend.live, live, server_ready
        backend.ready_models, backend.known_models = ready, known
        self.pool.seen_models.update(known)
        if was_live and not live:
            backend.leaving()  # e.g. a Triton told to stop: "Server exiting"
        if changed:
            log.info("backend health changed", extra={
                "backend": backend.address, "live": live, "server_ready": server_ready,
                "ready_models": sorted(ready)})
            self.pool.invalidate()
        self.pool.metrics.set_backend_state(backend.address, live and not backend.terminating,
                                            set(ready), set(known))

    async def _probe(self, stub) -> tuple[bool, bool, frozenset[str] | None, frozenset[str] | None]:
        """(live, server ready, models READY, models known) of one pod; None for the models when the
        pod is live but did not answer its model questions. A failed ServerLive raises."""
        timeout = self.timeout_s
        live = await stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=timeout)
        if not live.live:
            return False, False, frozenset(), frozenset()
        try:
            server = await stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=timeout)
            index = await stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=timeout,
                                               metadata=self.admin_metadata)
        except grpc.aio.AioRpcError as exc:
            # A live pod busy loading a model may answer these late: it keeps serving what was READY
            # on it (a model it lost meanwhile is dropped on its first refusal, see drop_model).
            log.info("backend is live but did not answer its model checks", extra={
                "code": exc.code().name, "details": exc.details()})
            return True, False, None, None
        known = frozenset(model.name for model in index.models)
        ready = frozenset(model.name for model in index.models if model.state == "READY")
        return True, server.ready, ready, known

    async def _learn_traits(self, stub, models: set[str]) -> None:
        for model in models:
            try:
                reply = await stub.ModelConfig(service_pb2.ModelConfigRequest(name=model), timeout=self.timeout_s)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError):
                continue
            config = reply.config
            self.catalog.traits[model] = ModelTraits(
                decoupled=config.model_transaction_policy.decoupled,
                stateful=config.HasField("sequence_batching"),
            )
