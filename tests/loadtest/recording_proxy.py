"""A real gRPC server in front of Triton that records each inference call's metadata and peer address.

It forwards ModelInfer and ModelStreamInfer as raw bytes to one Triton server, so the load generator
sees real answers, while the test sees what arrived on the wire: the custom metadata of every call
and which TCP connection (the peer's address and port) carried it.
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass

import grpc

SERVICE = "inference.GRPCInferenceService"
# Metadata grpcio itself adds to every call; what is left is what the client asked to send.
_TRANSPORT_KEYS = {"user-agent", "grpc-accept-encoding", "grpc-timeout", "grpc-encoding"}


@dataclass(frozen=True)
class Call:
    method: str  # "ModelInfer" or "ModelStreamInfer"
    peer: str  # "ipv4:127.0.0.1:PORT": one per client connection
    metadata: tuple[tuple[str, str], ...]


class RecordingProxy:
    def __init__(self, upstream: str):
        self.upstream = grpc.insecure_channel(upstream, options=[("grpc.max_receive_message_length", -1),
                                                                  ("grpc.max_send_message_length", -1)])
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        # Each open stream holds a thread; enough for the tests' camera counts and concurrencies.
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=[
            ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(self._infer),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(self._stream_infer),
        }),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.url = f"127.0.0.1:{port}"

    def __enter__(self) -> "RecordingProxy":
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(grace=None)
        self.upstream.close()

    def _record(self, method: str, context) -> None:
        metadata = tuple((key, value) for key, value in context.invocation_metadata() if key not in _TRANSPORT_KEYS)
        with self._lock:
            self.calls.append(Call(method, context.peer(), metadata))

    def _infer(self, request: bytes, context) -> bytes:
        self._record("ModelInfer", context)
        return self.upstream.unary_unary(f"/{SERVICE}/ModelInfer")(request, timeout=context.time_remaining())

    def _stream_infer(self, requests, context):
        self._record("ModelStreamInfer", context)
        yield from self.upstream.stream_stream(f"/{SERVICE}/ModelStreamInfer")(requests)

    def recorded(self, method: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.method == method]
