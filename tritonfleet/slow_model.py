"""The test repositories' `slow` model (tests/gateway/model_repository/slow): how the fault bench and
its tests make one server slower than the others without restarting it."""

from __future__ import annotations

import json

import tritonclient.grpc as grpcclient

from tritonfleet.triton_server import TritonServer


def set_slow_delay(server: TritonServer, delay_ms: int) -> None:
    """Reload `slow` on one server with `delay_ms` added to every request (0: the repository's own)."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        config = client.get_model_config("slow", as_json=True)["config"]
        config["parameters"]["delay_ms"]["string_value"] = str(delay_ms)
        client.load_model("slow", config=json.dumps(config))
    finally:
        client.close()
