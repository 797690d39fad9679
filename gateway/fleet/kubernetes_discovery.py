"""Pods from the EndpointSlices of the Triton Service, watched with the official `kubernetes` client.

List, then watch from the list's resourceVersion; on an expired watch (410) or a broken connection, list
again. An endpoint that is `ready` takes new requests. One that is `terminating` but still `serving`
stays in the pool marked terminating: it gets no new requests, while requests, streams and sequences
already on it finish there. Anything else is dropped. The client is synchronous, so the watch runs in a
thread and hands each new endpoint set to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from gateway.fleet.backends import BackendPool

log = logging.getLogger("tritonfleet.gateway")

WATCH_TIMEOUT_S = 60  # the API server ends a watch after this; the loop then watches again
RETRY_S = 1.0


def load_api_client() -> client.ApiClient:
    """In a pod: its service account; elsewhere: the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()


def endpoints_of(slices, port_name: str) -> tuple[set[str], set[str]]:
    """(all addresses to keep, the terminating ones among them) from EndpointSlice objects."""
    keep: set[str] = set()
    terminating: set[str] = set()
    for item in slices:
        ports = item.ports or []
        port = next((p.port for p in ports if p.name == port_name), None)
        if port is None and len(ports) == 1:
            port = ports[0].port
        if port is None:
            continue
        for endpoint in item.endpoints or []:
            conditions = endpoint.conditions
            # The API says an unset `ready` means ready, and an unset `serving` follows `ready`.
            ready = conditions is None or conditions.ready is None or conditions.ready
            is_terminating = bool(conditions and conditions.terminating)
            serving = ready if conditions is None or conditions.serving is None else conditions.serving
            for ip in endpoint.addresses or []:
                address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
                if is_terminating and serving:
                    keep.add(address)
                    terminating.add(address)
                elif ready and not is_terminating:
                    keep.add(address)
    return keep, terminating


class EndpointSliceDiscovery:
    def __init__(self, pool: BackendPool, namespace: str, service: str, port_name: str = "grpc",
                 api_client: client.ApiClient | None = None):
        self.pool = pool
        self.namespace = namespace
        self.selector = f"kubernetes.io/service-name={service}"
        self.port_name = port_name
        self.api_client = api_client
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        thread = threading.Thread(target=self._watch_forever, args=(loop,), name="endpointslices", daemon=True)
        thread.start()
        try:
            await asyncio.Event().wait()  # runs until the gateway cancels it
        finally:
            self._stop.set()
            if self._watch is not None:
                self._watch.stop()

    def _publish(self, loop: asyncio.AbstractEventLoop, slices: dict) -> None:
        keep, terminating = endpoints_of(slices.values(), self.port_name)
        loop.call_soon_threadsafe(self._apply, keep, terminating)

    def _apply(self, keep: set[str], terminating: set[str]) -> None:
        current = set(self.pool.backends)
        current_terminating = {a for a, b in self.pool.backends.items() if b.terminating}
        if (keep, terminating) != (current, current_terminating):
            log.info("endpointslices changed", extra={"backends": sorted(keep), "terminating": sorted(terminating)})
            self.pool.set_addresses(keep, terminating)

    def _watch_forever(self, loop: asyncio.AbstractEventLoop) -> None:
        api = client.DiscoveryV1Api(self.api_client or load_api_client())
        while not self._stop.is_set():
            try:
                listed = api.list_namespaced_endpoint_slice(self.namespace, label_selector=self.selector)
                slices = {item.metadata.name: item for item in listed.items}
                self._publish(loop, slices)
                self._follow(api, slices, listed.metadata.resource_version, loop)
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("endpointslice list/watch failed", extra={"status": exc.status, "reason": exc.reason})
                    self._stop.wait(RETRY_S)
            except Exception as exc:  # noqa: BLE001 - connection errors of every kind: keep the last pods
                log.warning("endpointslice watch broke", extra={"error": repr(exc)})
                self._stop.wait(RETRY_S)

    def _follow(self, api, slices: dict, resource_version: str, loop) -> None:
        self._watch = watch.Watch()
        for event in self._watch.stream(api.list_namespaced_endpoint_slice, self.namespace,
                                        label_selector=self.selector, resource_version=resource_version,
                                        timeout_seconds=WATCH_TIMEOUT_S):
            if self._stop.is_set():
                return
            kind, item = event["type"], event["object"]
            if kind == "ERROR":
                return  # e.g. 410 Gone: list again
            if kind == "DELETED":
                slices.pop(item.metadata.name, None)
            elif kind in ("ADDED", "MODIFIED"):
                slices[item.metadata.name] = item
            self._publish(loop, slices)
