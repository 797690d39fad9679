"""HTTP/2 conformance of the gateway's connections as a server (RFC 9113; h2spec's list is the guide):
python-hyper's h2 is the client over a real loopback socket, and where a case needs bytes h2 refuses
to send, they go raw. Each case asserts the exact error code (GOAWAY for connection errors, RST_STREAM
for stream errors) and that a second, well-behaved client on another connection is still served.

The server is a `gateway.transport.connection.Connection` answering gRPC-like calls: `/echo` sends the
request's body back and ends with trailers; `/hold` never answers (its stream stays half-closed or open,
its received bytes unacknowledged, as a call waiting for its pod would be). The last cases go to the
real gateway process (its own limits from GatewayConfig's defaults), with a pod address where nothing
listens: the protocol cases need no fleet, and a well-behaved call is still answered with its status."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import threading

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest

from gateway.transport.connection import Connection
from gateway.transport.h2 import H2Limits
from tritonfleet.paths import REPO_ROOT
from tritonfleet.processes import ChildProcess
from tritonfleet.triton_server import LOOPBACK, free_port

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x5, 0x6
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x7, 0x8, 0x9, 0xB
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

LIMITS = H2Limits(max_concurrent_streams=10, max_header_list_size=8192, max_frame_size=16_384,
                  initial_window_size=1 << 17, connection_window_size=1 << 18, grant_step=1 << 16,
                  max_rapid_resets=20, rapid_reset_streams=40, max_control_frames=100)


def request(path: str = "/echo") -> list[tuple[str, str]]:
    return [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "gateway"),
            ("content-type", "application/grpc"), ("te", "trailers")]


class AnsweringConnection(Connection):
    def __init__(self):
        super().__init__(client=False, limits=LIMITS, manual_flow=True)
        self.calls: dict[int, tuple[str, bytearray]] = {}

    def on_headers(self, stream_id, headers, end_stream):
        if stream_id not in self.calls:
            self.calls[stream_id] = (dict(headers).get(":path", ""), bytearray())
        if end_stream:
            self._answer(stream_id)

    def on_data(self, stream_id, data, end_stream):
        if stream_id in self.calls:
            self.calls[stream_id][1].extend(data)
            if end_stream:
                self._answer(stream_id)

    def on_reset(self, stream_id, code):
        self.calls.pop(stream_id, None)

    def _answer(self, stream_id):
        path, body = self.calls[stream_id]
        if path != "/echo":
            return
        del self.calls[stream_id]
        self.consumed(stream_id, len(body))
        self.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")], False)
        self.send_data(stream_id, bytes(body), False)
        self.send_headers(stream_id, [("grpc-status", "0")], True)


@pytest.fixture(scope="module")
def port():
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(AnsweringConnection, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield server.sockets[0].getsockname()[1]
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


def settings(*pairs: tuple[int, int]) -> bytes:
    return b"".join(struct.pack(">HI", key, value) for key, value in pairs)


class Peer:
    """One client connection: h2 for what is well-formed, raw bytes for the rest, and the server's
    frames read back raw (h2 would refuse some of what the cases provoke)."""

    def __init__(self, port: int, handshake: bool = True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.encoder = hpack.Encoder()
        self._buffer = b""
        if handshake:
            self.send(PREFACE + frame(SETTINGS, 0, 0))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def headers(self, stream_id: int, path: str = "/echo", flags: int = END_HEADERS) -> bytes:
        return frame(HEADERS, flags, stream_id, self.encoder.encode(request(path)))

    def frames(self):
        """The server's frames as they come, until it closes the connection."""
        while True:
            while len(self._buffer) >= 9:
                size = int.from_bytes(self._buffer[:3], "big")
                if len(self._buffer) < 9 + size:
                    break
                kind, flags = self._buffer[3], self._buffer[4]
                stream_id = int.from_bytes(self._buffer[5:9], "big") & 0x7FFFFFFF
                payload, self._buffer = self._buffer[9:9 + size], self._buffer[9 + size:]
                yield kind, flags, stream_id, payload
            try:
                data = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return
            if not data:
                return
            self._buffer += data

    def goaway(self) -> tuple[int, int]:
        """The (error code, last stream id) of the server's GOAWAY; the connection must close after it."""
        for kind, _, _, payload in self.frames():
            if kind == GOAWAY:
                code = int.from_bytes(payload[4:8], "big")
                last = int.from_bytes(payload[:4], "big")
                assert list(self.frames()) == [], "frames after GOAWAY"  # and the socket closed
                return code, last
        raise AssertionError("the connection closed without GOAWAY")

    def reset_of(self, stream_id: int) -> int:
        """The error code of the server's RST_STREAM on `stream_id`."""
        for kind, _, sid, payload in self.frames():
            if kind == RST_STREAM and sid == stream_id:
                return int.from_bytes(payload, "big")
            assert kind != GOAWAY, f"GOAWAY {int.from_bytes(payload[4:8], 'big')} instead of a stream error"
        raise AssertionError(f"no RST_STREAM on stream {stream_id}")

    def ping_answered(self, payload: bytes = b"12345678") -> None:
        """A PING goes back with its ACK: the connection is still up and reading."""
        self.send(frame(PING, 0, 0, payload))
        for kind, flags, _, data in self.frames():
            assert kind != GOAWAY, f"GOAWAY {int.from_bytes(data[4:8], 'big')}"
            if kind == PING and flags & ACK and data == payload:
                return
        raise AssertionError("the connection closed instead of answering a PING")

    def close(self) -> None:
        self.sock.close()


def served(port: int, body: bytes = b"\0\0\0\0\x05hello") -> None:
    """A well-behaved h2 client on a connection of its own gets its call answered."""
    peer = Peer(port, handshake=False)
    try:
        client = peer.h2
        client.initiate_connection()
        client.send_headers(1, request())
        client.send_data(1, body, end_stream=True)
        peer.send(client.data_to_send())
        answer, ended = bytearray(), False
        while not ended:
            data = peer.sock.recv(1 << 16)
            assert data, "the server closed the connection"
            for event in client.receive_data(data):
                assert not isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)), event
                if isinstance(event, h2.events.DataReceived):
                    answer += event.data
                    client.acknowledge_received_data(event.flow_controlled_length, 1)
                ended = ended or isinstance(event, h2.events.StreamEnded)
            peer.send(client.data_to_send())
        assert bytes(answer) == body
    finally:
        peer.close()


@pytest.fixture
def peer(port):
    connection = Peer(port)
    yield connection
    connection.close()
    served(port)  # whatever this case did to its connection, another client is still served


def test_a_well_behaved_h2_client_is_served_and_told_the_limits(port):
    served(port)
    peer = Peer(port, handshake=False)
    client = peer.h2
    client.initiate_connection()
    peer.send(client.data_to_send())
    changed = {}
    while not changed:
        for event in client.receive_data(peer.sock.recv(1 << 16)):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                changed = {int(key): value.new_value for key, value in event.changed_settings.items()}
    peer.close()
    assert changed[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 10
    assert changed[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == 8192
    assert changed[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == 1 << 17


def test_a_bad_preface_is_a_protocol_error(port, peer):
    bad = Peer(port, handshake=False)
    bad.send(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n")
    assert bad.goaway() == (PROTOCOL_ERROR, 0)
    bad.close()


# ---- stream states (RFC 9113 5.1) ---------------------------------------------------------------------

@pytest.mark.parametrize("what", ["DATA", "RST_STREAM", "WINDOW_UPDATE", "CONTINUATION"])
def test_frames_on_an_idle_stream_are_a_protocol_error(peer, what):
    sent = {"DATA": frame(DATA, 0, 1, b"x"), "RST_STREAM": frame(RST_STREAM, 0, 1, CANCEL.to_bytes(4, "big")),
            "WINDOW_UPDATE": frame(WINDOW_UPDATE, 0, 1, (1).to_bytes(4, "big")),
            "CONTINUATION": frame(CONTINUATION, END_HEADERS, 1, peer.encoder.encode(request()))}[what]
    peer.send(sent)
    assert peer.goaway()[0] == PROTOCOL_ERROR


def test_an_even_stream_id_from_a_client_is_a_protocol_error(peer):
    peer.send(peer.headers(2, flags=END_HEADERS | END_STREAM))
    assert peer.goaway()[0] == PROTOCOL_ERROR


def test_a_stream_id_lower_than_the_last_is_a_protocol_error(peer):
    peer.send(peer.headers(5, "/hold") + peer.headers(3, "/hold"))
    assert peer.goaway() == (PROTOCOL_ERROR, 5)


def test_data_on_a_half_closed_stream_is_a_stream_error_and_the_connection_goes_on(peer):
    peer.send(peer.headers(1, "/hold", END_HEADERS | END_STREAM) + frame(DATA, 0, 1, b"late"))
    assert peer.reset_of(1) == STREAM_CLOSED
    peer.ping_answered()


def test_headers_on_a_half_closed_stream_are_a_stream_error(peer):
    peer.send(peer.headers(1, "/hold", END_HEADERS | END_STREAM) + peer.headers(1, "/hold", END_HEADERS | END_STREAM))
    assert peer.reset_of(1) == STREAM_CLOSED
    peer.ping_answered()


def test_data_on_a_closed_stream_is_a_stream_closed_connection_error(peer):
    peer.send(peer.headers(1, "/echo", END_HEADERS | END_STREAM))
    for kind, flags, stream_id, _ in peer.frames():  # the answer, to its trailers (the stream closed)
        if kind == HEADERS and flags & END_STREAM:
            break
    peer.send(frame(DATA, 0, 1, b"late"))
    assert peer.goaway() == (STREAM_CLOSED, 1)


def test_data_after_the_clients_own_reset_is_a_stream_closed_error(peer):
    peer.send(peer.headers(1, "/hold") + frame(RST_STREAM, 0, 1, CANCEL.to_bytes(4, "big")) + frame(DATA, 0, 1, b"x"))
    assert peer.goaway()[0] == STREAM_CLOSED


def test_trailers_without_end_stream_are_a_stream_error(peer):
    trailers = frame(HEADERS, END_HEADERS, 1, peer.encoder.encode([("x-checksum", "1")]))
    peer.send(peer.headers(1, "/hold") + trailers + trailers)
    assert peer.reset_of(1) == PROTOCOL_ERROR
    peer.ping_answered()


def test_push_promise_from_a_client_is_a_protocol_error(peer):
    peer.send(peer.headers(1, "/hold") + frame(PUSH_PROMISE, END_HEADERS, 1, (2).to_bytes(4, "big")))
    assert peer.goaway()[0] == PROTOCOL_ERROR


def test_streams_beyond_the_concurrency_limit_are_refused(peer):
    peer.send(b"".join(peer.headers(stream_id, "/hold") for stream_id in range(1, 24, 2)))  # 12 streams
    assert peer.reset_of(21) == REFUSED_STREAM
    assert peer.reset_of(23) == REFUSED_STREAM
    # Data the client sent on a refused stream before it knew is ignored; a freed place is used again.
    peer.send(frame(DATA, 0, 21, b"x") + frame(RST_STREAM, 0, 1, CANCEL.to_bytes(4, "big"))
              + peer.headers(25, "/echo", END_HEADERS | END_STREAM))
    for kind, flags, stream_id, payload in peer.frames():
        assert kind not in (GOAWAY, RST_STREAM), (kind, stream_id, payload)
        if kind == HEADERS and stream_id == 25 and flags & END_STREAM:
            break


# ---- HTTP/2 message rules (RFC 9113 8.1-8.3): a malformed request is a stream error ----------------

_GOOD = request("/hold")


@pytest.mark.parametrize("headers", [
    _GOOD + [("X-Upper", "1")],
    _GOOD + [("connection", "keep-alive")],
    _GOOD[:-1] + [("te", "gzip")],
    _GOOD[:2] + [("x-early", "1")] + _GOOD[2:],
    _GOOD + [(":status", "200")],
    _GOOD[:1] + _GOOD,
    [h for h in _GOOD if h[0] != ":path"],
    [(":path", "") if h[0] == ":path" else h for h in _GOOD],
    _GOOD + [("x-split", "a\r\nx-injected: 1")],
], ids=["upper-case-name", "connection-specific", "te-gzip", "pseudo-after-regular", "response-pseudo",
        "pseudo-twice", "no-path", "empty-path", "crlf-in-value"])
def test_a_malformed_request_is_a_stream_error(peer, headers):
    peer.send(frame(HEADERS, END_HEADERS, 1, peer.encoder.encode(headers)))
    assert peer.reset_of(1) == PROTOCOL_ERROR
    peer.ping_answered()


def test_pseudo_headers_in_trailers_are_a_stream_error(peer):
    peer.send(peer.headers(1, "/hold")
              + frame(HEADERS, END_HEADERS | END_STREAM, 1, peer.encoder.encode([(":path", "/other")])))
    assert peer.reset_of(1) == PROTOCOL_ERROR
    peer.ping_answered()


# ---- flow control (RFC 9113 6.9) -----------------------------------------------------------------------

def test_a_window_update_beyond_2_31_on_the_connection_is_a_flow_control_error(peer):
    peer.send(frame(WINDOW_UPDATE, 0, 0, (0x7FFFFFFF).to_bytes(4, "big")))
    assert peer.goaway()[0] == FLOW_CONTROL_ERROR


def test_a_window_update_beyond_2_31_on_a_stream_is_a_stream_error(peer):
    peer.send(peer.headers(1, "/hold") + frame(WINDOW_UPDATE, 0, 1, (0x7FFFFFFF).to_bytes(4, "big")))
    assert peer.reset_of(1) == FLOW_CONTROL_ERROR
    peer.ping_answered()


def test_a_window_update_of_zero_on_the_connection_is_a_protocol_error(peer):
    peer.send(frame(WINDOW_UPDATE, 0, 0, (0).to_bytes(4, "big")))
    assert peer.goaway()[0] == PROTOCOL_ERROR


def test_data_beyond_a_streams_window_is_a_flow_control_error_of_that_stream(peer):
    # The server holds what /hold received (unacknowledged), so the stream's 128 KiB window stays spent.
    window = LIMITS.initial_window_size
    data = b"".join(frame(DATA, 0, 1, bytes(16_384)) for _ in range(window // 16_384))
    peer.send(peer.headers(1, "/hold") + data + frame(DATA, 0, 1, b"x"))
    assert peer.reset_of(1) == FLOW_CONTROL_ERROR
    peer.ping_answered()


def test_data_beyond_the_connection_window_is_a_flow_control_error(peer):
    streams = LIMITS.connection_window_size // LIMITS.initial_window_size  # each filling its own window
    data = b"".join(peer.headers(stream_id, "/hold")
                    + b"".join(frame(DATA, 0, stream_id, bytes(16_384))
                               for _ in range(LIMITS.initial_window_size // 16_384))
                    for stream_id in range(1, 2 * streams, 2))
    peer.send(data + peer.headers(2 * streams + 1, "/hold") + frame(DATA, 0, 2 * streams + 1, b"x"))
    assert peer.goaway()[0] == FLOW_CONTROL_ERROR


def test_settings_raising_a_streams_window_beyond_2_31_is_a_flow_control_error(peer):
    peer.send(peer.headers(1, "/hold") + frame(WINDOW_UPDATE, 0, 1, (0x7FFFFFFF - 65_535).to_bytes(4, "big"))
              + frame(SETTINGS, 0, 0, settings((0x4, 65_536))))
    assert peer.goaway()[0] == FLOW_CONTROL_ERROR


# ---- frame sizes and header blocks ---------------------------------------------------------------------

def test_a_frame_larger_than_announced_is_a_frame_size_error(peer):
    peer.send(peer.headers(1, "/hold") + frame(DATA, 0, 1, bytes(16_385)))
    assert peer.goaway()[0] == FRAME_SIZE_ERROR


def test_a_frame_header_announcing_a_huge_frame_is_refused_before_its_payload_arrives(peer):
    peer.send(b"\xff\xff\xff" + bytes((HEADERS, END_HEADERS)) + (1).to_bytes(4, "big"))
    assert peer.goaway()[0] == FRAME_SIZE_ERROR


@pytest.mark.parametrize("kind, payload", [(PING, b"1234567"), (WINDOW_UPDATE, b"\0\0\1"), (RST_STREAM, b"\0\0\0")],
                         ids=["PING", "WINDOW_UPDATE", "RST_STREAM"])
def test_fixed_size_frames_of_another_size_are_a_frame_size_error(peer, kind, payload):
    stream_id = 0 if kind in (PING, WINDOW_UPDATE) else 1
    peer.send(peer.headers(1, "/hold") + frame(kind, 0, stream_id, payload))
    assert peer.goaway()[0] == FRAME_SIZE_ERROR


def test_a_continuation_flood_is_cut_off_when_the_block_passes_the_header_list_limit(peer):
    # Empty CONTINUATION frames add nothing to the block, but their frame headers count.
    peer.send(frame(HEADERS, 0, 1, peer.encoder.encode(request("/hold"))))
    flood = frame(CONTINUATION, 0, 1) * 2000
    try:
        peer.send(flood)
    except OSError:
        pass  # the server may have closed while the flood was still being written
    assert peer.goaway()[0] == ENHANCE_YOUR_CALM


def test_a_header_block_larger_than_the_header_list_limit_is_refused(peer):
    block = peer.encoder.encode(request("/hold") + [("x-big", "v" * 9000)])
    peer.send(frame(HEADERS, 0, 1, block[:8000]) + frame(CONTINUATION, END_HEADERS, 1, block[8000:]))
    assert peer.goaway()[0] == ENHANCE_YOUR_CALM


def test_a_small_block_that_decodes_to_a_huge_header_list_is_refused(peer):
    # One 4 KB header in the table, then a block of references to it: a few bytes, 400 KB of headers.
    first = peer.encoder.encode(request("/hold") + [("x-big", "v" * 4000)])
    peer.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, first))
    index = bytes((0x80 | 62,))  # the newest dynamic-table entry: x-big (it evicted the others)
    peer.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, index * 100 + peer.encoder.encode(request("/hold"))))
    assert peer.goaway()[0] == ENHANCE_YOUR_CALM


@pytest.mark.parametrize("cut", [9, 4], ids=["whole-frame-header", "frame-header-in-two-reads"])
def test_a_header_frame_longer_than_a_header_list_may_be_is_refused_before_its_payload(peer, cut):
    header = struct.pack(">I", 16_000)[1:] + bytes((HEADERS, END_HEADERS)) + (1).to_bytes(4, "big")
    if cut < 9:  # a PING and the start of the frame header in one read, the rest in the next
        peer.send(frame(PING, 0, 0, b"87654321") + header[:cut])
        for kind, flags, _, payload in peer.frames():
            if kind == PING and flags & ACK:
                break
    peer.send(header[cut:] if cut < 9 else header)
    assert peer.goaway()[0] == ENHANCE_YOUR_CALM  # the 16,000 bytes it announces never come


def test_a_header_block_interrupted_by_another_frame_is_a_protocol_error(peer):
    block = peer.encoder.encode(request("/hold"))
    peer.send(frame(HEADERS, 0, 1, block[:5]) + frame(PING, 0, 0, b"12345678")
              + frame(CONTINUATION, END_HEADERS, 1, block[5:]))
    assert peer.goaway()[0] == PROTOCOL_ERROR


def test_a_header_block_that_does_not_decode_is_a_compression_error(peer):
    peer.send(frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\xff\xff"))
    assert peer.goaway()[0] == COMPRESSION_ERROR


# ---- SETTINGS, PING and resets used as weapons ---------------------------------------------------------

@pytest.mark.parametrize("setting, code", [
    ((0x2, 2), PROTOCOL_ERROR),  # ENABLE_PUSH other than 0 or 1
    ((0x4, 1 << 31), FLOW_CONTROL_ERROR),  # INITIAL_WINDOW_SIZE beyond 2^31-1
    ((0x5, 16_383), PROTOCOL_ERROR),  # MAX_FRAME_SIZE below the smallest allowed
    ((0x5, 1 << 24), PROTOCOL_ERROR),  # MAX_FRAME_SIZE beyond the largest allowed
], ids=["enable-push-2", "initial-window-2^31", "max-frame-16383", "max-frame-2^24"])
def test_invalid_settings_are_refused_with_their_error(peer, setting, code):
    peer.send(frame(SETTINGS, 0, 0, settings(setting)))
    assert peer.goaway()[0] == code


def test_malformed_settings_frames_are_refused(port, peer):
    peer.send(frame(SETTINGS, 0, 0, b"\0\x04\0\0"))  # not a multiple of 6 bytes
    assert peer.goaway()[0] == FRAME_SIZE_ERROR
    other = Peer(port)
    other.send(frame(SETTINGS, 0, 1, settings((0x4, 65_535))))  # on a stream
    assert other.goaway()[0] == PROTOCOL_ERROR
    other.close()
    acked = Peer(port)
    acked.send(frame(SETTINGS, ACK, 0, settings((0x4, 65_535))))  # an acknowledgement with a payload
    assert acked.goaway()[0] == FRAME_SIZE_ERROR
    acked.close()


@pytest.mark.parametrize("flood", ["PING", "SETTINGS"])
def test_a_ping_or_settings_flood_is_enhance_your_calm(peer, flood):
    one = frame(PING, 0, 0, b"12345678") if flood == "PING" else frame(SETTINGS, 0, 0, settings((0x4, 65_535)))
    try:
        peer.send(one * (LIMITS.max_control_frames + 1))
    except OSError:
        pass
    assert peer.goaway()[0] == ENHANCE_YOUR_CALM


def test_pings_between_calls_are_not_a_flood(peer):
    for stream_id in range(1, 8, 2):
        peer.send(frame(PING, 0, 0, b"12345678") * (LIMITS.max_control_frames // 2)
                  + peer.headers(stream_id, "/echo", END_HEADERS | END_STREAM))
    peer.ping_answered()


def test_rapid_reset_is_enhance_your_calm(peer):
    opened_and_reset = b"".join(peer.headers(stream_id, "/hold")
                                + frame(RST_STREAM, 0, stream_id, CANCEL.to_bytes(4, "big"))
                                for stream_id in range(1, 2 * (LIMITS.max_rapid_resets + 1), 2))
    peer.send(opened_and_reset)
    code, last = peer.goaway()
    assert (code, last) == (ENHANCE_YOUR_CALM, 2 * LIMITS.max_rapid_resets + 1)


def test_resets_spread_over_many_answered_calls_are_not_rapid_reset(peer):
    # Every other stream reset: at most half of any window of streams, under the limit.
    for stream_id in range(1, 4 * LIMITS.rapid_reset_streams, 4):
        peer.send(peer.headers(stream_id, "/hold") + frame(RST_STREAM, 0, stream_id, CANCEL.to_bytes(4, "big"))
                  + peer.headers(stream_id + 2, "/echo", END_HEADERS | END_STREAM))
    peer.ping_answered()


# ---- the gateway process itself ------------------------------------------------------------------------

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def gateway_port(tmp_path_factory):
    port, nothing_there = free_port(), free_port()
    argv = [sys.executable, "-m", "tritonfleet.cli", "gateway", "--listen", f"{LOOPBACK}:{port}",
            "--metrics-port", str(free_port()), "--backend", f"{LOOPBACK}:{nothing_there}"]
    gateway = ChildProcess("gateway", argv, tmp_path_factory.mktemp("gateway") / "gateway.log", cwd=REPO_ROOT)
    try:
        gateway.wait_listening(f"{LOOPBACK}:{port}", timeout=30)
        yield port
    finally:
        gateway.stop()


def answered_by_the_gateway(port: int) -> str:
    """A well-behaved h2 client's ModelInfer call; the grpc-status the gateway ends it with."""
    peer = Peer(port, handshake=False)
    try:
        client = peer.h2
        client.initiate_connection()
        client.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", MODEL_INFER),
                                (":authority", "gateway"), ("content-type", "application/grpc"), ("te", "trailers"),
                                ("grpc-timeout", "2S")])
        message = b"\n\x05model"  # ModelInferRequest{model_name: "model"}
        client.send_data(1, b"\0" + len(message).to_bytes(4, "big") + message, end_stream=True)
        peer.send(client.data_to_send())
        while True:
            data = peer.sock.recv(1 << 16)
            assert data, "the gateway closed the connection"
            for event in client.receive_data(data):
                assert not isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)), event
                if isinstance(event, (h2.events.TrailersReceived, h2.events.ResponseReceived)):
                    status = dict(event.headers).get("grpc-status")
                    if status is not None:
                        return status
            peer.send(client.data_to_send())
    finally:
        peer.close()


@pytest.fixture
def gateway_peer(gateway_port):
    connection = Peer(gateway_port)
    connection.encoder = hpack.Encoder()
    yield connection
    connection.close()
    # No pod serves the model (NOT_FOUND) or none is reachable (UNAVAILABLE): either way, answered.
    assert answered_by_the_gateway(gateway_port) in ("5", "14")


def _gateway_headers(peer: Peer, stream_id: int, flags: int = END_HEADERS) -> bytes:
    headers = [(":method", "POST"), (":scheme", "http"), (":path", MODEL_INFER), (":authority", "gateway"),
               ("content-type", "application/grpc"), ("te", "trailers")]
    return frame(HEADERS, flags, stream_id, peer.encoder.encode(headers))


def test_the_gateway_refuses_a_bad_preface(gateway_port, gateway_peer):
    bad = Peer(gateway_port, handshake=False)
    bad.send(b"GET /metrics HTTP/1.1\r\nHost: gateway\r\n\r\n")
    assert bad.goaway() == (PROTOCOL_ERROR, 0)
    bad.close()


def test_the_gateway_cuts_off_a_continuation_flood(gateway_peer):
    gateway_peer.send(_gateway_headers(gateway_peer, 1, flags=0))
    try:
        gateway_peer.send(frame(CONTINUATION, 0, 1, b"\x40\x01a\x01b") * 20_000)
    except OSError:
        pass
    assert gateway_peer.goaway()[0] == ENHANCE_YOUR_CALM


def test_the_gateway_cuts_off_rapid_reset(gateway_peer):
    limits = H2Limits()  # the gateway's defaults
    opened_and_reset = b"".join(_gateway_headers(gateway_peer, stream_id)
                                + frame(RST_STREAM, 0, stream_id, CANCEL.to_bytes(4, "big"))
                                for stream_id in range(1, 2 * (limits.max_rapid_resets + 1), 2))
    gateway_peer.send(opened_and_reset)
    assert gateway_peer.goaway() == (ENHANCE_YOUR_CALM, 2 * limits.max_rapid_resets + 1)


def test_the_gateway_cuts_off_a_ping_flood(gateway_peer):
    try:
        gateway_peer.send(frame(PING, 0, 0, b"12345678") * (H2Limits().max_control_frames + 1))
    except OSError:
        pass
    assert gateway_peer.goaway()[0] == ENHANCE_YOUR_CALM


def test_the_gateway_resets_a_malformed_request_and_serves_the_connection_on(gateway_peer):
    headers = [(":method", "POST"), (":scheme", "http"), (":path", MODEL_INFER), ("Content-Type", "application/grpc")]
    gateway_peer.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, gateway_peer.encoder.encode(headers)))
    assert gateway_peer.reset_of(1) == PROTOCOL_ERROR
    gateway_peer.ping_answered()


def test_the_gateway_refuses_oversize_frames(gateway_peer):
    gateway_peer.send(_gateway_headers(gateway_peer, 1) + frame(DATA, 0, 1, bytes(H2Limits().max_frame_size + 1)))
    assert gateway_peer.goaway()[0] == FRAME_SIZE_ERROR
