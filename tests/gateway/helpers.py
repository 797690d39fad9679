"""Helpers for the gateway tests: count what each Triton server actually served, and build inputs.
The gateway and the proxies it is compared with run as real processes (tritonfleet/proxies.py)."""

from __future__ import annotations

import queue
import socket
import ssl
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from tritonfleet.proxies import GatewayProcess, wait_ready  # noqa: F401 - the gateway tests import them from here
from tritonfleet.triton_server import TritonServer

TEST_REPOSITORY = Path(__file__).resolve().parent / "model_repository"


def served(server: TritonServer, model: str) -> int:
    """Successful inferences of `model` on one server, from its own statistics."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        stats = client.get_inference_statistics(model, as_json=True)
    finally:
        client.close()
    return sum(int(entry["inference_stats"]["success"].get("count", 0)) for entry in stats["model_stats"])


def served_counts(servers: list[TritonServer], model: str) -> list[int]:
    return [served(server, model) for server in servers]


def add_one_inputs(values=(1.0, 2.0, 3.0)) -> list[grpcclient.InferInput]:
    data = np.asarray(values, dtype=np.float32)
    tensor = grpcclient.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return [tensor]


class StreamClient:
    """tritonclient's streaming API, collecting (result, error) pairs."""

    def __init__(self, url: str, **client_kwargs):
        self.client = grpcclient.InferenceServerClient(url, **client_kwargs)
        self.answers: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.answers.put((result, error)))

    def send(self, model: str, inputs, **kwargs) -> None:
        self.client.async_stream_infer(model, inputs, **kwargs)

    def close(self) -> list:
        self.client.stop_stream()  # returns once the stream has ended: every answer has arrived
        self.client.close()
        collected = []
        while not self.answers.empty():
            collected.append(self.answers.get())
        return collected


def closed_by_peer(sock: socket.socket) -> bool:
    """Read until the gateway ends the connection; a socket still open after its timeout raises."""
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass
    return True
