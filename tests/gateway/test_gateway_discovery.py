"""Discovery: EndpointSlices watched with the official client (against FakeKubernetesApiServer, a test
double for the API server), honouring ready and terminating; DNS of a name; pods coming and going under
load without a failed request."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from kubernetes import client

from gateway.fleet.backends import BackendPool
from gateway.fleet.discovery import DnsDiscovery
from gateway.fleet.kubernetes_discovery import EndpointSliceDiscovery, endpoints_of
from gateway.metrics import GatewayMetrics
from tests.gateway.fake_kubernetes import FakeKubernetesApiServer, endpoint_slice
from tests.gateway.helpers import GatewayProcess, add_one_inputs, served_counts
from tests.gateway.polling import metric, served_since, wait_for


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


def connections_to(gateway: GatewayProcess, port: int) -> list:
    """The gateway process's open TCP connections to `port` on loopback."""
    return [c for c in psutil.Process(gateway.process.pid).net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED]


def sent_to(gateway: GatewayProcess, server) -> float:
    """Requests the gateway finished on one pod, by its own count."""
    return metric(gateway.metrics_url, "tritonfleet_gateway_requests_total", backend=server.grpc_url)


def backend_up(gateway: GatewayProcess, server) -> float:
    return metric(gateway.metrics_url, "tritonfleet_gateway_backend_up", backend=server.grpc_url)


def put_slice(api_server: FakeKubernetesApiServer, index: int, server, **state) -> None:
    """One EndpointSlice per loopback "pod" (one IP, its own port); `state`: ready, serving, terminating."""
    ip, _, port = server.grpc_url.rpartition(":")
    api_server.put(endpoint_slice(f"triton-{index}", "triton", int(port), [{"ip": ip, **(state or {"ready": True})}]))


def kubernetes_gateway(api_server: FakeKubernetesApiServer, tmp_path) -> GatewayProcess:
    kubeconfig = tmp_path / "kubeconfig"
    api_server.kubeconfig(kubeconfig)
    return GatewayProcess([], tmp_path / "gateway.log", "--discovery", "kubernetes", "--kubernetes-service", "triton",
                          env={"KUBECONFIG": str(kubeconfig)})


TERMINATING = {"ready": False, "serving": True, "terminating": True}


@pytest.mark.slow
def test_pods_come_and_go_through_endpointslices_without_failed_requests(fleet3, tmp_path):
    a, b, c = fleet3
    with FakeKubernetesApiServer() as api_server:
        put_slice(api_server, 0, a)
        put_slice(api_server, 1, b)
        with kubernetes_gateway(api_server, tmp_path) as gateway:
            load = Load(gateway.url)
            try:
                before = served_counts(fleet3, "add_one")
                put_slice(api_server, 2, c)
                assert wait_for(lambda: served_counts([c], "add_one")[0] > before[2] + 20), "new pod got no traffic"
                put_slice(api_server, 0, a, **TERMINATING)
                assert wait_for(lambda: backend_up(gateway, a) == 0), "the gateway never saw the pod terminating"
                # The one request that may have been on its way there when it turned terminating has
                # been answered once the (sequential) load has had two more answers.
                sent = load.sent
                assert wait_for(lambda: load.sent >= sent + 2)
                drained_at = sent_to(gateway, a)
                assert wait_for(lambda: load.sent >= sent + 100), "the load stalled"
                assert sent_to(gateway, a) == drained_at, "terminating pod still got new requests"
                assert connections_to(gateway, int(a.ports.grpc)), "the gateway never connected to the first pod"
                api_server.delete("triton-0")
                # Gone from the fleet: the gateway closes its connections to it (front door and grpcio).
                assert wait_for(lambda: not connections_to(gateway, int(a.ports.grpc))), \
                    connections_to(gateway, int(a.ports.grpc))
            finally:
                load.stop()
            assert load.sent > 50 and not load.failures, load.failures[:3]


@pytest.mark.slow
def test_a_terminating_pod_finishes_the_call_it_has_and_gets_no_new_ones(fleet3, tmp_path):
    a, b, _ = fleet3
    with FakeKubernetesApiServer() as api_server:
        put_slice(api_server, 0, a)
        put_slice(api_server, 1, b)
        with kubernetes_gateway(api_server, tmp_path) as gateway, ThreadPoolExecutor(1) as pool:
            assert wait_for(lambda: backend_up(gateway, a) == backend_up(gateway, b) == 1)
            call = pool.submit(slow_call, gateway.url, 3000)
            busy = lambda pod: metric(gateway.metrics_url, "tritonfleet_gateway_inflight", backend=pod.grpc_url)  # noqa: E731
            assert wait_for(lambda: busy(a) + busy(b) == 1), "the slow call never reached a pod"
            index, pod = (0, a) if busy(a) else (1, b)
            put_slice(api_server, index, pod, **TERMINATING)
            assert wait_for(lambda: backend_up(gateway, pod) == 0), "the gateway never saw the pod terminating"
            before = sent_to(gateway, pod)
            # Many at once: the other pod queues them deep, so the picker would send some to this one
            # (one call outstanding) if it still took new requests.
            answers = concurrent_add_one(gateway.url, 200)
            assert answers == [[2.0, 3.0, 4.0]] * 200
            assert sent_to(gateway, pod) == before, "a terminating pod got a new request"
            # The call it had when it turned terminating is answered there, whole.
            assert call.result(timeout=30) == [2.0]
            assert sent_to(gateway, pod) == before + 1


def concurrent_add_one(url: str, count: int) -> list:
    """`count` add_one calls all in flight at once on one channel; their outputs."""
    async def run():
        async with aioclient.InferenceServerClient(url) as aio:
            tensor = aioclient.InferInput("INPUT0", [3], "FP32")
            tensor.set_data_from_numpy(np.array([1.0, 2.0, 3.0], dtype=np.float32))
            replies = await asyncio.gather(*(aio.infer("add_one", [tensor]) for _ in range(count)))
            return [reply.as_numpy("OUTPUT0").tolist() for reply in replies]

    return asyncio.run(run())


def slow_call(url: str, delay_ms: int) -> list:
    """One `slow` call that keeps its pod busy `delay_ms`; its answer."""
    client_ = grpcclient.InferenceServerClient(url)
    value = grpcclient.InferInput("INPUT0", [1], "FP32")
    value.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    delay = grpcclient.InferInput("DELAY_MS", [1], "INT32")
    delay.set_data_from_numpy(np.array([delay_ms], dtype=np.int32))
    try:
        return client_.infer("slow", [value, delay], client_timeout=60).as_numpy("OUTPUT0").tolist()
    finally:
        client_.close()


class ScriptedDns(DnsDiscovery):
    """DNS discovery whose lookups answer from a script, one entry per lookup (an exception: a failed
    lookup); the real resolver cannot be pointed at changing records on this machine (no DNS server
    of ours, /etc/hosts is the host's). The real lookup is test_dns_discovery_resolves_a_name's."""

    def __init__(self, pool: BackendPool, answers: list):
        super().__init__(pool, "triton-headless.default.svc:8001", interval_s=0.01)
        self.answers = answers
        self.lookups = 0

    async def resolve(self) -> set[str]:
        answer = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_dns_discovery_re_resolves_and_keeps_the_last_pods_when_a_lookup_fails():
    first, second = {"10.0.0.1:8001", "10.0.0.2:8001"}, {"10.0.0.2:8001", "10.0.0.3:8001"}
    script = [first, first, second, OSError("Temporary failure in name resolution"), second]

    async def scenario():
        pool = BackendPool(GatewayMetrics())
        discovery = ScriptedDns(pool, script)
        task = asyncio.create_task(discovery.run())
        seen = []
        try:
            for _ in range(500):
                if not seen or seen[-1] != set(pool.backends):
                    seen.append(set(pool.backends))
                if discovery.lookups > len(script):
                    break
                await asyncio.sleep(0.005)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await pool.close()
        return seen, discovery.lookups

    seen, lookups = asyncio.run(scenario())
    # Looked up again and again; the pool followed the records, and the failed lookup left it alone.
    assert lookups > len(script)
    assert [s for s in seen if s] == [first, second], seen


@pytest.mark.slow
def test_dns_discovery_resolves_a_name(fleet3, tmp_path):
    port = fleet3[1].grpc_url.rpartition(":")[2]
    with GatewayProcess([], tmp_path / "gateway.log", "--discovery", "dns", "--dns-target", f"localhost:{port}") as gw:
        before = served_counts(fleet3, "add_one")
        client_ = grpcclient.InferenceServerClient(gw.url)
        for _ in range(10):
            client_.infer("add_one", add_one_inputs())
        client_.close()
        deltas = served_since(fleet3, "add_one", before, 10)
    assert deltas == [0, 10, 0]
