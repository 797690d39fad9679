"""A real gRPC server in front of Triton that records each call's metadata and peer address.

It forwards every KServe v2 call as raw bytes to one Triton server (ModelStreamInfer as a stream,
the rest unary), so clients and gateways see real answers and real health, while the test sees
what arrived on the wire: the custom metadata of every call and which TCP connection (the peer's
address and port) carried it.
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
        self.server.add_generic_rpc_handlers((_Forwarding(self),))
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

    def unary(self, method: str):
        def forward(request: bytes, context) -> bytes:
            self._record(method, context)
            try:
                return self.upstream.unary_unary(f"/{SERVICE}/{method}")(request, timeout=context.time_remaining())
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details())
        return forward

    def stream(self, method: str):
        def forward(requests, context):
            self._record(method, context)
            yield from self.upstream.stream_stream(f"/{SERVICE}/{method}")(requests)
        return forward

    def recorded(self, method: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.method == method]


class _Forwarding(grpc.GenericRpcHandler):
    def __init__(self, proxy: RecordingProxy):
        self.proxy = proxy

    def service(self, handler_call_details):
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        if service != SERVICE:
            return None  # UNIMPLEMENTED, as Triton itself answers
        if method == "ModelStreamInfer":
            return grpc.stream_stream_rpc_method_handler(self.proxy.stream(method))
        return grpc.unary_unary_rpc_method_handler(self.proxy.unary(method))
