"""Run a rendered chart's workloads as podman containers, where no Kubernetes API server exists.

`podman kube play` falls short here: its pods need the bridge network (which does not start on
this VM), it ignores probes and it cannot resolve a headless Service. So this runner plays the parts
of a cluster a chart relies on, from the objects `helm template` renders:

- every pod gets its own network namespace on a private bridge: its own IP, the same ports as its
  siblings, exactly as on a pod network (with `--network host`, two Triton pods would fight over
  8000-8002, and other servers on this machine over the gateway's 8001);
- a Service's in-cluster names resolve (container host entries) to the IPs of the pods its
  selector picks, every one of them for a headless Service, as cluster DNS answers;
- ConfigMaps become files mounted where the pod spec mounts them, emptyDirs become tmpfs;
- containers run with the pod spec's command, args, env, user, read-only root and capabilities;
- probes (httpGet, tcpSocket, grpc, exec) are run against the pod's IP the way the kubelet runs them,
  and `helm test` hook pods run to completion with their exit code as the verdict.

Needs root (network namespaces), podman with runc, and iproute2.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tritonfleet.paths import REPO_ROOT

CLUSTER_DOMAIN = "svc.cluster.local"
PODMAN = ("podman", "--runtime", "runc")


class ChartRunError(RuntimeError):
    """A rendered object the runner cannot start, or a pod that did not become ready."""


def can_run() -> str | None:
    """Why this machine cannot run pods, or None when it can."""
    if os.geteuid() != 0:
        return "the chart runner needs root (one network namespace per pod)"
    for tool in ("podman", "runc", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (deploy/scripts/install-container-tools.sh installs it)"
    probe = subprocess.run([*PODMAN, "info", "--format", "{{.Host.OCIRuntime.Name}}"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"podman cannot run here: {probe.stderr.strip()[-300:]}"
    return None


def run(*command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise ChartRunError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


class PodNetwork:
    """A bridge in a namespace of its own, one namespace per pod on it, and the host on it too.

    Nothing of the host's networking changes but one veth with an address on the private subnet,
    so the host (tests, probes) reaches every pod directly; all of it goes away in close().
    """

    def __init__(self, run_id: str, octet: int):
        self.run_id = run_id
        self.subnet = f"10.213.{octet}"
        self.bridge_ns = f"tfr{run_id}-net"
        self.host_if = f"tfr{run_id}h"
        self.namespaces: list[str] = []
        self.next_host = 10

    def open(self) -> None:
        run("ip", "netns", "add", self.bridge_ns)
        self.namespaces.append(self.bridge_ns)
        self._in(self.bridge_ns, "ip", "link", "add", "br0", "type", "bridge")
        self._in(self.bridge_ns, "ip", "link", "set", "br0", "up")
        self._plug(self.host_if, f"tfr{self.run_id}b")
        run("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.host_if)
        run("ip", "link", "set", self.host_if, "up")

    def add_pod(self) -> tuple[str, str]:
        """(namespace path, IP) of a new pod's network."""
        n = self.next_host
        self.next_host += 1
        ns, pod_if = f"tfr{self.run_id}-{n}", f"tfr{self.run_id}p{n}"
        run("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        self._plug(pod_if, f"tfr{self.run_id}q{n}")
        run("ip", "link", "set", pod_if, "netns", ns)
        ip = f"{self.subnet}.{n}"
        self._in(ns, "ip", "addr", "add", f"{ip}/24", "dev", pod_if)
        self._in(ns, "ip", "link", "set", pod_if, "up")
        self._in(ns, "ip", "link", "set", "lo", "up")
        return f"/run/netns/{ns}", ip

    def _plug(self, outer: str, inner: str) -> None:
        """A veth pair whose `inner` end joins the bridge."""
        run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        run("ip", "link", "set", inner, "netns", self.bridge_ns)
        self._in(self.bridge_ns, "ip", "link", "set", inner, "master", "br0", "up")

    @staticmethod
    def _in(ns: str, *command: str) -> None:
        run("ip", "netns", "exec", ns, *command)

    def close(self) -> None:
        run("ip", "link", "del", self.host_if, check=False)
        for ns in reversed(self.namespaces):
            run("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()


@dataclass
class Pod:
    name: str
    labels: dict
    spec: dict
    ip: str = ""
    netns: str = ""
    containers: list[str] = field(default_factory=list)

    def container_spec(self, name: str | None = None) -> dict:
        containers = self.spec["containers"]
        return next(c for c in containers if name is None or c["name"] == name)

    def port(self, container: dict, port) -> int:
        """A probe's port: a number, or the name of one of the container's ports."""
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for entry in container.get("ports", []):
            if entry.get("name") == port:
                return int(entry["containerPort"])
        raise ChartRunError(f"pod {self.name}: no port named {port!r}")


def podman_size(quantity: str) -> str:
    """A Kubernetes quantity (512Mi, 2Gi) as podman writes sizes (512m, 2g)."""
    text = str(quantity)
    for suffix, short in (("Ki", "k"), ("Mi", "m"), ("Gi", "g"), ("Ti", "t")):
        if text.endswith(suffix):
            return text[: -len(suffix)] + short
    return text


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class ChartRun:
    """The rendered objects of one release, started as pods; use as a context manager."""

    def __init__(self, objects, namespace: str, workdir: Path | None = None):
        self.objects = [o for o in objects if o]
        self.namespace = namespace
        self.run_id = secrets.token_hex(2)
        self.network = PodNetwork(self.run_id, 20 + secrets.randbelow(200))
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tritonfleet-chart-"))
        self.pods: list[Pod] = []
        self.config_maps = {o["metadata"]["name"]: o for o in self.objects if o["kind"] == "ConfigMap"}
        self.services = [o for o in self.objects if o["kind"] == "Service"]

    # -- planning: which pods a cluster would run, and where the Services point
    def workload_pods(self) -> list[Pod]:
        pods = []
        for obj in self.objects:
            if obj["kind"] != "Deployment":
                continue
            template = obj["spec"]["template"]
            for i in range(int(obj["spec"].get("replicas", 1))):
                pods.append(Pod(f"{obj['metadata']['name']}-{i}", template["metadata"].get("labels", {}),
                                template["spec"]))
        return pods

    def test_pods(self) -> list[Pod]:
        return [Pod(o["metadata"]["name"], o["metadata"].get("labels", {}), o["spec"]) for o in self.objects
                if o["kind"] == "Pod" and o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]

    def host_entries(self) -> list[str]:
        """`name:ip` for every Service name and every pod IP its selector picks."""
        entries = []
        for service in self.services:
            name = service["metadata"]["name"]
            names = (name, f"{name}.{self.namespace}", f"{name}.{self.namespace}.svc",
                     f"{name}.{self.namespace}.{CLUSTER_DOMAIN}")
            for pod in self.pods:
                if pod.ip and selects(service["spec"].get("selector", {}), pod.labels):
                    entries += [f"{n}:{pod.ip}" for n in names]
        return entries

    # -- starting
    def __enter__(self) -> "ChartRun":
        self.network.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> list[Pod]:
        """Start every Deployment's pods. Every pod has its IP before any container starts, so each
        container's host entries already list all the pods behind every Service."""
        planned = self.workload_pods()
        for pod in planned:
            pod.netns, pod.ip = self.network.add_pod()
            self.pods.append(pod)
        for pod in planned:
            for container in pod.spec["containers"]:
                self._run_container(pod, container, detach=True)
        return planned

    def _run_container(self, pod: Pod, container: dict, detach: bool) -> subprocess.CompletedProcess:
        name = f"tfr{self.run_id}-{pod.name}-{container['name']}"[:120]
        args = [*PODMAN, "run", "--pull=never", "--name", name, "--hostname", pod.name[:63],
                "--network", f"ns:{pod.netns}", *self.security_args(pod, container)]
        for entry in self.host_entries():
            args += ["--add-host", entry]
        for env in container.get("env", []):
            if "value" not in env:
                raise ChartRunError(f"pod {pod.name}: env {env['name']} needs a valueFrom, which the runner lacks")
            args += ["-e", f"{env['name']}={env['value']}"]
        args += self.volume_args(pod, container)
        limits = container.get("resources", {}).get("limits", {})
        if "memory" in limits:
            args += ["--memory", podman_size(limits["memory"])]
        if "command" in container:
            args += ["--entrypoint", json.dumps(container["command"])]
        args += ["-d"] if detach else []
        args += [container["image"], *container.get("args", [])]
        pod.containers.append(name)
        return run(*args, check=detach, timeout=600)

    @staticmethod
    def security_args(pod: Pod, container: dict) -> list[str]:
        pod_ctx, ctx = pod.spec.get("securityContext", {}), container.get("securityContext", {})
        user, group = ctx.get("runAsUser", pod_ctx.get("runAsUser")), ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
        args = []
        if user is not None:
            args += ["--user", f"{user}:{group if group is not None else user}"]
        if "fsGroup" in pod_ctx:
            args += ["--group-add", str(pod_ctx["fsGroup"])]
        if ctx.get("readOnlyRootFilesystem"):
            args += ["--read-only"]
        if ctx.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        for cap in ctx.get("capabilities", {}).get("drop", []):
            args += ["--cap-drop", cap]
        return args

    def volume_args(self, pod: Pod, container: dict) -> list[str]:
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        args = []
        for mount in container.get("volumeMounts", []):
            volume, path = volumes[mount["name"]], mount["mountPath"]
            if "configMap" in volume:
                folder = self._config_map_folder(volume["configMap"]["name"])
                args += ["-v", f"{folder}:{path}:ro"]
            elif "emptyDir" in volume:
                size = volume["emptyDir"].get("sizeLimit")
                if path == "/dev/shm":
                    # podman mounts its own /dev/shm; its size is the emptyDir's.
                    args += ["--shm-size", podman_size(size or "64Mi")]
                else:
                    args += ["--tmpfs", f"{path}:rw,mode=1777" + (f",size={podman_size(size)}" if size else "")]
            else:
                raise ChartRunError(f"pod {pod.name}: volume {mount['name']} is neither a ConfigMap nor an emptyDir")
        return args

    def _config_map_folder(self, name: str) -> Path:
        if name not in self.config_maps:
            raise ChartRunError(f"no ConfigMap {name!r} among the rendered objects")
        folder = self.workdir / "configmaps" / name
        if not folder.exists():
            folder.mkdir(parents=True)
            for key, value in self.config_maps[name].get("data", {}).items():
                (folder / key).write_text(value)
        return folder

    # -- probes, the kubelet's way
    def probe(self, pod: Pod, container: dict, probe: dict) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                url = f"http://{pod.ip}:{pod.port(container, get['port'])}{get.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    return 200 <= response.status < 400
            if "tcpSocket" in probe:
                with socket.create_connection((pod.ip, pod.port(container, probe["tcpSocket"]["port"])), timeout):
                    return True
            if "grpc" in probe:
                return self._grpc_health(pod.ip, pod.port(container, probe["grpc"]["port"]), timeout,
                                         probe["grpc"].get("service", ""))
            if "exec" in probe:
                name = next(n for n in pod.containers if n.endswith(f"-{container['name']}"))
                return run(*PODMAN, "exec", name, *probe["exec"]["command"], check=False).returncode == 0
        except (OSError, urllib.error.URLError):
            return False
        raise ChartRunError(f"pod {pod.name}: a probe of an unknown kind: {sorted(probe)}")

    @staticmethod
    def _grpc_health(host: str, port: int, timeout: float, service: str = "") -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(f"{host}:{port}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                  timeout=timeout)
            except grpc.RpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

    def wait_ready(self, pod: Pod) -> None:
        """Wait as the kubelet does: the startup probe (if any) within its failure budget, then the
        readiness probe; then the liveness probe must pass too. A container that exits fails at once."""
        for container in pod.spec["containers"]:
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(kind)
                if probe is None:
                    continue
                budget = float(probe.get("periodSeconds", 10)) * int(probe.get("failureThreshold", 3))
                self._poll(pod, container, kind, probe, deadline=time.monotonic() + max(budget, 30))

    def _poll(self, pod: Pod, container: dict, kind: str, probe: dict, deadline: float) -> None:
        while not self.probe(pod, container, probe):
            name = next(n for n in pod.containers if n.endswith(f"-{container['name']}"))
            state = run(*PODMAN, "inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
            if state != "running" or time.monotonic() > deadline:
                raise ChartRunError(f"pod {pod.name}: {kind} of {container['name']} never passed "
                                    f"(container {state}); its log ends:\n{self.logs(name)[-3000:]}")
            time.sleep(float(probe.get("periodSeconds", 1)) / 5)

    def run_tests(self) -> list[tuple[str, int, str]]:
        """`helm test`: each test hook pod run to completion; (name, exit code, log)."""
        results = []
        for pod in self.test_pods():
            pod.netns, pod.ip = self.network.add_pod()
            self.pods.append(pod)
            container = pod.container_spec()
            finished = self._run_container(pod, container, detach=False)
            results.append((pod.name, finished.returncode, finished.stdout + finished.stderr))
        return results

    def logs(self, container_name: str) -> str:
        result = run(*PODMAN, "logs", container_name, check=False)
        return result.stdout + result.stderr

    def close(self) -> None:
        for pod in self.pods:
            for name in pod.containers:
                run(*PODMAN, "rm", "--force", "--time", "5", name, check=False)
        self.network.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def helm_template(values: list[str], sets: list[str], release: str, namespace: str) -> list[dict]:
    helm = REPO_ROOT / ".venv/bin/helm"
    args = [str(helm if helm.exists() else "helm"), "template", release, str(REPO_ROOT / "charts/tritonfleet"),
            "--namespace", namespace]
    for path in values:
        args += ["-f", path]
    for value in sets:
        args += ["--set", value]
    return [o for o in yaml.safe_load_all(run(*args).stdout) if o]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonfleet.chart_runner",
                                     description="Render the chart and run its pods with podman: wait "
                                                 "for their probes, run the `helm test` pods, stop.")
    parser.add_argument("-f", "--values", action="append", default=[])
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--release", default="fleet")
    parser.add_argument("--namespace", default="inference")
    parser.add_argument("--keep", action="store_true", help="keep the pods running until Ctrl-C")
    options = parser.parse_args(argv)
    reason = can_run()
    if reason:
        print(f"chart runner: {reason}", file=sys.stderr)
        return 2
    objects = helm_template(options.values, options.set, options.release, options.namespace)
    with ChartRun(objects, options.namespace) as cluster:
        for pod in cluster.start():
            cluster.wait_ready(pod)
            print(f"pod {pod.name} ready at {pod.ip}")
        failed = 0
        for name, code, log in cluster.run_tests():
            print(f"test {name}: {'passed' if code == 0 else f'FAILED ({code})'}\n{log}")
            failed += code != 0
        if options.keep:
            try:
                input("pods running; Enter stops them ")
            except (EOFError, KeyboardInterrupt):
                pass
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
