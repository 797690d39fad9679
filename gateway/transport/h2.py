"""HTTP/2 (RFC 9113) without I/O: bytes in, events out, bytes to send.

`H2Connection` is one side of one connection, its API modeled on python-hyper h2's: `receive_data`
turns what the peer sent into events, the send methods queue frames, `data_to_send` hands over what
to write (chunks: large DATA payloads are never copied). Each stream is a `Stream` (its windows, what
waits for window, what was received but not acknowledged yet). The asyncio side lives in
`gateway.transport.connection`.

Received DATA payloads are views of the bytes passed to `receive_data` (no copy): a payload longer than
what one call brought is delivered in pieces, one per call. Received bytes are granted back to the peer
in `grant_step` steps: at once, or with `manual_flow` only once the upper layer acknowledges them
(`acknowledge_received_data`), so what a peer may have buffered in us is bounded by what we granted.

As a server the core refuses what RFC 9113 tells a server to refuse (h2spec's list is the guide:
frames on idle or closed streams, window overflows, invalid settings, malformed requests), and bounds
what costs us without costing the peer (`H2Limits`): frames larger than we announced, header
blocks larger than the header-list limit (CONTINUATION floods), streams beyond the concurrency limit
(REFUSED_STREAM), rapid resets (CVE-2023-44487) and PING/SETTINGS floods (ENHANCE_YOUR_CALM).

Frames are built in `frames`, header blocks encoded and decoded (cached) in `header_blocks`, and the
events are those of `events`; the names callers need are importable from here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import hpack

from gateway.transport.events import (ConnectionFailed, ConnectionTerminated, DataReceived, Event,  # noqa: F401
                                      HeadersReceived, PingAckReceived, RemoteSettingsChanged, SettingsAcknowledged,
                                      StreamReset, WindowUpdated)
from gateway.transport.frames import (ACK, CANCEL, COMPRESSION_ERROR, CONTINUATION, DATA, DEFAULT_MAX_FRAME,
                                      DEFAULT_WINDOW, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, FLOW_CONTROL_ERROR,
                                      FRAME_SIZE_ERROR, GOAWAY, HEADERS, INTERNAL_ERROR, LARGEST_MAX_FRAME,
                                      MAX_STREAM_ID, MAX_WINDOW, NO_ERROR, PADDED, PING, PREFACE, PRIORITY,
                                      PRIORITY_FLAG, PROTOCOL_ERROR, PUSH_PROMISE, REFUSED_STREAM, RST_STREAM,
                                      SETTINGS, SETTINGS_ENABLE_PUSH, SETTINGS_HEADER_TABLE_SIZE,
                                      SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_CONCURRENT_STREAMS,
                                      SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE, STREAM_CLOSED,
                                      WINDOW_UPDATE, H2Error, frame, frame_header, rst_stream, settings_payload,
                                      unpad, window_update)
from gateway.transport.header_blocks import (HeaderDecoder, _integer, encode_headers, request_problem,  # noqa: F401
                                             trailers_problem)
from gateway.transport.reader import FrameReader


@dataclass(frozen=True)
class H2Limits:
    """What one connection allows its peer. Sizes in bytes; the windows are what the peer may send
    before we grant more, so with manual flow control they bound what a peer can make us buffer."""

    max_concurrent_streams: int = 1000  # announced; a stream beyond it is refused (REFUSED_STREAM)
    max_header_list_size: int = 1 << 16  # announced; also bounds a header block's bytes on the wire
    max_frame_size: int = 1 << 20  # announced; a larger frame ends the connection (FRAME_SIZE_ERROR)
    initial_window_size: int = 1 << 24  # each stream's receive window
    connection_window_size: int = 1 << 24
    # Received bytes are granted back once this many are free, so most calls send no WINDOW_UPDATE.
    grant_step: int = 1 << 20
    # Rapid reset: more than this many of the peer's streams reset by the peer before we answered them,
    # among the latest `rapid_reset_streams` streams it opened, end the connection (ENHANCE_YOUR_CALM).
    max_rapid_resets: int = 500
    rapid_reset_streams: int = 1000
    # PING and SETTINGS frames (each costs us an answer) in a row without HEADERS or DATA in between,
    # either way (peers ping in answer to what they receive: BDP probes).
    max_control_frames: int = 1000
    # Streams remembered after they closed, so late frames on them are told from frames on streams
    # that never were (frames on a stream we reset are ignored, as RFC 9113 5.1 asks).
    closed_streams_remembered: int = 4096

    def __post_init__(self) -> None:
        if not DEFAULT_MAX_FRAME <= self.max_frame_size <= LARGEST_MAX_FRAME:
            raise ValueError(f"max_frame_size must be within {DEFAULT_MAX_FRAME}..{LARGEST_MAX_FRAME}, "
                             f"not {self.max_frame_size}")
        for name in ("initial_window_size", "connection_window_size"):
            if not DEFAULT_WINDOW <= getattr(self, name) <= MAX_WINDOW:
                raise ValueError(f"{name} must be within {DEFAULT_WINDOW}..{MAX_WINDOW}, not {getattr(self, name)}")
        if not 0 < self.grant_step <= min(self.initial_window_size, self.connection_window_size):
            raise ValueError("grant_step must be positive and at most the receive windows")
        for name in ("max_concurrent_streams", "max_header_list_size", "max_rapid_resets", "rapid_reset_streams",
                     "max_control_frames", "closed_streams_remembered"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")


# ---- streams and the connection ---------------------------------------------------------------------

class Stream:
    """One stream's state. `send_window`: what the peer lets us send; `receive_window`: what we let
    the peer send; `unacknowledged`: received bytes the upper layer still holds (manual flow control);
    `pending`: HEADERS blocks and DATA views waiting for send window, in order."""

    __slots__ = ("stream_id", "send_window", "receive_window", "unacknowledged", "granted_back", "pending",
                 "headers_received", "local_closed", "remote_closed", "reset", "peer_initiated")

    def __init__(self, stream_id: int, send_window: int, receive_window: int, peer_initiated: bool):
        self.stream_id = stream_id
        self.send_window = send_window
        self.receive_window = receive_window
        self.unacknowledged = 0
        self.granted_back = 0  # acknowledged bytes not granted yet (they go in grant_step steps)
        self.pending: deque | None = None
        self.headers_received = False
        self.local_closed = False  # we sent END_STREAM
        self.remote_closed = False  # the peer sent END_STREAM
        self.reset = False  # we reset it: what the peer still sends on it is dropped
        self.peer_initiated = peer_initiated


# Why a stream is remembered as closed: frames the peer sent before it saw our RST_STREAM are ignored.
_RESET_BY_US, _ENDED = True, False


class H2Connection:
    """One HTTP/2 connection without I/O; `client` says which side of it we are."""

    def __init__(self, client: bool, limits: H2Limits | None = None, manual_flow: bool = False):
        self.client = client
        self.limits = limits = limits or H2Limits()
        self.manual_flow = manual_flow
        self.streams: dict[int, Stream] = {}
        self.decoder = HeaderDecoder(limits.max_header_list_size)
        self.failed: int | None = None  # the GOAWAY code we ended the connection with
        self.last_peer_stream = 0
        self.last_local_stream = 0
        # Sending: the peer's settings and connection window; streams whose output waits for window.
        self.send_window = DEFAULT_WINDOW
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = DEFAULT_MAX_FRAME
        self.peer_max_concurrent_streams: int | None = None
        self._blocked: dict[int, Stream] = {}
        self._table_size_update: int | None = None  # a smaller table the peer asked for, told in the next block
        # Receiving: our connection window, and acknowledged bytes not granted back yet.
        self.receive_window = DEFAULT_WINDOW
        self._granted_back = 0
        self._closed: dict[int, bool] = {}
        self._peer_streams = 0  # open streams the peer initiated (the concurrency limit counts these)
        self._opened = 0  # streams the peer ever opened
        self._early_resets: deque[int] = deque()  # for each recent rapid reset, `_opened` when it came
        self._control_frames = 0
        self._reader = FrameReader(self, not client, limits.max_frame_size, limits.max_header_list_size)
        self._continuation: list | None = None  # [stream_id, flags, block, bytes on the wire, depends_on_itself]
        self._events: list[Event] = []
        # Output: chunks queued since the last data_to_send().
        self._out: list = []
        self.output_size = 0

    # ---- output --------------------------------------------------------------------------------------

    def _send(self, chunk) -> None:
        self._out.append(chunk)
        self.output_size += len(chunk)

    def data_to_send(self) -> list:
        """What to write, as a list of chunks (bytes, or memoryviews of what send_data was given)."""
        out, self._out = self._out, []
        self.output_size = 0
        return out

    def initiate_connection(self) -> None:
        limits = self.limits
        settings = {SETTINGS_INITIAL_WINDOW_SIZE: limits.initial_window_size,
                    SETTINGS_MAX_FRAME_SIZE: limits.max_frame_size,
                    SETTINGS_MAX_HEADER_LIST_SIZE: limits.max_header_list_size}
        if self.client:
            settings[SETTINGS_ENABLE_PUSH] = 0
        else:
            settings[SETTINGS_MAX_CONCURRENT_STREAMS] = limits.max_concurrent_streams
        start = PREFACE if self.client else b""
        grow = limits.connection_window_size - DEFAULT_WINDOW
        self._send(start + frame(SETTINGS, 0, 0, settings_payload(settings))
                   + (window_update(0, grow) if grow else b""))
        self.receive_window += grow

    # ---- receiving -----------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """The events in `data` (what the peer sent next), in order. DATA payloads are views of `data`."""
        if self.failed is not None:
            return []
        self._events = events = []
        try:
            self._reader.feed(data)
        except H2Error as exc:
            self._fail(exc.code, str(exc))
        except hpack.OversizedHeaderListError as exc:
            self._fail(ENHANCE_YOUR_CALM, f"header list larger than {self.limits.max_header_list_size} bytes: {exc}")
        except hpack.HPACKError as exc:
            self._fail(COMPRESSION_ERROR, f"header block does not decode: {exc}")
        return events

    def _fail(self, code: int, reason: str) -> None:
        self.close_connection(code, reason.encode()[:256])
        self.failed = code
        self._events.append(ConnectionFailed(code, reason))

    # ---- frames in (from the FrameReader) ------------------------------------------------------------

    def data_begins(self, flags: int, stream_id: int, length: int) -> Stream | None:
        """A DATA frame whose payload is still arriving: the stream to deliver its pieces on, or None."""
        return self._data_start(flags, stream_id, length)

    def data_piece(self, stream: Stream | None, stream_id: int, piece, end: bool) -> None:
        if stream is not None and not stream.reset:
            self._events.append(DataReceived(stream_id, piece, end))

    def data_in(self, flags: int, stream_id: int, payload) -> None:
        stream = self._data_start(flags, stream_id, len(payload))
        if stream is None:
            return
        body = unpad(flags, payload)
        if len(body) != len(payload):  # padding is ours to grant back: the upper layer never sees it
            self._acknowledge(stream, len(payload) - len(body))
        self._events.append(DataReceived(stream_id, body, bool(flags & END_STREAM)))

    def _data_start(self, flags: int, stream_id: int, length: int) -> Stream | None:
        """Account a DATA frame of `length` bytes; the stream to deliver it on, None to drop it."""
        if self._continuation is not None:
            raise H2Error(PROTOCOL_ERROR, "a header block was interrupted")
        if stream_id == 0:
            raise H2Error(PROTOCOL_ERROR, "DATA on stream 0")
        self._control_frames = 0
        if length > self.receive_window:
            raise H2Error(FLOW_CONTROL_ERROR, f"DATA of {length} bytes beyond the connection window "
                                              f"of {self.receive_window}")
        self.receive_window -= length
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            self._granted_back += length  # nobody will acknowledge these: grant them back ourselves
            self._grant_connection()
            if stream is None:
                self._on_unknown_stream(stream_id, "DATA")
            else:
                self._reset(stream, STREAM_CLOSED)
            return None
        if length > stream.receive_window:
            self._granted_back += length
            self._grant_connection()
            self._reset(stream, FLOW_CONTROL_ERROR)
            return None
        stream.receive_window -= length
        if flags & END_STREAM:
            stream.remote_closed = True
            if stream.local_closed:
                self._close(stream, _ENDED)
        if self.manual_flow:
            stream.unacknowledged += length
        else:
            self._acknowledge(stream, length)
        return stream

    def _on_unknown_stream(self, stream_id: int, what: str) -> None:
        """A frame for a stream we do not hold: ignored if we reset it, else a connection error."""
        closed = self._closed.get(stream_id)
        if closed is _RESET_BY_US:
            return
        if closed is _ENDED:
            raise H2Error(STREAM_CLOSED, f"{what} on closed stream {stream_id}")
        if self._idle(stream_id):
            raise H2Error(PROTOCOL_ERROR, f"{what} on idle stream {stream_id}")
        if (stream_id & 1) == (1 if self.client else 0):
            return  # one we opened and closed so long ago that it is no longer remembered
        raise H2Error(PROTOCOL_ERROR, f"{what} on stream {stream_id}, which was never opened")

    def _idle(self, stream_id: int) -> bool:
        if (stream_id & 1) == (1 if self.client else 0):  # one of ours
            return stream_id > self.last_local_stream
        return stream_id > self.last_peer_stream

    def frame_in(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuation is not None and kind != CONTINUATION:
            raise H2Error(PROTOCOL_ERROR, "a header block was interrupted")
        if kind == HEADERS:
            self._headers_frame(flags, stream_id, payload)
        elif kind == CONTINUATION:
            self._continuation_frame(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == PING:
            self._ping(flags, stream_id, payload)
        elif kind == RST_STREAM:
            self._rst_stream(stream_id, payload)
        elif kind == GOAWAY:
            if stream_id != 0:
                raise H2Error(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise H2Error(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
            self._events.append(ConnectionTerminated(int.from_bytes(payload[4:8], "big"),
                                                     int.from_bytes(payload[:4], "big") & MAX_STREAM_ID,
                                                     payload[8:]))
        elif kind == PRIORITY:
            self._priority(stream_id, payload)
        elif kind == PUSH_PROMISE:
            raise H2Error(PROTOCOL_ERROR, "server push is turned off")
        # Unknown frame types are ignored (RFC 9113 4.1).

    def _headers_frame(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise H2Error(PROTOCOL_ERROR, "HEADERS on stream 0")
        self._control_frames = 0
        block = unpad(flags, payload)
        depends_on_itself = False
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise H2Error(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            depends_on_itself = int.from_bytes(block[:4], "big") & MAX_STREAM_ID == stream_id
            block = block[5:]
        if len(block) > self.limits.max_header_list_size:
            raise H2Error(ENHANCE_YOUR_CALM, f"a header block larger than {self.limits.max_header_list_size} bytes")
        if flags & END_HEADERS:
            self._header_block(stream_id, flags, block, depends_on_itself)
        else:
            self._continuation = [stream_id, flags, bytearray(block), 9 + len(payload), depends_on_itself]

    def _continuation_frame(self, flags: int, stream_id: int, payload: bytes) -> None:
        continuation = self._continuation
        if continuation is None or continuation[0] != stream_id:
            raise H2Error(PROTOCOL_ERROR, f"CONTINUATION on stream {stream_id} without its HEADERS")
        continuation[2] += payload
        # The block's bytes on the wire, frame headers included: empty CONTINUATIONs count too.
        continuation[3] += 9 + len(payload)
        if continuation[3] > self.limits.max_header_list_size:
            raise H2Error(ENHANCE_YOUR_CALM, f"a header block larger than {self.limits.max_header_list_size} bytes")
        if flags & END_HEADERS:
            self._continuation = None
            self._header_block(stream_id, continuation[1], bytes(continuation[2]), continuation[4])

    def _header_block(self, stream_id: int, flags: int, block: bytes, depends_on_itself: bool) -> None:
        # Every block is decoded, even one for a stream that is then refused: it may change the table.
        stream = self.streams.get(stream_id)
        if self.client:
            headers, problem = self.decoder.decode(block), None
        else:  # a request, or its trailers, must follow HTTP/2's message rules
            check = request_problem if stream is None else trailers_problem
            headers, problem = self.decoder.decode_checked(block, check)
        end_stream = bool(flags & END_STREAM)
        if stream is None:
            stream = self._new_peer_stream(stream_id)
            if stream is None:
                return
        elif stream.remote_closed:
            self._reset(stream, STREAM_CLOSED)
            return
        elif stream.headers_received and not end_stream:
            self._reset(stream, PROTOCOL_ERROR)  # trailers must end the stream
            return
        if depends_on_itself or problem:
            self._reset(stream, PROTOCOL_ERROR)
            return
        stream.headers_received = True
        if end_stream:
            stream.remote_closed = True
        self._events.append(HeadersReceived(stream_id, headers, end_stream))
        if end_stream and stream.local_closed:
            self._close(stream, _ENDED)

    def _new_peer_stream(self, stream_id: int) -> Stream | None:
        """A stream the peer opens with HEADERS, or None when it is refused or ignored."""
        if self.client or not stream_id & 1:
            if stream_id in self._closed or not self._idle(stream_id):
                self._on_unknown_stream(stream_id, "HEADERS")
                return None
            raise H2Error(PROTOCOL_ERROR, f"HEADERS opening stream {stream_id}, an id the peer may not use")
        if stream_id <= self.last_peer_stream:
            self._on_unknown_stream(stream_id, "HEADERS")
            return None
        self.last_peer_stream = stream_id
        self._opened += 1
        if self._peer_streams >= self.limits.max_concurrent_streams:
            self._send(rst_stream(stream_id, REFUSED_STREAM))
            self._remember_closed(stream_id, _RESET_BY_US)
            return None
        stream = Stream(stream_id, self.peer_initial_window, self.limits.initial_window_size, True)
        self.streams[stream_id] = stream
        self._peer_streams += 1
        return stream

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Error(FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes long")
        increment = int.from_bytes(payload, "big") & MAX_WINDOW
        if stream_id == 0:
            if increment == 0:
                raise H2Error(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            if self.send_window + increment > MAX_WINDOW:
                raise H2Error(FLOW_CONTROL_ERROR, "the connection's send window grew beyond 2^31-1")
            self.send_window += increment
            self._events.append(WindowUpdated(0, increment))
            self._resume_all()
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if self._idle(stream_id):
                raise H2Error(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return  # a closed stream: the peer sent it before it knew
        if increment == 0:
            self._reset(stream, PROTOCOL_ERROR)
        elif stream.send_window + increment > MAX_WINDOW:
            self._reset(stream, FLOW_CONTROL_ERROR)
        else:
            stream.send_window += increment
            self._events.append(WindowUpdated(stream_id, increment))
            if stream.pending:
                self._resume(stream)

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise H2Error(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise H2Error(FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload")
            self._events.append(SettingsAcknowledged())
            return
        if len(payload) % 6:
            raise H2Error(FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes long")
        self._count_control_frame("SETTINGS")
        changed: dict[int, int] = {}
        for offset in range(0, len(payload), 6):
            key = int.from_bytes(payload[offset : offset + 2], "big")
            value = int.from_bytes(payload[offset + 2 : offset + 6], "big")
            self._setting(key, value)
            changed[key] = value
        self._send(frame(SETTINGS, ACK, 0))
        self._events.append(RemoteSettingsChanged(changed))
        self._resume_all()

    def _setting(self, key: int, value: int) -> None:
        if key == SETTINGS_INITIAL_WINDOW_SIZE:
            if value > MAX_WINDOW:
                raise H2Error(FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE {value} beyond 2^31-1")
            delta = value - self.peer_initial_window
            self.peer_initial_window = value
            for stream in self.streams.values():
                stream.send_window += delta
                if stream.send_window > MAX_WINDOW:
                    raise H2Error(FLOW_CONTROL_ERROR, f"stream {stream.stream_id}'s send window grew beyond 2^31-1")
        elif key == SETTINGS_MAX_FRAME_SIZE:
            if not DEFAULT_MAX_FRAME <= value <= LARGEST_MAX_FRAME:
                raise H2Error(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
            self.peer_max_frame = value
        elif key == SETTINGS_ENABLE_PUSH:
            if value > 1 or (self.client and value):
                raise H2Error(PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value}")
        elif key == SETTINGS_MAX_CONCURRENT_STREAMS:
            self.peer_max_concurrent_streams = value
        elif key == SETTINGS_HEADER_TABLE_SIZE and value < 4096:
            self._table_size_update = value
        # Unknown settings are ignored (RFC 9113 6.5.2).

    def _count_control_frame(self, what: str) -> None:
        """PING and SETTINGS cost us an answer each: a run of them with no stream activity is a flood."""
        self._control_frames += 1
        if self._control_frames > self.limits.max_control_frames:
            raise H2Error(ENHANCE_YOUR_CALM, f"more than {self.limits.max_control_frames} PING/SETTINGS "
                                             f"frames without a stream frame between them (last: {what})")

    def _ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise H2Error(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise H2Error(FRAME_SIZE_ERROR, "PING not 8 bytes long")
        if flags & ACK:
            self._events.append(PingAckReceived(payload))
            return
        self._count_control_frame("PING")
        self._send(frame(PING, ACK, 0, payload))

    def _rst_stream(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Error(FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes long")
        if stream_id == 0:
            raise H2Error(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        stream = self.streams.get(stream_id)
        if stream is None:
            if self._idle(stream_id):
                raise H2Error(PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
            return
        code = int.from_bytes(payload, "big")
        early = stream.peer_initiated and not stream.local_closed
        self._close(stream, _ENDED)
        self._events.append(StreamReset(stream_id, code, True))
        if early:
            self._count_rapid_reset()

    def _count_rapid_reset(self) -> None:
        """CVE-2023-44487: a peer that opens streams and resets them before we answer makes us start
        work at no cost to itself. Too many such resets among its latest streams end the connection."""
        resets = self._early_resets
        resets.append(self._opened)
        oldest = self._opened - self.limits.rapid_reset_streams
        while resets[0] <= oldest:
            resets.popleft()
        if len(resets) > self.limits.max_rapid_resets:
            raise H2Error(ENHANCE_YOUR_CALM, f"more than {self.limits.max_rapid_resets} of the latest "
                                             f"{self.limits.rapid_reset_streams} streams reset before an answer")

    def _priority(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 5:
            raise H2Error(FRAME_SIZE_ERROR, "PRIORITY not 5 bytes long")
        if stream_id == 0:
            raise H2Error(PROTOCOL_ERROR, "PRIORITY on stream 0")
        if int.from_bytes(payload[:4], "big") & MAX_STREAM_ID == stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                self._reset(stream, PROTOCOL_ERROR)
            else:
                self._send(rst_stream(stream_id, PROTOCOL_ERROR))

    # ---- flow control of what we receive -------------------------------------------------------------

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None:
        """The upper layer no longer holds `acknowledged_size` bytes received on `stream_id` (manual
        flow control): they are granted back to the peer, in grant_step steps."""
        if self.failed is not None or acknowledged_size <= 0:
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.unacknowledged = max(0, stream.unacknowledged - acknowledged_size)
        self._acknowledge(stream, acknowledged_size)

    def _acknowledge(self, stream: Stream | None, size: int) -> None:
        self._granted_back += size
        self._grant_connection()
        if stream is None or stream.remote_closed:
            return  # the stream will receive nothing more: its window needs no grant
        stream.granted_back += size
        if stream.granted_back >= self.limits.grant_step:
            self._send(window_update(stream.stream_id, stream.granted_back))
            stream.receive_window += stream.granted_back
            stream.granted_back = 0

    def _grant_connection(self) -> None:
        if self._granted_back >= self.limits.grant_step:
            self._send(window_update(0, self._granted_back))
            self.receive_window += self._granted_back
            self._granted_back = 0

    # ---- sending -------------------------------------------------------------------------------------

    def open_stream(self, stream_id: int) -> Stream:
        """Open a stream of ours (as a client: a request); headers and data follow."""
        stream = self.streams.get(stream_id)
        if stream is None:
            stream = Stream(stream_id, self.peer_initial_window, self.limits.initial_window_size, False)
            self.streams[stream_id] = stream
            self.last_local_stream = max(self.last_local_stream, stream_id)
        return stream

    def _sendable(self, stream_id: int) -> Stream | None:
        stream = self.streams.get(stream_id)
        if stream is None and self.failed is None and self.client and stream_id > self.last_local_stream:
            stream = self.open_stream(stream_id)
        if stream is None or stream.local_closed or self.failed is not None:
            return None  # closed meanwhile (reset, or the connection failed): nothing more goes on it
        return stream

    def send_headers(self, stream_id: int, headers, end_stream: bool = False) -> None:
        """A header block, after any DATA of the stream still waiting for window."""
        stream = self._sendable(stream_id)
        if stream is None:
            return
        block = encode_headers(headers)
        if self._table_size_update is not None:
            block = _integer(self._table_size_update, 5, 0x20) + block
            self._table_size_update = None
        if stream.pending:
            stream.pending.append((None, block, end_stream))
            return
        self._headers_out(stream, block, end_stream)

    def _headers_out(self, stream: Stream, block: bytes, end_stream: bool) -> None:
        self._control_frames = 0  # the peer's PINGs and SETTINGS may well answer what we send
        flags = END_STREAM if end_stream else 0
        limit = self.peer_max_frame
        if len(block) <= limit:
            self._send(frame(HEADERS, flags | END_HEADERS, stream.stream_id, block))
        else:
            pieces = [block[offset : offset + limit] for offset in range(0, len(block), limit)]
            self._send(frame(HEADERS, flags, stream.stream_id, pieces[0]))
            for index, piece in enumerate(pieces[1:], 2):
                self._send(frame(CONTINUATION, END_HEADERS if index == len(pieces) else 0, stream.stream_id, piece))
        if end_stream:
            self._local_end(stream)

    def send_data(self, stream_id: int, data, end_stream: bool = False) -> None:
        """DATA within the peer's windows; what does not fit waits on the stream until they open."""
        stream = self._sendable(stream_id)
        if stream is None:
            return
        view = data if type(data) is memoryview else memoryview(data)
        if stream.pending:
            stream.pending.append((view, None, end_stream))
            return
        rest = self._data_out(stream, view, end_stream)
        if rest is not None:
            stream.pending = deque([(rest, None, end_stream)])
            self._blocked[stream_id] = stream

    def _data_out(self, stream: Stream, view: memoryview, end_stream: bool) -> memoryview | None:
        """Send as much of `view` as the windows allow; the rest, or None when all of it went."""
        stream_id = stream.stream_id
        self._control_frames = 0
        while True:
            window = min(self.send_window, stream.send_window, self.peer_max_frame)
            size = min(len(view), window)
            if size < len(view) and size <= 0:
                return view
            last = size == len(view)
            self._send(frame_header(DATA, END_STREAM if end_stream and last else 0, stream_id, size))
            if size:
                self._send(view if last else view[:size])
            self.send_window -= size
            stream.send_window -= size
            if last:
                if end_stream:
                    self._local_end(stream)
                return None
            view = view[size:]

    def _resume_all(self) -> None:
        for stream in list(self._blocked.values()):
            self._resume(stream)
            if self.send_window <= 0:
                break

    def _resume(self, stream: Stream) -> None:
        pending = stream.pending
        while pending:
            view, block, end_stream = pending[0]
            if block is not None:
                pending.popleft()
                self._headers_out(stream, block, end_stream)
                continue
            rest = self._data_out(stream, view, end_stream)
            if rest is not None:
                pending[0] = (rest, None, end_stream)
                return
            pending.popleft()
        stream.pending = None
        self._blocked.pop(stream.stream_id, None)

    def _local_end(self, stream: Stream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            self._close(stream, _ENDED)

    def reset_stream(self, stream_id: int, error_code: int = CANCEL) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._close(stream, _RESET_BY_US)
        elif stream_id in self._closed or self.failed is not None:
            return  # already gone: one RST_STREAM is enough
        else:
            self._remember_closed(stream_id, _RESET_BY_US)
        self._send(rst_stream(stream_id, error_code))

    def _reset(self, stream: Stream, code: int) -> None:
        """A stream error (RFC 9113 5.4.2): RST_STREAM, and the upper layer is told."""
        self._close(stream, _RESET_BY_US)
        self._send(rst_stream(stream.stream_id, code))
        self._events.append(StreamReset(stream.stream_id, code, False))

    def _close(self, stream: Stream, how: bool) -> None:
        if self.streams.pop(stream.stream_id, None) is None:
            return
        self._blocked.pop(stream.stream_id, None)
        stream.pending = None
        if stream.peer_initiated:
            self._peer_streams -= 1
        stream.reset = how is _RESET_BY_US
        self._remember_closed(stream.stream_id, how)

    def _remember_closed(self, stream_id: int, how: bool) -> None:
        closed = self._closed
        closed[stream_id] = how
        if len(closed) > self.limits.closed_streams_remembered:
            del closed[next(iter(closed))]

    def ping(self, payload: bytes) -> None:
        """A PING with 8 bytes of `payload`, which the peer sends back in its ACK."""
        self._send(frame(PING, 0, 0, payload))

    def close_connection(self, error_code: int = NO_ERROR, additional_data: bytes = b"",
                         last_stream_id: int | None = None) -> None:
        """GOAWAY: streams above `last_stream_id` (default: the last the peer opened) were not processed."""
        if self.failed is not None:
            return
        last = self.last_peer_stream if last_stream_id is None else last_stream_id
        self._send(frame(GOAWAY, 0, 0, last.to_bytes(4, "big") + error_code.to_bytes(4, "big") + additional_data))
