"""The gateway's limits at the edge, each against three real Triton servers and a gateway process:
message size, the buffered-bytes budget, streams per connection, frozen and idle clients, load
shedding, max connection age, a burst of calls opened at once. Raw HTTP/2 clients (a plain socket) show what grpcio clients hide: when the
gateway answers, and which frames it sends."""

from __future__ import annotations

import asyncio
import socket
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import hpack
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from gateway.transport.h2 import (CANCEL, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, NO_ERROR, PING, PREFACE, REFUSED_STREAM,
                                  RST_STREAM, SETTINGS, SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_UPDATE, frame,
                                  settings_payload, window_update)
from tests.gateway.helpers import GatewayProcess, add_one_inputs
from tests.gateway.polling import metric, wait_for

pytestmark = pytest.mark.slow
RESOURCE_EXHAUSTED = "StatusCode.RESOURCE_EXHAUSTED"


def gateway_with(fleet, tmp_path, **settings) -> GatewayProcess:
    env = {f"TRITONFLEET_GATEWAY_{key.upper()}": str(value) for key, value in settings.items()}
    return GatewayProcess([s.grpc_url for s in fleet], tmp_path / "gateway.log", env=env)


def slow_inputs(delay_ms: int) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("INPUT0", [1], "FP32")
    tensor.set_data_from_numpy(np.ones(1, dtype=np.float32))
    delay = grpcclient.InferInput("DELAY_MS", [1], "INT32")
    delay.set_data_from_numpy(np.array([delay_ms], dtype=np.int32))
    return [tensor, delay]


def infer_outcome(url: str, model: str, inputs) -> str:
    """'OK', or the status of the call's error (with its message)."""
    client = grpcclient.InferenceServerClient(url)
    try:
        client.infer(model, inputs, client_timeout=60)
        return "OK"
    except InferenceServerException as exc:
        return f"{exc.status()} {exc.message()}"
    finally:
        client.close()


class RawClient:
    """An HTTP/2 client on a plain socket: it sends exactly the frames a test writes, and reads the
    gateway's frames only when the test asks (a client that stops reading is one that never asks)."""

    def __init__(self, url: str, receive_window: int = 0):
        """`receive_window`: the window this client opens for the gateway's answers (0: HTTP/2's 64 KiB)."""
        host, _, port = url.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=20)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self._buffer = b""
        settings = settings_payload({SETTINGS_INITIAL_WINDOW_SIZE: receive_window}) if receive_window else b""
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings)
                          + (window_update(0, receive_window) if receive_window else b""))

    def open(self, stream_id: int, method: str = "ModelInfer", body: bytes | None = None, end: bool = False) -> None:
        headers = [(":method", "POST"), (":scheme", "http"), (":path", f"/inference.GRPCInferenceService/{method}"),
                   (":authority", "gateway"), ("content-type", "application/grpc"), ("te", "trailers")]
        out = frame(HEADERS, END_HEADERS, stream_id, self.encoder.encode(headers))
        if body is not None:
            out += frame(DATA, END_STREAM if end else 0, stream_id, body)
        self.sock.sendall(out)

    def frames(self):
        """The gateway's frames as they come, until it closes the connection."""
        while True:
            while len(self._buffer) >= 9:
                size = int.from_bytes(self._buffer[:3], "big")
                if len(self._buffer) < 9 + size:
                    break
                kind, flags = self._buffer[3], self._buffer[4]
                stream_id = int.from_bytes(self._buffer[5:9], "big") & 0x7FFFFFFF
                payload, self._buffer = self._buffer[9:9 + size], self._buffer[9 + size:]
                if kind == HEADERS:
                    payload = dict(self.decoder.decode(payload))
                if kind == PING and not flags & 1:
                    self.sock.sendall(frame(PING, 1, 0, payload))
                yield kind, flags, stream_id, payload
            try:
                data = self.sock.recv(1 << 16)
            except (ConnectionResetError, TimeoutError):
                return
            if not data:
                return
            self._buffer += data

    def trailers(self, stream_id: int) -> dict:
        for kind, flags, sid, payload in self.frames():
            if kind == HEADERS and sid == stream_id and flags & END_STREAM:
                return payload
        raise AssertionError(f"no trailers on stream {stream_id}")

    def resets(self, stream_ids: set[int]) -> dict[int, int]:
        """The RST_STREAM codes of these streams, once each has one."""
        found: dict[int, int] = {}
        for kind, _, sid, payload in self.frames():
            if kind == RST_STREAM and sid in stream_ids:
                found[sid] = int.from_bytes(payload, "big")
                if found.keys() == stream_ids:
                    return found
        raise AssertionError(f"RST_STREAM only on {sorted(found)} of {sorted(stream_ids)}")

    def close(self) -> None:
        self.sock.close()


def test_an_oversize_message_is_refused_from_its_prefix_while_another_client_is_served(fleet3, tmp_path):
    with gateway_with(fleet3, tmp_path, max_message_bytes=1 << 20) as gateway:
        # Only the 5-byte prefix of a 300 MiB message is sent: the answer comes before any of its bytes.
        raw = RawClient(gateway.url)
        raw.open(1, body=b"\x00" + (300 << 20).to_bytes(4, "big"))
        trailers = raw.trailers(1)
        assert trailers["grpc-status"] == "8", trailers  # RESOURCE_EXHAUSTED
        assert "larger than the gateway's limit of 1048576 bytes" in urllib.parse.unquote(trailers["grpc-message"])
        assert raw.resets({1}) == {1: 0}  # NO_ERROR: the client is told to stop sending the rest
        # A grpcio client sending a whole 4 MiB message gets the same status; another client is served.
        big = grpcclient.InferInput("INPUT0", [1 << 20], "FP32")
        big.set_data_from_numpy(np.ones(1 << 20, dtype=np.float32))
        with ThreadPoolExecutor(2) as pool:
            refused = pool.submit(infer_outcome, gateway.url, "add_one", [big])
            served = pool.submit(infer_outcome, gateway.url, "add_one", add_one_inputs())
            assert refused.result().startswith(RESOURCE_EXHAUSTED), refused.result()
            assert served.result() == "OK"
        raw.close()
        assert metric(gateway.metrics_url, "tritonfleet_gateway_refusals_total", reason="message_too_large") == 2


def _add_one_message(elements: int) -> bytes:
    request = service_pb2.ModelInferRequest(model_name="add_one")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[elements])
    request.raw_input_contents.append(np.ones(elements, dtype=np.float32).tobytes())
    body = request.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


def test_over_the_buffered_bytes_budget_clients_get_no_more_window_until_calls_release_bytes(fleet3, tmp_path):
    """Four 7 MiB requests on one connection, sent as fast as flow control allows, against a budget of
    8 MiB: once the gateway holds more, it grants no window back, and the client stops with bytes
    unsent; when three calls are cancelled (their bytes released), the window comes back and the
    fourth request is completed and answered."""
    budget = 8 << 20
    with gateway_with(fleet3, tmp_path, max_message_bytes=budget, max_buffered_bytes=budget) as gateway:
        withheld = "tritonfleet_gateway_withheld_bytes"
        client = RawClient(gateway.url, receive_window=1 << 30)
        client.sock.settimeout(0.2)
        streams = (1, 3, 5, 7)
        unsent = {stream_id: memoryview(_add_one_message(7 << 18)) for stream_id in streams}
        for stream_id in streams:
            client.open(stream_id)
        window = 65_535  # the connection's send window; each stream's own (16 MiB) is larger than a request
        answers: dict[int, dict] = {}

        def send_within_window() -> None:
            nonlocal window
            while window and unsent:
                for stream_id in list(unsent):
                    size = min(16_384, window, len(unsent[stream_id]))
                    piece, unsent[stream_id] = unsent[stream_id][:size], unsent[stream_id][size:]
                    window -= size
                    done = not unsent[stream_id]
                    client.sock.sendall(frame(DATA, END_STREAM if done else 0, stream_id, bytes(piece)))
                    if done:
                        del unsent[stream_id]

        def read_what_came() -> None:
            nonlocal window
            for kind, flags, stream_id, payload in client.frames():
                if kind == WINDOW_UPDATE and stream_id == 0:
                    window += int.from_bytes(payload, "big")
                elif kind == HEADERS and flags & END_STREAM:
                    answers[stream_id] = payload

        def stuck() -> bool:
            send_within_window()
            read_what_came()  # until a read finds nothing for a moment
            return not window and bool(unsent) and metric(gateway.metrics_url, withheld) > 0

        assert wait_for(stuck, timeout=60), f"the client sent everything: window {window}, unsent {len(unsent)}"
        assert metric(gateway.metrics_url, "tritonfleet_gateway_buffered_bytes") <= budget + (16 << 20)
        client.sock.sendall(b"".join(frame(RST_STREAM, 0, stream_id, CANCEL.to_bytes(4, "big")) for stream_id in (1, 3, 5)))
        for stream_id in (1, 3, 5):
            unsent.pop(stream_id, None)

        def answered() -> bool:
            send_within_window()
            read_what_came()
            return 7 in answers

        assert wait_for(answered, timeout=60), f"no answer: window {window}, unsent {[len(v) for v in unsent.values()]}"
        assert answers[7].get("grpc-status") == "0", answers[7]
        assert wait_for(lambda: metric(gateway.metrics_url, withheld) == 0)
        client.close()


def test_streams_above_the_per_connection_limit_are_refused_and_grpc_clients_retry_them(fleet3, tmp_path):
    with gateway_with(fleet3, tmp_path, max_concurrent_streams=4) as gateway:
        # Six calls opened at once, none finished: the two beyond the limit are refused.
        raw = RawClient(gateway.url)
        for stream_id in range(1, 13, 2):
            raw.open(stream_id)
        assert raw.resets({9, 11}) == {9: REFUSED_STREAM, 11: REFUSED_STREAM}
        raw.close()

        # A grpcio client with 24 slow calls at once on one channel: every one is answered.
        async def burst():
            async with aioclient.InferenceServerClient(gateway.url) as client:
                async def one(value: int):
                    tensor = aioclient.InferInput("INPUT0", [1], "FP32")
                    tensor.set_data_from_numpy(np.array([value], dtype=np.float32))
                    delay = aioclient.InferInput("DELAY_MS", [1], "INT32")
                    delay.set_data_from_numpy(np.array([100], dtype=np.int32))
                    result = await client.infer("slow", [tensor, delay])
                    return result.as_numpy("OUTPUT0").tolist()

                return await asyncio.gather(*(one(v) for v in range(24)))

        assert asyncio.run(burst()) == [[v + 1.0] for v in range(24)]


def test_a_frozen_client_is_reclaimed_and_its_calls_are_freed(fleet3, tmp_path):
    with gateway_with(fleet3, tmp_path, client_keepalive_time_s=0.5, client_keepalive_timeout_s=0.5) as gateway:
        streams = "tritonfleet_gateway_client_streams"
        # Eight calls whose messages never complete, then the client stops reading (and so answering).
        frozen = RawClient(gateway.url)
        for stream_id in range(1, 17, 2):
            frozen.open(stream_id, body=b"\x00\x00\x00\x01\x00")
        assert wait_for(lambda: metric(gateway.metrics_url, streams) == 8), metric(gateway.metrics_url, streams)
        assert wait_for(lambda: metric(gateway.metrics_url, streams) == 0), "the frozen client's calls are still open"
        assert metric(gateway.metrics_url, "tritonfleet_gateway_client_disconnects_total", reason="ping_timeout") == 1
        frozen.close()
        # A client that answers the pings keeps its connection through a call longer than the timeouts.
        assert infer_outcome(gateway.url, "slow", slow_inputs(2000)) == "OK"
        assert metric(gateway.metrics_url, "tritonfleet_gateway_client_disconnects_total", reason="ping_timeout") == 1


def test_a_client_with_no_call_open_for_the_idle_timeout_is_sent_goaway_and_let_go(fleet3, tmp_path):
    with gateway_with(fleet3, tmp_path, client_idle_timeout_s=0.5) as gateway:
        idle = RawClient(gateway.url)
        idle.open(1, body=_add_one_message(3), end=True)
        assert idle.trailers(1).get("grpc-status") == "0"
        # Then nothing: GOAWAY (naming the last call, which was served), and the gateway closes its side.
        goaways = [(int.from_bytes(p[:4], "big"), int.from_bytes(p[4:8], "big"))
                   for kind, _, _, p in idle.frames() if kind == GOAWAY]
        assert goaways == [(1, NO_ERROR)], goaways
        idle.close()
        assert metric(gateway.metrics_url, "tritonfleet_gateway_client_disconnects_total", reason="idle") == 1
        assert wait_for(lambda: metric(gateway.metrics_url, "tritonfleet_gateway_client_connections") == 0)


def test_load_shedding_answers_resource_exhausted_at_once_when_every_pod_is_saturated(fleet3, tmp_path):
    with gateway_with(fleet3, tmp_path, max_inflight_per_backend=1, queue_timeout_s=60,
                      max_queued_requests=1) as gateway:
        with ThreadPoolExecutor(8) as pool:
            # Three pods with one request each, and one request waiting for room: the fleet is full.
            held = [pool.submit(infer_outcome, gateway.url, "slow", slow_inputs(6000)) for _ in range(3)]
            assert wait_for(lambda: metric(gateway.metrics_url, "tritonfleet_gateway_inflight") == 3)
            held.append(pool.submit(infer_outcome, gateway.url, "slow", slow_inputs(6000)))
            assert wait_for(lambda: metric(gateway.metrics_url, "tritonfleet_gateway_queued_requests") == 1)
            shed = [pool.submit(infer_outcome, gateway.url, "slow", slow_inputs(10)) for _ in range(4)]
            outcomes = [call.result() for call in shed]
            # Refused while the first calls still run (they take seconds more): not after a wait.
            assert not any(call.done() for call in held[:3]), "the shed calls waited for the fleet"
            assert [call.result() for call in held] == ["OK"] * 4
    assert all(o.startswith(RESOURCE_EXHAUSTED) and "already wait for room" in o for o in outcomes), outcomes


def test_max_connection_age_sends_goaway_and_the_channel_reconnects_without_failed_calls(fleet3, tmp_path):
    with gateway_with(fleet3, tmp_path, max_connection_age_s=0.5, max_connection_age_grace_s=5) as gateway:
        aged = "tritonfleet_gateway_client_disconnects_total"
        client = grpcclient.InferenceServerClient(gateway.url)
        outcomes: list[str] = []

        def one_more() -> bool:
            try:
                client.infer("add_one", add_one_inputs())
                outcomes.append("OK")
            except InferenceServerException as exc:
                outcomes.append(exc.status())
            return metric(gateway.metrics_url, aged, reason="max_age") >= 3

        assert wait_for(one_more, timeout=30, interval=0), "no connection reached its max age"
        client.close()
        assert set(outcomes) == {"OK"}, [o for o in outcomes if o != "OK"]
        # Each aged connection was replaced by a new one from the same channel.
        assert metric(gateway.metrics_url, "tritonfleet_gateway_client_connections") <= 1


def test_a_burst_of_calls_opened_at_once_all_succeed(fleet3, tmp_path):
    """Clients reconnecting together after a restart: 400 calls at once over 4 channels, and 100 streams
    opened at once, each with one message; every one is answered."""
    with gateway_with(fleet3, tmp_path, max_concurrent_streams=100) as gateway:
        async def burst():
            clients = [aioclient.InferenceServerClient(gateway.url) for _ in range(4)]

            async def one(client, value: int):
                tensor = aioclient.InferInput("INPUT0", [1], "FP32")
                tensor.set_data_from_numpy(np.array([value], dtype=np.float32))
                result = await client.infer("add_one", [tensor])
                return result.as_numpy("OUTPUT0").tolist()

            async def stream(client, value: int):
                tensor = aioclient.InferInput("INPUT0", [1], "FP32")
                tensor.set_data_from_numpy(np.array([value], dtype=np.float32))

                async def requests():
                    yield {"model_name": "add_one", "inputs": [tensor], "request_id": str(value)}

                async for result, error in client.stream_infer(requests()):
                    assert error is None, error
                    return result.as_numpy("OUTPUT0").tolist()

            try:
                unary = [one(clients[v % 4], v) for v in range(400)]
                streams = [stream(clients[v % 4], v) for v in range(100)]
                return await asyncio.gather(*unary, *streams, return_exceptions=True)
            finally:
                for client in clients:
                    await client.close()

        results = asyncio.run(burst())
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures[:3]
        assert results == [[v + 1.0] for v in range(400)] + [[v + 1.0] for v in range(100)]
