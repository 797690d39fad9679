"""The gateway's own readiness, as `ServerReady` and as the standard gRPC health service.

The gateway is ready while it is not draining and at least one pod is admitted (live, not ejected,
not terminating). `grpc.health.v1.Health` reports that as SERVING or NOT_SERVING for the whole server
("") and for "inference.GRPCInferenceService", so that Kubernetes `grpc:` probes and gRPC clients'
health checking see what `ServerReady` says. `Check` answers from the state at the moment it is
asked; `Watch` streams are told of a change at the end of the health checker's round (every
`health_interval_s`), which goes on during the drain.
The service name "liveness" is SERVING as long as the gateway answers at all: a liveness probe must
not restart a gateway because the pods behind it are down.
"""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

from gateway.fleet.backends import BackendPool

SERVED = ("", "inference.GRPCInferenceService")
LIVENESS = "liveness"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GatewayHealthServicer(health.aio.HealthServicer):
    """grpcio-health-checking's servicer, brought up to date before each Check."""

    def __init__(self, readiness: "Readiness"):
        super().__init__()
        self.readiness = readiness
        # Not serving until the first health round has found a pod.
        self._server_status = {**{service: _NOT_SERVING for service in SERVED}, LIVENESS: _SERVING}

    async def Check(self, request, context):
        await self.readiness.publish()
        return await super().Check(request, context)


class Readiness:
    def __init__(self, pool: BackendPool):
        self.pool = pool
        self.draining = False
        self.servicer = GatewayHealthServicer(self)
        pool.health_listeners.append(self.publish)

    def ready(self) -> bool:
        return not self.draining and any(b.admitted for b in self.pool.backends.values())

    async def publish(self) -> None:
        """Set the health service's statuses from the readiness now (Watch streams hear of a change)."""
        status = _SERVING if self.ready() else _NOT_SERVING
        for service in SERVED:
            await self.servicer.set(service, status)
