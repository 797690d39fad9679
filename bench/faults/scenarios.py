"""The faults, each injected at a fixed point of a run under open-loop load: what it does to the
fleet, when it was lifted, and which pod it hit. `run_fault` wraps each in the same measurement."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.faults.fleet import GATEWAY_ENV, Fleet, running_fleet
from tritonfleet.slow_model import set_slow_delay
from bench.faults.load import CameraStreams, UnaryLoad, now_ns, slow_request
from bench.faults.observe import GatewayWatch
from observability.prometheus_process import PrometheusProcess
from bench.faults.report import between, failures, p99_ms, seconds
from loadtest.records import OK
from tritonfleet.proxies import GatewayProcess

BASE_DELAY_MS = 20  # every request sleeps this long on its pod: a server's capacity is known
SLOW_EXTRA_MS = 2 * BASE_DELAY_MS  # 20 + 40 ms: the slow server takes 3x as long
BACK_TIMEOUT_S = 30.0  # longest wait for a pod to take traffic again after the fault is lifted


@dataclass
class Timing:
    """Where in a run the fault goes: after `warm_s` of load, held `hold_s`, then `settle_s` of load."""

    warm_s: float = 5.0
    hold_s: float = 8.0
    settle_s: float = 4.0


@dataclass
class Marks:
    """What a fault did: when it struck, when it was lifted, the pod it hit (None: no one pod)."""

    fault_ns: int = 0
    lifted_ns: int = 0
    victim: str | None = None
    back_ns: int | None = None  # when the fleet was whole again, where the fault defines it itself
    eject_ns: int | None = None
    extra: dict = field(default_factory=dict)


def kill9(fleet: Fleet, timing: Timing, load: UnaryLoad, watch: GatewayWatch) -> Marks:
    victim = fleet.servers[0]
    marks = Marks(fault_ns=now_ns(), victim=victim.grpc_url)
    os.killpg(victim.process.pid, signal.SIGKILL)
    time.sleep(timing.hold_s)
    restarting = now_ns()
    victim.restart()  # on the same ports, as a pod restarted in place
    # Taken back counts from when the server is ready again, not from when it began to start.
    marks.lifted_ns = now_ns()
    marks.extra["restart_s"] = seconds(restarting, marks.lifted_ns)
    return marks


def sigstop(fleet: Fleet, timing: Timing, load: UnaryLoad, watch: GatewayWatch) -> Marks:
    victim = fleet.servers[0]
    marks = Marks(fault_ns=now_ns(), victim=victim.grpc_url)
    os.kill(victim.process.pid, signal.SIGSTOP)
    try:
        time.sleep(timing.hold_s)
    finally:
        marks.lifted_ns = now_ns()
        os.kill(victim.process.pid, signal.SIGCONT)
    return marks


def slow_server(fleet: Fleet, timing: Timing, load: UnaryLoad, watch: GatewayWatch) -> Marks:
    victim = fleet.servers[0]
    marks = Marks(fault_ns=now_ns(), victim=victim.grpc_url)
    set_slow_delay(victim, SLOW_EXTRA_MS)
    time.sleep(timing.hold_s)
    marks.lifted_ns = now_ns()
    set_slow_delay(victim, 0)
    marks.extra["slow_share_during"] = share_of(watch, victim.grpc_url, marks.fault_ns, marks.lifted_ns)
    return marks


def share_of(watch: GatewayWatch, backend: str, start_ns: int, end_ns: int) -> float | None:
    """The share of the gateway's answered requests that `backend` answered between two times."""
    name = "tritonfleet_gateway_requests_total"
    answered = watch.delta(start_ns, end_ns, name, code="OK")
    return round(watch.delta(start_ns, end_ns, name, backend=backend, code="OK") / answered, 3) if answered else None


def rolling_restart(fleet: Fleet, timing: Timing, load: UnaryLoad, watch: GatewayWatch) -> Marks:
    """What `helm upgrade` does to a Deployment with maxUnavailable 1: each pod in turn gets SIGTERM,
    exits, starts again, and the next one goes only once this one is serving."""
    marks = Marks(fault_ns=now_ns())
    per_pod = []
    for server in fleet.servers:
        stopped_at = now_ns()
        server.restart()
        started_at = now_ns()
        back = wait_back(watch, server.grpc_url, started_at)
        per_pod.append({"backend": server.grpc_url, "eject_s": seconds(stopped_at, watch.time_out(server.grpc_url, stopped_at)),
                        "restart_s": seconds(stopped_at, started_at), "take_back_s": seconds(started_at, back)})
    marks.lifted_ns = marks.back_ns = now_ns()
    marks.extra["pods"] = per_pod
    # The slowest pod's figures stand for the whole roll in the table.
    marks.extra["eject_s"] = max((p["eject_s"] for p in per_pod if p["eject_s"] is not None), default=None)
    marks.extra["take_back_s"] = max((p["take_back_s"] for p in per_pod if p["take_back_s"] is not None), default=None)
    return marks


def wait_back(watch: GatewayWatch, backend: str, after_ns: int) -> int | None:
    deadline = time.monotonic() + BACK_TIMEOUT_S
    while time.monotonic() < deadline:
        back = watch.time_back(backend, after_ns)
        if back is not None:
            return back
        time.sleep(0.05)
    return None


UNARY_FAULTS = {
    "kill9": (kill9, "kill -9 one of three Triton servers, restart it on its ports", Timing(hold_s=5.0)),
    "sigstop": (sigstop, "SIGSTOP one server (hung: connections open, no answers), SIGCONT later", Timing(hold_s=20.0)),
    "slow": (slow_server, "one server's `slow` reloaded 3x slower (20 -> 60 ms), then back", Timing(hold_s=10.0)),
    "rolling_restart": (rolling_restart, "SIGTERM, exit, start again, one server after another (as `helm upgrade`)",
                        Timing(hold_s=0.0)),
}


def run_unary_fault(name: str, workdir: Path, rate: float, timing: Timing | None = None) -> dict:
    inject, description, default_timing = UNARY_FAULTS[name]
    timing = timing or default_timing
    with running_fleet(workdir) as fleet:
        load = UnaryLoad(fleet.gateway.url, rate, slow_request(BASE_DELAY_MS)).start()
        watch = GatewayWatch(fleet.gateway.metrics_url).start()
        try:
            time.sleep(timing.warm_s)
            marks = inject(fleet, timing, load, watch)
            if marks.victim and marks.back_ns is None:
                marks.back_ns = wait_back(watch, marks.victim, marks.lifted_ns)
            time.sleep(timing.settle_s)
        finally:
            load.stop()
            watch.stop()
        return unary_record(name, description, rate, load, watch, marks)


def unary_record(name: str, description: str, rate: float, load: UnaryLoad, watch: GatewayWatch, marks: Marks) -> dict:
    results = load.results
    end_ns = max(r.done_ns for r in results)
    window_end = marks.back_ns or marks.lifted_ns
    failed = failures(results)
    eject_ns = marks.eject_ns or (watch.time_out(marks.victim, marks.fault_ns) if marks.victim else None)
    return {
        "fault": name, "description": description, "load_rps": rate,
        "duration_s": seconds(load.started_ns, end_ns), "sent": len(results), "failed": failed,
        "retried": watch.delta(load.started_ns, end_ns, "tritonfleet_gateway_retries_total"),
        "ejections": watch.delta(load.started_ns, end_ns, "tritonfleet_gateway_ejections_total"),
        "p99_before_ms": p99_ms(between(results, load.started_ns + int(1e9), marks.fault_ns)),
        "p99_fault_ms": p99_ms(between(results, marks.fault_ns, window_end)),
        "fault_window_s": seconds(marks.fault_ns, window_end),
        "eject_s": seconds(marks.fault_ns, eject_ns), "take_back_s": seconds(marks.lifted_ns, marks.back_ns),
        # Every failure here could have been retried on another pod: the goal is none.
        "goal": "zero failed requests", "goal_met": not failed and (marks.victim is None or marks.back_ns is not None),
        **marks.extra,
    }


def run_prometheus_down(workdir: Path, rate: float, timing: Timing = Timing(hold_s=8.0)) -> dict:
    """Prometheus scraping the gateway and the servers is killed, then started again on its data."""
    with running_fleet(workdir) as fleet:
        prometheus = PrometheusProcess(workdir / "prometheus", {"gateway": [fleet.gateway.metrics_url],
                                                                "triton": [s.metrics_url for s in fleet.servers]})
        try:
            prometheus.wait_scraped("gateway", time.time())
            load = UnaryLoad(fleet.gateway.url, rate, slow_request(BASE_DELAY_MS)).start()
            watch = GatewayWatch(fleet.gateway.metrics_url).start()
            try:
                time.sleep(timing.warm_s)
                marks = Marks(fault_ns=now_ns())
                prometheus.kill()
                time.sleep(timing.hold_s)
                marks.lifted_ns = now_ns()
                restarted_wall = time.time()
                prometheus.start()
                marks.back_ns = prometheus.wait_scraped("gateway", restarted_wall, now=now_ns)
                time.sleep(timing.settle_s)
            finally:
                load.stop()
                watch.stop()
        finally:
            prometheus.stop()
        record = unary_record("prometheus_down", "Prometheus killed (SIGKILL) and started again on its data",
                              rate, load, watch, marks)
        record["take_back_s_means"] = "restart to the first fresh scrape of the gateway"
        return record


def run_discovery_empty(workdir: Path, rate: float, timing: Timing = Timing(hold_s=5.0)) -> dict:
    """Kubernetes discovery (FakeKubernetesApiServer, the tests' stand-in for the API server) lists no
    EndpointSlice for a while: requests must fail fast with UNAVAILABLE, then the pods come back."""
    from tests.gateway.fake_kubernetes import FakeKubernetesApiServer, endpoint_slice

    with running_fleet(workdir, with_gateway=False) as fleet, FakeKubernetesApiServer() as api_server:
        def put_all():
            for index, server in enumerate(fleet.servers):
                ip, _, port = server.grpc_url.rpartition(":")
                api_server.put(endpoint_slice(f"triton-{index}", "triton", int(port), [{"ip": ip, "ready": True}]))

        put_all()
        kubeconfig = workdir / "kubeconfig"
        api_server.kubeconfig(kubeconfig)
        fleet.gateway = GatewayProcess([], workdir / "gateway.log", "--discovery", "kubernetes",
                                       "--kubernetes-service", "triton", env={**GATEWAY_ENV, "KUBECONFIG": str(kubeconfig)})
        load = UnaryLoad(fleet.gateway.url, rate, slow_request(BASE_DELAY_MS)).start()
        watch = GatewayWatch(fleet.gateway.metrics_url).start()
        try:
            time.sleep(timing.warm_s)
            marks = Marks(fault_ns=now_ns())
            for index in range(len(fleet.servers)):
                api_server.delete(f"triton-{index}")
            time.sleep(timing.hold_s)
            marks.lifted_ns = now_ns()
            put_all()
            marks.back_ns = first_ok_after(load, marks.lifted_ns)
            time.sleep(timing.settle_s)
        finally:
            load.stop()
            watch.stop()
    results = load.results
    marks.back_ns = first_ok_done_after(results, marks.lifted_ns)
    empty = between(results, marks.fault_ns, marks.back_ns or marks.lifted_ns)
    refused = [r for r in empty if r.status != OK]
    outside = [r for r in results if r.status != OK and r not in refused]
    first_refusal = min((r.done_ns for r in refused), default=None)
    record = unary_record("discovery_empty", "Kubernetes discovery lists no pod for a while, then all three again",
                          rate, load, watch, marks)
    record.update({
        "eject_s": seconds(marks.fault_ns, first_refusal), "eject_s_means": "until the first request was refused",
        "refused_while_empty": failures(refused), "slowest_refusal_ms": max((r.latency_ns / 1e6 for r in refused), default=None),
        "failed_outside_empty": failures(outside),
        "goal": "UNAVAILABLE at once while no pod is listed, nothing else fails, pods taken back",
        "goal_met": bool(refused) and all(r.status == "UNAVAILABLE" for r in refused) and not outside
        and marks.back_ns is not None,
    })
    return record


def first_ok_after(load: UnaryLoad, after_ns: int) -> int | None:
    """Wait (bounded) until the load has an answered request sent after `after_ns`."""
    deadline = time.monotonic() + BACK_TIMEOUT_S
    while time.monotonic() < deadline:
        found = first_ok_done_after(list(load.results), after_ns)
        if found is not None:
            return found
        time.sleep(0.05)
    return None


def first_ok_done_after(results, after_ns: int) -> int | None:
    return min((r.done_ns for r in results if r.status == OK and r.scheduled_ns >= after_ns), default=None)


def run_gateway_sigterm(workdir: Path, rate: float, streams: int = 4, fps: float = 10.0,
                        timing: Timing = Timing()) -> dict:
    """The gateway gets SIGTERM with unary calls and camera streams in flight: calls it had are answered,
    streams end with a status (OK or UNAVAILABLE) within the drain grace, and it exits."""
    with running_fleet(workdir) as fleet:
        gateway = fleet.gateway
        load = UnaryLoad(gateway.url, rate, slow_request(BASE_DELAY_MS)).start()
        cameras = CameraStreams(gateway.url, streams, fps).start()
        try:
            time.sleep(timing.warm_s)
            fault_ns = now_ns()
            gateway.send_signal(signal.SIGTERM)
            code = gateway.process.wait(timeout=30)
            exited_ns = now_ns()
            time.sleep(1.0)  # clients keep sending a moment after: what do they get?
        finally:
            load.stop()
            cameras.stop()
    results = load.results
    before = [r for r in results if r.sent_ns and r.sent_ns < fault_ns]
    after = [r for r in results if r not in before]
    cut_before = failures(before)
    stream_codes = [o.code for o in cameras.outcomes]
    stream_end_s = [seconds(fault_ns, o.ended_ns) for o in cameras.outcomes]
    return {
        "fault": "gateway_sigterm", "description": "SIGTERM to the gateway with unary calls and camera streams in flight",
        "load_rps": rate, "duration_s": seconds(load.started_ns, max(r.done_ns for r in results)),
        "sent": len(results), "failed": failures(results), "retried": None,
        "p99_before_ms": p99_ms(between(results, load.started_ns + int(1e9), fault_ns)),
        "p99_fault_ms": p99_ms([r for r in before if r.done_ns >= fault_ns]),
        "eject_s": None, "take_back_s": None,
        "gateway_exit_code": code, "gateway_exit_s": seconds(fault_ns, exited_ns),
        "sent_before_sigterm_failed": cut_before, "sent_after_sigterm": failures(after) | {"OK": sum(r.status == OK for r in after)},
        "streams": streams, "stream_fps": fps, "stream_frames_ok": sum(r.status == OK for o in cameras.outcomes for r in o.frames),
        "stream_end_codes": stream_codes, "stream_end_details": sorted({o.details for o in cameras.outcomes}),
        "stream_end_s_after_sigterm": stream_end_s,
        "goal": "calls sent before SIGTERM answered, streams end with OK or UNAVAILABLE, gateway exits 0",
        "goal_met": not cut_before and code == 0 and all(c in ("OK", "UNAVAILABLE") for c in stream_codes),
    }


FAULTS = {
    **{name: (lambda name: lambda workdir, rate, duration: run_unary_fault(name, workdir, rate, scaled(
        UNARY_FAULTS[name][2], duration)))(name) for name in UNARY_FAULTS},
    "gateway_sigterm": lambda workdir, rate, duration: run_gateway_sigterm(workdir, rate),
    "prometheus_down": lambda workdir, rate, duration: run_prometheus_down(workdir, rate),
    "discovery_empty": lambda workdir, rate, duration: run_discovery_empty(workdir, rate),
}


def scaled(timing: Timing, duration: float | None) -> Timing:
    """`--duration` stretches or shrinks a fault's hold (the default run's is in UNARY_FAULTS)."""
    if duration is None:
        return timing
    return Timing(warm_s=timing.warm_s, hold_s=max(duration - timing.warm_s - timing.settle_s, 1.0) if timing.hold_s else 0.0,
                  settle_s=timing.settle_s)
