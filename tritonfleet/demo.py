"""`tritonfleet demo`: start the local stack, run a short image and video load through it, report, stop.

Every request goes through the stack's front door (the gateway when the stack has one) on real
gRPC to real Triton servers. The load is bounded: a few seconds of JPEG images through the
classification pipeline, then a few camera streams through the stateful video pipeline, each
reported by the load-test harness (terminal tables, and HTML pages under `reports/`), with how the
requests were spread over the servers read from the gateway's or the servers' own metrics.

With `--tls`, a throwaway CA (trustme) issues the gateway a certificate in the work directory, the
gateway serves TLS with it, and every client of the demo trusts that CA alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from rich.console import Console

from loadtest import report
from loadtest.channels import ClientTls
from loadtest.payloads import TensorSpec, encode_jpeg, load_images
from loadtest.results import RunResult, summarize
from loadtest.runs import ImageOptions, VideoOptions, run_image, run_video
from loadtest.shape import Shape
from tritonfleet.stack import Stack
from tritonfleet.certificates import LocalCA
from tritonfleet.stack_config import StackConfig
from tritonfleet.triton_server import LOOPBACK


@dataclass(frozen=True)
class DemoLoad:
    """How much load the demo sends: small enough for two CPU cores, long enough to read."""

    image_rate: float = 3.0
    image_seconds: float = 8.0
    video_streams: int = 2
    video_fps: float = 5.0
    video_seconds: float = 8.0


@dataclass(frozen=True)
class FrontDoor:
    """Where the demo's clients connect, and the metrics that say how requests were spread."""

    url: str
    metrics_urls: list[str]
    label: str
    tls: ClientTls | None = None  # the gateway speaks TLS: the CA the clients trust

    def client(self) -> grpcclient.InferenceServerClient:
        if self.tls is None:
            return grpcclient.InferenceServerClient(self.url)
        return grpcclient.InferenceServerClient(self.url, ssl=True, root_certificates=self.tls.ca_file)


def gateway_tls(workdir: Path) -> tuple[dict[str, str], ClientTls]:
    """A throwaway CA and a gateway certificate for loopback: the gateway's environment, the clients' TLS."""
    files = LocalCA(Path(workdir) / "tls", "demo").issue("gateway", "localhost", LOOPBACK)
    environment = {"TRITONFLEET_GATEWAY_TLS_CERT_FILE": str(files.cert_file),
                   "TRITONFLEET_GATEWAY_TLS_KEY_FILE": str(files.key_file)}
    return environment, ClientTls(ca_file=str(files.ca_file))


def front_door(stack: Stack, tls: ClientTls | None = None) -> FrontDoor:
    values = stack.placeholders()
    if "gateway.grpc" in values:
        return FrontDoor(values["gateway.grpc"], [f"http://{values['gateway.metrics']}/metrics"],
                         "the gateway" + (" over TLS" if tls else ""), tls)
    servers = stack.triton_servers()
    return FrontDoor(servers[0].grpc_url, [s.metrics_url for s in servers], f"Triton server {servers[0].name}")


def classify_photo(door: FrontDoor, console: Console) -> list[str]:
    """One real request: scikit-image's astronaut photograph through image_pipeline, top-5 printed."""
    photo = load_images("skimage", 1)[0]
    tensor = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[encode_jpeg(photo)]], dtype=np.object_))
    reply = door.client().infer("image_pipeline", [tensor], client_timeout=120)
    labels = [label.decode() for label in reply.as_numpy("LABELS")[0]]
    scores = reply.as_numpy("SCORES")[0]
    console.print(f"[bold]image_pipeline[/] on a {photo.shape[1]}x{photo.shape[0]} photograph, top-5:")
    for label, score in zip(labels, scores):
        console.print(f"  {score:7.4f}  {label}")
    return labels


def image_run(door: FrontDoor, load: DemoLoad) -> RunResult:
    options = ImageOptions(
        url=door.url,
        tensor=TensorSpec("image_pipeline", "IMAGE", "BYTES"),
        shape=Shape.constant(load.image_rate, load.image_seconds),
        source="skimage",
        metrics_urls=door.metrics_urls,
        warmup_s=1.0,
        timeout_s=60.0,
        tls=door.tls,
    )
    return run_image(options)


def video_run(door: FrontDoor, load: DemoLoad) -> RunResult:
    options = VideoOptions(
        url=door.url,
        tensor=TensorSpec("video_pipeline", "FRAME", "UINT8"),
        streams=load.video_streams,
        fps=load.video_fps,
        duration_s=load.video_seconds,
        resolution="480p",
        metrics_urls=door.metrics_urls,
        warmup_s=1.0,
        timeout_s=60.0,
        tls=door.tls,
    )
    return run_video(options)


def run_demo(config: StackConfig, workdir: Path, report_dir: Path, load: DemoLoad = DemoLoad(),
             console: Console | None = None, tls: bool = False) -> int:
    console = console or Console(width=max(Console().width, 110))
    console.print(f"[bold]Starting the local stack[/] ({', '.join(s.name for s in config.services)}) ...")
    report_dir.mkdir(parents=True, exist_ok=True)
    environment, client_tls = gateway_tls(workdir) if tls else ({}, None)
    with Stack(config, workdir, environment) as stack:
        for name, reason in stack.skipped.items():
            console.print(f"[yellow]skipped {name}[/]: {reason}")
        servers = stack.triton_servers()
        console.print(f"{len(servers)} Triton servers ready: " + ", ".join(s.grpc_url for s in servers))
        door = front_door(stack, client_tls)
        console.print(f"Requests go to {door.label} at {door.url}")
        if "dashboard.http" in stack.placeholders():
            console.print(f"Live dashboard while it runs: http://{stack.placeholders()['dashboard.http']}/")
        classify_photo(door, console)
        results = {}
        for name, run in (("image", image_run), ("video", video_run)):
            console.rule(f"{name} load through {door.label}")
            result = run(door, load)
            report.render_text(result, console)
            html = report_dir / f"demo-{name}.html"
            html.write_text(report.render_html(result))
            result.save(report_dir / f"demo-{name}.json")
            console.print(f"HTML report: {html}")
            results[name] = result
    console.print("[bold]Stack stopped.[/]")
    return 0 if all(_succeeded(result) for result in results.values()) else 1


def _succeeded(result: RunResult) -> bool:
    summary = summarize(result)
    return summary.get("ok", 0) > 0 and summary.get("errors", 0) == 0
