"""Discovery: EndpointSlices watched with the official client (against FakeKubernetesApiServer, a test
double for the API server), honouring ready and terminating; DNS of a name; pods coming and going under
load without a failed request."""

from __future__ import annotations

import asyncio
import threading
import time

import psutil
import pytest
import tritonclient.grpc as grpcclient
from kubernetes import client

from gateway.backends import BackendPool
from gateway.kubernetes_discovery import EndpointSliceDiscovery, endpoints_of
from gateway.metrics import GatewayMetrics
from tests.gateway.fake_kubernetes import FakeKubernetesApiServer, endpoint_slice
from tests.gateway.helpers import GatewayProcess, add_one_inputs, served_counts


def slice_objects(*endpoints):
    api = client.ApiClient()
    raw = endpoint_slice("s", "triton", 8001, list(endpoints))
    return [api._ApiClient__deserialize(raw, "V1EndpointSlice")]  # noqa: SLF001 - the client's own decoder


def test_ready_terminating_and_not_ready_endpoints():
    keep, terminating = endpoints_of(slice_objects(
        {"ip": "10.0.0.1", "ready": True},
        {"ip": "10.0.0.2", "ready": False, "serving": True, "terminating": True},
        {"ip": "10.0.0.3", "ready": False, "serving": False, "terminating": True},
        {"ip": "10.0.0.4", "ready": False},
        {"ip": "10.0.0.5"},
    ), "grpc")
    assert keep == {"10.0.0.1:8001", "10.0.0.2:8001", "10.0.0.5:8001"}
    assert terminating == {"10.0.0.2:8001"}


def test_the_watch_follows_changes_to_the_slices():
    async def scenario(api_server: FakeKubernetesApiServer):
        pool = BackendPool(GatewayMetrics())
        configuration = client.Configuration(host=api_server.url)
        discovery = EndpointSliceDiscovery(pool, "default", "triton", api_client=client.ApiClient(configuration))
        task = asyncio.create_task(discovery.run())

        async def until(condition, what):
            for _ in range(200):
                if condition():
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"{what}; pool: {sorted(pool.backends)}")

        try:
            await until(lambda: set(pool.backends) == {"10.0.0.1:8001"}, "first list")
            api_server.put(endpoint_slice("triton-b", "triton", 8001, [{"ip": "10.0.0.2", "ready": True}]))
            api_server.put(endpoint_slice("other", "other-service", 8001, [{"ip": "10.9.9.9", "ready": True}]))
            await until(lambda: set(pool.backends) == {"10.0.0.1:8001", "10.0.0.2:8001"}, "added slice")
            api_server.put(endpoint_slice("triton-a", "triton", 8001, [
                {"ip": "10.0.0.1", "ready": False, "serving": True, "terminating": True}]))
            await until(lambda: pool.backends["10.0.0.1:8001"].terminating, "terminating endpoint")
            api_server.delete("triton-a")
            await until(lambda: set(pool.backends) == {"10.0.0.2:8001"}, "deleted slice")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await pool.close()

    with FakeKubernetesApiServer() as api_server:
        api_server.put(endpoint_slice("triton-a", "triton", 8001, [{"ip": "10.0.0.1", "ready": True}]))
        asyncio.run(scenario(api_server))
        assert any("watch=true" in path for path in api_server.requests)


class Load:
    """One client sending add_one requests until stopped; remembers every failure."""

    def __init__(self, url: str):
        self.url, self.sent, self.failures = url, 0, []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self):
        client_ = grpcclient.InferenceServerClient(self.url)
        while not self.stopping.is_set() and self.sent < 3000:
            try:
                client_.infer("add_one", add_one_inputs())
            except Exception as exc:  # noqa: BLE001 - counted, asserted by the test
                self.failures.append(exc)
            self.sent += 1
        client_.close()

    def stop(self):
        self.stopping.set()
        self.thread.join()


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def connections_to(gateway: GatewayProcess, port: int) -> list:
    """The gateway process's open TCP connections to `port` on loopback."""
    return [c for c in psutil.Process(gateway.process.pid).net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED]


@pytest.mark.slow
def test_pods_come_and_go_through_endpointslices_without_failed_requests(fleet3, tmp_path):
    a, b, c = fleet3
    ip_port = [s.grpc_url.rpartition(":") for s in fleet3]
    with FakeKubernetesApiServer() as api_server:
        # A loopback "pod" is one IP with its own port: one slice per server.
        for index, (ip, _, port) in enumerate(ip_port[:2]):
            api_server.put(endpoint_slice(f"triton-{index}", "triton", int(port), [{"ip": ip, "ready": True}]))
        kubeconfig = tmp_path / "kubeconfig"
        api_server.kubeconfig(kubeconfig)
        with GatewayProcess([], tmp_path / "gateway.log", "--discovery", "kubernetes",
                            "--kubernetes-service", "triton", env={"KUBECONFIG": str(kubeconfig)}) as gateway:
            load = Load(gateway.url)
            try:
                before = served_counts(fleet3, "add_one")
                ip, _, port = ip_port[2]
                api_server.put(endpoint_slice("triton-2", "triton", int(port), [{"ip": ip, "ready": True}]))
                assert wait_for(lambda: served_counts([c], "add_one")[0] > before[2] + 20), "new pod got no traffic"
                ip, _, port = ip_port[0]
                api_server.put(endpoint_slice("triton-0", "triton", int(port), [
                    {"ip": ip, "ready": False, "serving": True, "terminating": True}]))
                time.sleep(1.0)  # the change reaches the gateway
                drained_at = served_counts([a], "add_one")[0]
                time.sleep(1.0)
                assert served_counts([a], "add_one")[0] == drained_at, "terminating pod still got new requests"
                assert connections_to(gateway, int(port)), "the gateway never connected to the first pod"
                api_server.delete("triton-0")
                # Gone from the fleet: the gateway closes its connections to it (front door and grpcio).
                assert wait_for(lambda: not connections_to(gateway, int(port))), connections_to(gateway, int(port))
            finally:
                load.stop()
            assert load.sent > 50 and not load.failures, load.failures[:3]


@pytest.mark.slow
def test_dns_discovery_resolves_a_name(fleet3, tmp_path):
    port = fleet3[1].grpc_url.rpartition(":")[2]
    with GatewayProcess([], tmp_path / "gateway.log", "--discovery", "dns", "--dns-target", f"localhost:{port}") as gw:
        before = served_counts(fleet3, "add_one")
        client_ = grpcclient.InferenceServerClient(gw.url)
        for _ in range(10):
            client_.infer("add_one", add_one_inputs())
        client_.close()
        deltas = [after - b for b, after in zip(before, served_counts(fleet3, "add_one"))]
    assert deltas == [0, 10, 0]
