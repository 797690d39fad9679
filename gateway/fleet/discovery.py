"""Where the pods are: a static list, or the A records of a headless Service, re-resolved.

A discovery source calls `pool.set_addresses(addresses, terminating)` whenever the set changes. New pods
join the pool unadmitted and take traffic after their first passing health check; pods that leave get
no new requests, while requests already on their way finish. The Kubernetes EndpointSlice source is in
`kubernetes_discovery.py`.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from gateway.fleet.backends import BackendPool

log = logging.getLogger("tritonfleet.gateway")


class StaticDiscovery:
    def __init__(self, pool: BackendPool, addresses: tuple[str, ...]):
        self.pool = pool
        self.addresses = set(addresses)

    async def run(self) -> None:
        self.pool.set_addresses(self.addresses)


class DnsDiscovery:
    """Resolve `name:port` every `interval_s`; each A/AAAA record is one pod (a headless Service)."""

    def __init__(self, pool: BackendPool, target: str, interval_s: float):
        self.pool = pool
        self.host, _, port = target.rpartition(":")
        self.port = int(port)
        self.interval_s = interval_s

    async def resolve(self) -> set[str]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        addresses = set()
        for family, _, _, _, sockaddr in infos:
            host = sockaddr[0]
            addresses.add(f"[{host}]:{self.port}" if family == socket.AF_INET6 else f"{host}:{self.port}")
        return addresses

    async def run(self) -> None:
        while True:
            try:
                addresses = await self.resolve()
            except OSError as exc:
                # A failed lookup keeps the last known pods rather than dropping the whole fleet.
                log.warning("dns lookup failed", extra={"target": self.host, "error": str(exc)})
            else:
                if addresses != set(self.pool.backends):
                    log.info("dns discovery changed", extra={"backends": sorted(addresses)})
                    self.pool.set_addresses(addresses)
            await asyncio.sleep(self.interval_s)
