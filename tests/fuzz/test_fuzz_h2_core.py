"""Fuzzing the sans-IO HTTP/2 core (gateway.transport.h2) as a server: frame sequences built with
hyperframe (well-typed frames with arbitrary fields, and raw frames hyperframe would refuse to build),
and raw bytes, fed after the preface.

Whatever comes in: `receive_data` raises nothing and returns only the events of
gateway.transport.events; a ConnectionFailed is answered with a GOAWAY carrying its code, after which
nothing more is read; what the connection holds (streams, remembered closed streams, a held partial
frame, a header block being continued) and what it answers stay within its limits; and the same bytes
cut into other reads give the same events.
"""

from __future__ import annotations

import hpack
import hyperframe.frame as hf
from hyperframe.exceptions import HyperframeError
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.transport import events as h2_events
from gateway.transport.h2 import (GOAWAY, PREFACE, ConnectionFailed, DataReceived, H2Connection, H2Limits,
                                  HeadersReceived)
from tests.fuzz.profiles import examples

# Small limits, so the fuzzer reaches them (each limit is crossed within a few frames).
LIMITS = H2Limits(max_concurrent_streams=4, max_header_list_size=1024, max_frame_size=16_384,
                  initial_window_size=65_535, connection_window_size=65_535, grant_step=4096,
                  max_rapid_resets=3, rapid_reset_streams=6, max_control_frames=8, closed_streams_remembered=16)
EVENT_TYPES = tuple(cls for cls in vars(h2_events).values()
                    if isinstance(cls, type) and issubclass(cls, h2_events.Event) and cls is not h2_events.Event)

REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/inference.GRPCInferenceService/ModelInfer"),
           (":authority", "gateway"), ("content-type", "application/grpc"), ("te", "trailers")]

stream_ids = st.one_of(st.sampled_from((0, 1, 2, 3, 5, 7, 9)), st.integers(0, (1 << 31) - 1))
flags = st.sets(st.sampled_from(("END_STREAM", "END_HEADERS", "PADDED", "PRIORITY", "ACK")))
header_lists = st.one_of(
    st.just(REQUEST),
    st.just([("grpc-status", "0")]),  # trailers
    st.lists(st.tuples(st.sampled_from((":method", ":path", ":scheme", ":status", "te", "Upper", "connection", "x")),
                       st.text(max_size=8)), max_size=6),
)


@st.composite
def typed_frames(draw) -> bytes:
    """A frame of each type hyperframe knows, its fields drawn freely (hyperframe checks only some)."""
    kind = draw(st.sampled_from(sorted(hf.FRAMES)))
    try:
        frame = hf.FRAMES[kind](draw(stream_ids))
    except HyperframeError:  # a stream id hyperframe refuses for this type: the frame goes raw
        return draw(raw_frames())
    frame.flags = set(draw(flags)) & set(frame.defined_flags and [f.name for f in frame.defined_flags])
    if kind in (0, 9):
        frame.data = draw(st.binary(max_size=300))
    if kind == 0 and "PADDED" in frame.flags:
        frame.pad_length = draw(st.integers(0, 255))
    if kind == 1:
        frame.data = hpack.Encoder().encode(draw(header_lists))
    if kind in (1, 2):
        frame.depends_on, frame.stream_weight = draw(stream_ids), draw(st.integers(0, 255))
    if kind == 3:
        frame.error_code = draw(st.integers(0, 0xFF))
    if kind == 4 and "ACK" not in frame.flags:
        frame.settings = draw(st.dictionaries(st.integers(0, 8), st.integers(0, (1 << 32) - 1), max_size=4))
    if kind == 5:
        frame.promised_stream_id = draw(stream_ids)
    if kind == 6:
        frame.opaque_data = draw(st.binary(min_size=8, max_size=8))
    if kind == 7:
        frame.last_stream_id, frame.error_code = draw(stream_ids), draw(st.integers(0, 0xFF))
    if kind == 8:
        frame.window_increment = draw(st.integers(0, (1 << 31) - 1))
    try:
        return frame.serialize()
    except (HyperframeError, ValueError, OverflowError):  # fields hyperframe refuses: sent raw instead
        return draw(raw_frames())


@st.composite
def raw_frames(draw) -> bytes:
    """Nine bytes of header and a payload, any type (unknown ones too), flags and length field."""
    payload = draw(st.binary(max_size=64))
    length = draw(st.one_of(st.just(len(payload)), st.integers(0, (1 << 24) - 1)))
    return (length.to_bytes(3, "big") + bytes((draw(st.integers(0, 12)), draw(st.integers(0, 255))))
            + draw(stream_ids).to_bytes(4, "big") + payload)


frame_sequences = st.lists(st.one_of(typed_frames(), raw_frames()), max_size=30)


def server() -> H2Connection:
    connection = H2Connection(client=False, limits=LIMITS, manual_flow=True)
    connection.initiate_connection()
    connection.data_to_send()
    return connection


def goaway_codes(output: bytes) -> list[int]:
    """The error codes of the GOAWAY frames in what the server wrote."""
    codes, at = [], 0
    while at + 9 <= len(output):
        length = int.from_bytes(output[at : at + 3], "big")
        if output[at + 3] == GOAWAY:
            codes.append(int.from_bytes(output[at + 13 : at + 17], "big"))
        at += 9 + length
    assert at == len(output), "the server wrote a partial frame"
    return codes


def check_bounded(connection: H2Connection) -> None:
    limits = connection.limits
    assert len(connection.streams) <= limits.max_concurrent_streams
    assert len(connection._closed) <= limits.closed_streams_remembered  # noqa: SLF001
    assert connection._reader._held_size <= limits.max_frame_size + 9  # noqa: SLF001
    continuation = connection._continuation  # noqa: SLF001
    assert continuation is None or len(continuation[2]) <= limits.max_header_list_size


def feed(connection: H2Connection, data: bytes) -> list:
    """Feed `data`, checking every documented outcome; the events."""
    was_failed = connection.failed is not None
    # Answers of ours waiting for window go out when the peer opens it: owed to us, not to the peer.
    answers_waiting = bool(connection._blocked)  # noqa: SLF001
    events = connection.receive_data(data)
    output = b"".join(bytes(chunk) for chunk in connection.data_to_send())
    assert all(isinstance(event, EVENT_TYPES) for event in events), events
    if was_failed:
        assert events == [] and output == b"", "a failed connection went on reading"
    failures = [event for event in events if isinstance(event, ConnectionFailed)]
    assert len(failures) <= 1
    if failures:
        assert events[-1] is failures[0], "events after the connection failed"
        assert goaway_codes(output)[-1:] == [failures[0].error_code] == [connection.failed]
    else:
        goaway_codes(output)
    # Every answer is owed to something the peer sent: what we write stays proportional to it, but
    # for one GOAWAY (its reason is at most 256 bytes).
    assert answers_waiting or len(output) <= 2 * len(data) + 17 + 256
    check_bounded(connection)
    return events


def normalized(events: list) -> list:
    """Events with each stream's consecutive DATA pieces joined: how a read was cut does not matter."""
    out: list = []
    for event in events:
        if isinstance(event, DataReceived):
            if out and out[-1][0] == "data" and out[-1][1] == event.stream_id and not out[-1][3]:
                out[-1] = ("data", event.stream_id, out[-1][2] + bytes(event.data), event.end_stream)
                continue
            out.append(("data", event.stream_id, bytes(event.data), event.end_stream))
        else:
            out.append((type(event).__name__, repr(event)))
    return out


@settings(max_examples=examples(300, 3_000))
@given(frame_sequences)
def test_any_frame_sequence_gives_documented_events_or_a_goaway(frames):
    connection = server()
    feed(connection, PREFACE)
    for data in frames:
        feed(connection, data)


@settings(max_examples=examples(150, 2_000))
@given(st.binary(max_size=512), st.booleans())
def test_raw_bytes_give_documented_events_or_a_goaway(data, after_preface):
    connection = server()
    events = feed(connection, (PREFACE if after_preface else b"") + data)
    if not after_preface and not PREFACE.startswith(data[: len(PREFACE)]):
        assert isinstance(events[-1], ConnectionFailed), "bytes that are not the preface were read on"


@settings(max_examples=examples(150, 2_000))
@given(frame_sequences, st.lists(st.integers(1, 400), min_size=1, max_size=20))
def test_the_same_bytes_cut_into_other_reads_give_the_same_events(frames, cuts):
    data = PREFACE + b"".join(frames)
    whole = server()
    expected = normalized(feed(whole, data))
    pieces = server()
    got, at, index = [], 0, 0
    while at < len(data):
        size = cuts[index % len(cuts)]
        got += feed(pieces, data[at : at + size])
        at, index = at + size, index + 1
    assert normalized(got) == expected
    assert pieces.failed == whole.failed


class ServerConnection(RuleBasedStateMachine):
    """A peer that mostly follows the protocol (opens streams, sends bodies, resets, pings, changes
    settings) while the server answers some of its streams, with a malformed frame now and then."""

    def __init__(self):
        super().__init__()
        self.connection = server()
        self.encoder = hpack.Encoder()
        self.next_stream = 1
        self.open: set[int] = set()
        feed(self.connection, PREFACE + hf.SettingsFrame(0).serialize())

    def send(self, frame: hf.Frame) -> list:
        events = feed(self.connection, frame.serialize())
        for event in events:
            if isinstance(event, HeadersReceived) and not event.end_stream:
                self.open.add(event.stream_id)
        return events

    @precondition(lambda self: self.connection.failed is None)
    @rule(end_stream=st.booleans())
    def open_stream(self, end_stream):
        frame = hf.HeadersFrame(self.next_stream, self.encoder.encode(REQUEST))
        frame.flags = {"END_HEADERS"} | ({"END_STREAM"} if end_stream else set())
        self.next_stream += 2
        self.send(frame)

    @precondition(lambda self: self.open)
    @rule(data=st.data(), size=st.integers(0, 20_000), end_stream=st.booleans())
    def send_body(self, data, size, end_stream):
        stream_id = data.draw(st.sampled_from(sorted(self.open)))
        frame = hf.DataFrame(stream_id, bytes(size))
        frame.flags = {"END_STREAM"} if end_stream else set()
        self.send(frame)
        self.connection.acknowledge_received_data(size, stream_id)
        if end_stream:
            self.open.discard(stream_id)

    @precondition(lambda self: self.open)
    @rule(data=st.data(), code=st.integers(0, 13))
    def reset(self, data, code):
        stream_id = data.draw(st.sampled_from(sorted(self.open)))
        self.open.discard(stream_id)
        self.send(hf.RstStreamFrame(stream_id, error_code=code))

    @rule(data=st.data())
    def answer(self, data):
        """The server answers one of its streams (the gateway relaying a pod's answer)."""
        streams = sorted(self.connection.streams)
        if streams:
            stream_id = data.draw(st.sampled_from(streams))
            self.connection.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
            self.connection.send_data(stream_id, bytes(data.draw(st.integers(0, 100_000))))
            self.connection.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)
            self.connection.data_to_send()

    @rule(increment=st.integers(1, 1 << 20), stream_id=st.sampled_from((0, 1, 3)))
    def window_update(self, increment, stream_id):
        self.send(hf.WindowUpdateFrame(stream_id, window_increment=increment))

    @rule(window=st.integers(0, (1 << 31) - 1))
    def settings(self, window):
        self.send(hf.SettingsFrame(0, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: window}))

    @rule(opaque=st.binary(min_size=8, max_size=8))
    def ping(self, opaque):
        self.send(hf.PingFrame(0, opaque_data=opaque))

    @rule(frame=st.one_of(typed_frames(), raw_frames()))
    def anything(self, frame):
        feed(self.connection, frame)

    @invariant()
    def bounded(self):
        check_bounded(self.connection)


TestServerConnection = ServerConnection.TestCase
TestServerConnection.settings = settings(max_examples=examples(40, 300), stateful_step_count=30)
