"""A minimal KServe v2 HTTP client (binary tensor extension) on the standard library.

The benchmark runs where only the server's wheel travels (the GPU machine has no tritonclient),
so requests are built by hand: a JSON header, then the raw input bytes, as Triton's binary data
extension describes (`Inference-Header-Content-Length`).
"""

from __future__ import annotations

import http.client
import json
import struct

import numpy as np

DTYPES = {np.dtype(np.uint8): "UINT8", np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


def bytes_tensor(items: list[bytes]) -> bytes:
    """BYTES elements serialized as Triton expects: each a 4-byte little-endian length, then the bytes."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


class InferError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class KServeClient:
    """One keep-alive connection; not thread-safe (use one per thread)."""

    def __init__(self, url: str, timeout: float = 60.0):
        host, _, port = url.partition(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def infer(self, model: str, inputs: list[tuple[str, object]], outputs: list[str], parameters: dict | None = None) -> dict:
        """inputs: (name, numpy array) or (name, list of bytes with shape [n, 1]); outputs come back as JSON."""
        header_inputs, payloads = [], []
        for name, value in inputs:
            if isinstance(value, np.ndarray):
                data, shape, dtype = np.ascontiguousarray(value).tobytes(), list(value.shape), DTYPES[value.dtype]
            else:
                data, shape, dtype = bytes_tensor(value), [len(value), 1], "BYTES"
            header_inputs.append({"name": name, "shape": shape, "datatype": dtype, "parameters": {"binary_data_size": len(data)}})
            payloads.append(data)
        header = {"inputs": header_inputs, "outputs": [{"name": n, "parameters": {"binary_data": False}} for n in outputs]}
        if parameters:
            header["parameters"] = parameters
        head = json.dumps(header).encode()
        body = head + b"".join(payloads)
        self.connection.request(
            "POST",
            f"/v2/models/{model}/infer",
            body=body,
            headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
        )
        reply = self.connection.getresponse()
        content = reply.read()
        if reply.status != 200:
            raise InferError(reply.status, content.decode(errors="replace"))
        return {o["name"]: o["data"] for o in json.loads(content)["outputs"]}

    def statistics(self, model: str) -> dict:
        self.connection.request("GET", f"/v2/models/{model}/stats")
        reply = self.connection.getresponse()
        return json.loads(reply.read())["model_stats"][0]

    def close(self) -> None:
        self.connection.close()
