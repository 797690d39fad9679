"""The gateway's front door: the listening socket, the client connections, and the drain.

Clients connect here (`ClientConnection`, one per client connection); each of their calls is given to
the handler its :path names (`handler_for`): unary inference and per-model questions to
`routing.unary`, streams to the stream router, everything else to the control relay (`edge.relay`).
With API keys (`api_keys_file`), a call's key is checked first, at its headers (`edge.access`): a call
refused there is answered trailers-only before any of its body is read; its model is checked by the
handler that learns it.
No gRPC library runs on the data path: calls go to the pods as HTTP/2 frames. With TLS on
(`edge.tls.ServerTls`), the listening socket does the handshake first, with the context of the moment.

A periodic sweep keeps the client connections honest (pings, idle timeout: `ClientConnection.keepalive`).
The drain on SIGTERM: stop accepting, GOAWAY to every client, let calls in flight finish within the
grace, then half-close each connection (FIN) and wait for the client to close it: closing a socket
whose peer is still sending makes the kernel answer with a reset, which discards what the peer has
not read yet (the last trailers of a loaded client).
"""

from __future__ import annotations

import asyncio
import time

from gateway.config import GatewayConfig
from gateway.control.service import ADMIN_METHODS, PER_MODEL_METHODS, SERVICE_NAME
from gateway.edge.access import AccessControl, Refusal, RefusedCall
from gateway.edge.client import CallHandler, ClientConnection, ClientStream
from gateway.edge.limits import BufferBudget
from gateway.edge.relay import ControlRelay
from gateway.edge.tls import HANDSHAKE_TIMEOUT_S, ServerTls
from gateway.fleet.upstreams import Upstreams
from gateway.routing import streams, unary
from gateway.routing.lifecycle import Router
from gateway.transport.h2 import H2Limits

# The front door's sweep looks at each client this often (at most), and this often at least.
_SWEEP_FLOOR_S = 0.05
_SWEEP_CEILING_S = 1.0
_CONTROL = f"/{SERVICE_NAME}/"
_PER_MODEL_PATHS = frozenset(_CONTROL + method for method in PER_MODEL_METHODS)


def h2_limits(config: GatewayConfig) -> H2Limits:
    """The HTTP/2 limits of a client connection, as the transport takes them."""
    return H2Limits(max_concurrent_streams=config.max_concurrent_streams,
                    max_header_list_size=config.max_header_list_bytes)


def access_control(config: GatewayConfig, metrics) -> AccessControl | None:
    """The API keys of `api_keys_file` (KeysFileError if it does not load); None without keys."""
    if not config.api_keys_file:
        return None
    return AccessControl(config.api_keys_file, metrics, admin_paths=frozenset(_CONTROL + m for m in ADMIN_METHODS),
                         model_paths=frozenset(unary.PATHS) | {streams.PATH} | _PER_MODEL_PATHS)


class FrontDoor:
    def __init__(self, config: GatewayConfig, router: Router, control_address: str,
                 tls: ServerTls | None = None):
        self.router = router
        self.upstreams = router.upstreams
        # The loopback connection to the gateway's own gRPC service stays plaintext, whatever the pods'.
        self.control_upstreams = Upstreams(config.keepalive_time_s, config.keepalive_timeout_s)
        self.tls = tls
        self.metrics = router.metrics
        self.control_address = control_address
        self.max_message_bytes = config.max_message_bytes
        self.budget = BufferBudget(config.max_buffered_bytes, router.metrics)
        self.h2_limits = h2_limits(config)
        self.max_connection_age_s = config.max_connection_age_s
        self.max_connection_age_grace_s = config.max_connection_age_grace_s
        self.client_keepalive_time_s = config.client_keepalive_time_s
        self.client_keepalive_timeout_s = config.client_keepalive_timeout_s
        self.client_idle_timeout_s = config.client_idle_timeout_s
        self.clients: set[ClientConnection] = set()
        self.closing = False
        self.server: asyncio.AbstractServer | None = None
        self._sweep_task: asyncio.Task | None = None
        self.access = access_control(config, router.metrics)
        self.reload_interval_s = config.reload_interval_s
        self._watch_task: asyncio.Task | None = None
        router.pool.removal_listeners.append(lambda backend: self.upstreams.retire(backend.address))

    def handler_for(self, stream: ClientStream) -> CallHandler:
        if self.access is not None:
            grant = self.access.authorize(stream.path, stream.authorization)
            if isinstance(grant, Refusal):
                return RefusedCall(stream, grant)
            stream.grant = grant
        method = unary.PATHS.get(stream.path)
        if method is not None:
            return unary.UnaryCall(self.router, stream, method)
        if stream.path == streams.PATH:
            return streams.StreamCall(self.router, stream)
        return ControlRelay(self.control_upstreams, self.control_address, stream,
                            model_checked=stream.path in _PER_MODEL_PATHS and stream.grant.access is not None)

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        tls = {} if self.tls is None else {"ssl": self.tls.listening, "ssl_handshake_timeout": HANDSHAKE_TIMEOUT_S}
        self.server = await loop.create_server(lambda: ClientConnection(self), host, port, reuse_port=True, **tls)
        self.upstreams.start()
        self.control_upstreams.start()
        if self.access is not None:
            self._watch_task = loop.create_task(self.access.watch(self.reload_interval_s))
        periods = [p for p in (self.client_keepalive_time_s, self.client_keepalive_timeout_s,
                               self.client_idle_timeout_s) if p]
        if periods:
            self._sweep_task = loop.create_task(self._sweep(min(max(min(periods) / 4, _SWEEP_FLOOR_S),
                                                                _SWEEP_CEILING_S)))
        return self.server.sockets[0].getsockname()[1]

    async def _sweep(self, period_s: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period_s)
            now = loop.time()
            for client in list(self.clients):
                client.keepalive(now)

    async def drain(self, grace: float) -> None:
        """Stop accepting, tell clients to go (GOAWAY), let calls in flight finish within `grace`."""
        self.closing = True
        if self.server is not None:
            self.server.close()
        for task in (self._sweep_task, self._watch_task):
            if task is not None:
                task.cancel()
        for client in list(self.clients):
            for stream in list(client.streams.values()):
                stream.handler.drain()
            client.go_away()
        deadline = time.monotonic() + grace
        while any(c.streams for c in self.clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for client in list(self.clients):
            client.finish_sending()
        while self.clients and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for client in list(self.clients):
            client.close()
        self.upstreams.close()
        self.control_upstreams.close()
