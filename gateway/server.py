"""Running the gateway: one worker's pieces wired together, the shutdown sequence, and several workers.

Shutdown, the one sequence: SIGTERM or SIGINT → readiness turns false and open streams stop taking new
messages → the front door stops accepting, sends each client GOAWAY and gives calls in flight
`drain_grace_s` to finish → what is left is cancelled → health checks and discovery stop and channels
close.

Several workers (`workers` > 1) are separate processes that each bind the listen port with
SO_REUSEPORT, so the kernel spreads client connections over them and every core is used; the parent
serves the merged metrics and passes signals on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile

import grpc
from grpc_health.v1 import health_pb2_grpc

from gateway import logs, metrics as metrics_module
from gateway.fleet.backends import BackendPool, channel_options
from gateway.config import GatewayConfig
from gateway.fleet.discovery import DnsDiscovery, StaticDiscovery
from gateway.edge import tls
from gateway.edge.frontdoor import FrontDoor
from gateway.fleet.upstreams import Upstreams
from gateway.fleet.health import HealthChecker, ModelCatalog
from gateway.metrics import GatewayMetrics
from gateway.routing.lifecycle import RetryBudget, Router
from gateway.routing.sequences import unary_sequences
from gateway.control.service import InferenceService

log = logging.getLogger("tritonfleet.gateway")


class Gateway:
    """One worker: discovery → pool ← health checks; the front door takes the clients and routes their
    calls over the pool; the gRPC service answers, on loopback, what is not on the data path."""

    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics | None = None):
        self.config = config
        self.metrics = metrics or GatewayMetrics()
        upstream_tls = tls.upstream_tls(config)
        self.pool = BackendPool(self.metrics, config.max_inflight_per_backend, config.queue_timeout_s,
                                config.eject_base_s, config.eject_max_s,
                                channel_options(config.keepalive_time_s, config.keepalive_timeout_s)
                                + (upstream_tls.channel_options() if upstream_tls else []),
                                upstream_tls.channel_credentials() if upstream_tls else None)
        self.catalog = ModelCatalog()
        self.health = HealthChecker(self.pool, self.catalog, config.health_interval_s, config.health_timeout_s,
                                    config.triton_admin_metadata)
        pool = self.pool
        self.router = Router(pool, self.metrics, config.retry_attempts,
                             RetryBudget(config.retry_budget_ratio, config.retry_budget_reserve),
                             config.max_queued_requests,
                             upstreams=Upstreams(config.keepalive_time_s, config.keepalive_timeout_s, upstream_tls),
                             catalog=self.catalog,
                             sequences=unary_sequences(lambda b: pool.backends.get(b.address) is b))
        self.service = InferenceService(self.pool, self.catalog, config.allow_admin,
                                        on_model_change=self.health.check_all,
                                        admin_metadata=config.triton_admin_metadata)
        self.server: grpc.aio.Server | None = None
        self.frontdoor: FrontDoor | None = None
        self.port = 0
        self._tasks: list[asyncio.Task] = []

    def _discovery(self):
        config = self.config
        if config.discovery == "dns":
            return DnsDiscovery(self.pool, config.dns_target, config.dns_interval_s)
        if config.discovery == "kubernetes":
            from gateway.fleet.kubernetes_discovery import EndpointSliceDiscovery

            return EndpointSliceDiscovery(self.pool, config.kubernetes_namespace, config.kubernetes_service,
                                          config.kubernetes_port_name)
        return StaticDiscovery(self.pool, config.backends)

    async def start(self) -> int:
        """Start discovery, health checks and the server; returns the bound port."""
        self._tasks = [asyncio.create_task(self._discovery().run()), asyncio.create_task(self.health.run())]
        limit = self.config.max_message_bytes
        self.server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
        ])
        self.server.add_generic_rpc_handlers((self.service.generic_handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.service.readiness.servicer, self.server)
        # The gRPC service listens privately; the front door takes the clients.
        internal = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        server_tls = tls.server_tls(self.config, self.metrics.tls_reloads, self.metrics.tls_handshake_failures)
        if server_tls is not None:
            self._tasks.append(asyncio.create_task(server_tls.run(self.config.reload_interval_s)))
        self.frontdoor = FrontDoor(self.config, self.router, f"127.0.0.1:{internal}", server_tls)
        self.port = await self.frontdoor.start(self.config.listen_host.strip("[]"), self.config.listen_port)
        log.info("gateway listening", extra={"listen": f"{self.config.listen_host}:{self.port}"})
        return self.port

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the first round of health checks is done (tests and the supervisor use it)."""
        await asyncio.wait_for(self.health.checked.wait(), timeout)

    async def stop(self, grace: float | None = None) -> None:
        grace = self.config.drain_grace_s if grace is None else grace
        self.service.draining = True
        stopping = [self.server.stop(grace)] if self.server is not None else []
        if self.frontdoor is not None:
            stopping.append(self.frontdoor.drain(grace))
        await asyncio.gather(*stopping)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pool.close()
        log.info("gateway stopped")


async def serve(config: GatewayConfig, serve_metrics: bool = True) -> None:
    """Run one worker until SIGTERM or SIGINT, then drain."""
    gateway = Gateway(config)
    if serve_metrics and config.metrics_port:
        metrics_module.serve(gateway.metrics, config.metrics_address, config.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await gateway.start()
    await stop.wait()
    log.info("gateway draining", extra={"grace_s": config.drain_grace_s})
    await gateway.stop()


def run(config: GatewayConfig) -> int:
    logs.configure(config.log_level)
    if config.workers == 1:
        _run_loop(serve(config))
        return 0
    return _run_workers(config)


# glibc malloc settings of a gateway process: blocks up to MMAP_THRESHOLD come from the heap, and up to
# TRIM_THRESHOLD of freed heap stays mapped for the next messages.
MALLOC_MMAP_THRESHOLD = 4 << 20
MALLOC_TRIM_THRESHOLD = 64 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h


def keep_freed_memory() -> bool:
    """Let glibc reuse freed memory for the next message instead of handing it back to the kernel.

    Each read of a large message is a fresh bytes object of up to 256 KB (uvloop's read size). With
    glibc's defaults such blocks are mapped, or the heap under them trimmed, afresh, and the page
    faults that follow cost 10-15% of the gateway's CPU with 150 KB messages (docs/BENCHMARKS.md).
    Returns whether the C library took the settings (only glibc has them; elsewhere nothing changes).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))


def _run_loop(coroutine) -> None:
    keep_freed_memory()
    # uvloop by default; TRITONFLEET_GATEWAY_LOOP=asyncio runs the standard loop (for comparisons).
    if os.environ.get("TRITONFLEET_GATEWAY_LOOP") == "asyncio":
        asyncio.run(coroutine)
        return
    import uvloop

    uvloop.run(coroutine)


def _worker_main(config: GatewayConfig) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: a worker never outlives the parent
    logs.configure(config.log_level)
    _run_loop(serve(config, serve_metrics=False))


def _run_workers(config: GatewayConfig) -> int:
    metrics_dir = tempfile.mkdtemp(prefix="tritonfleet-gateway-metrics-")
    # Set before any worker starts: workers create their metrics in multiprocess mode from it.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker_main, args=(config,), name=f"gateway-{i}")
               for i in range(config.workers)]
    for worker in workers:
        worker.start()
    if config.metrics_port:
        metrics_module.serve_multiprocess(config.metrics_address, config.metrics_port)

    def forward(signum, _frame):
        for worker in workers:
            if worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    from prometheus_client import multiprocess

    for worker in workers:
        worker.join()
        multiprocess.mark_process_dead(worker.pid)  # its live gauges leave the merged view
    shutil.rmtree(metrics_dir, ignore_errors=True)
    return max((w.exitcode or 0) for w in workers)
