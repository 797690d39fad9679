"""One HTTP/2 connection on an asyncio transport, server or client side.

`Connection` reads frames, answers SETTINGS and PING, keeps the HPACK state, and sends DATA within the
peer's flow-control windows, queueing what does not fit until a WINDOW_UPDATE. What the streams carry
is left to subclasses (`on_headers`, `on_data`, `on_reset`, `on_goaway`, `on_ping_ack`, `on_lost`).

Writes: what a connection sends goes into its own output buffer, written once per turn of the event
loop (scheduled on the first write of the turn), so a turn's frames leave in one system call and
callers never flush. Large outputs go to the socket as a list of chunks.

Receiving: DATA payloads are never copied on the way through: received ones are views of the read (a
payload longer than what one read brought is handed on in pieces, one per read). Received bytes are
granted back to the peer in large steps from a 16 MiB window: at once as they arrive, or, with
`manual_flow`, only once the upper layer says it no longer holds them (`consumed`), so that what a
peer may have buffered in the gateway is bounded by what was granted.
"""

from __future__ import annotations

import asyncio
from collections import deque

import hpack

from gateway.transport.h2 import *  # noqa: F403 - the frame constants are this module's vocabulary
from gateway.transport.h2 import (_FRAME_HEADER, WRITELINES_FROM, HeaderDecoder, ProtocolError, _integer,
                                  encode_headers, frame, frame_header, rst_stream, settings_payload, unpad,
                                  window_update)


class Connection(asyncio.Protocol):
    """One HTTP/2 connection; `client` says which side of it the gateway is."""

    def __init__(self, client: bool, limits=None, manual_flow: bool = False):
        self.client = client
        self.limits = limits
        self.manual_flow = manual_flow
        self._write_scheduled = False
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.eof_sent = False  # FIN went out: nothing more may be written, though the peer still is read
        self.decoder = HeaderDecoder()
        # A smaller dynamic table the peer asked for, announced at the start of the next header block.
        self._table_size_update: int | None = None
        # Received: the start of a frame that is not complete yet, and how many bytes it needs.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._pending_need = 0
        # Receiving a DATA payload larger than one read: its stream, bytes still to come, END_STREAM.
        self._data_stream = 0
        self._data_left = 0
        self._data_end = False
        # To send: chunks gathered in this turn of the event loop.
        self._out: list = []
        self._out_size = 0
        self._await_preface = not client
        self._continuation: tuple[int, int, bytearray] | None = None
        # Sending: the peer's windows and frame size; DATA that does not fit waits per stream.
        self.send_window = DEFAULT_WINDOW
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = DEFAULT_MAX_FRAME
        self.stream_windows: dict[int, int] = {}
        self._waiting: dict[int, deque] = {}
        # Receiving: bytes taken since the last grant, for the connection and per stream.
        self._taken = 0
        self._stream_taken: dict[int, int] = {}

    # ---- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        start = PREFACE if self.client else b""
        settings = {SETTINGS_INITIAL_WINDOW_SIZE: RECEIVE_WINDOW, SETTINGS_MAX_FRAME_SIZE: RECEIVE_MAX_FRAME}
        if self.client:
            settings[SETTINGS_ENABLE_PUSH] = 0
        self.send(start + frame(SETTINGS, 0, 0, settings_payload(settings))
                  + window_update(0, RECEIVE_WINDOW - DEFAULT_WINDOW))

    def data_received(self, data: bytes) -> None:
        try:
            position = 0
            if self._pending:  # the rest of a frame (or the preface) that began in an earlier read
                position = self._finish_pending(data)
                if position < 0:
                    return
            if self._data_left:  # the rest of a DATA payload that began in an earlier read
                position = self._continue_data(data, position)
            self._frames(data, position)
        except (ProtocolError, hpack.HPACKError) as exc:
            self.fail(str(exc))

    def _frames(self, data: bytes, position: int) -> None:
        """Handle the frames in `data` from `position`; keep the start of one that is not complete."""
        if self._await_preface:
            if len(data) - position < len(PREFACE):
                self._keep(data[position:], len(PREFACE))
                return
            if data[position : position + len(PREFACE)] != PREFACE:
                raise ProtocolError("not an HTTP/2 connection preface")
            position += len(PREFACE)
            self._await_preface = False
        view = memoryview(data)
        size = len(data)
        unpack = _FRAME_HEADER.unpack_from
        while size - position >= 9:
            high, low, kind, flags, stream_id = unpack(data, position)
            start = position + 9
            end = start + (high << 8 | low)
            if end > size:
                if kind == DATA and not flags & PADDED:
                    # A payload larger than this read goes on in pieces, as it arrives: no copy.
                    self._begin_data(flags, stream_id & MAX_STREAM_ID, end - start, view[start:])
                    return
                break
            position = end
            # DATA payloads stay views of the read (no copy); the rest are small, and bytes.
            self._frame(kind, flags, stream_id & MAX_STREAM_ID,
                        view[start:end] if kind == DATA else data[start:end])
        if position < size:
            rest = data[position:]
            need = 9 if size - position < 9 else 9 + (rest[0] << 16 | rest[1] << 8 | rest[2])
            self._keep(rest, need)

    def _keep(self, rest: bytes, need: int) -> None:
        """Hold the start of an incomplete frame (or preface) until `need` bytes of it have arrived."""
        self._pending.append(rest)
        self._pending_size = len(rest)
        self._pending_need = need

    def _finish_pending(self, data: bytes) -> int:
        """Complete the held frame (or preface) from the start of `data`, copying only its own bytes, and
        handle it; returns where the frames after it begin in `data`, or -1 when it needs more."""
        view = memoryview(data)
        position = 0
        while True:
            missing = self._pending_need - self._pending_size
            if len(data) - position < missing:
                self._pending.append(view[position:])
                self._pending_size += len(data) - position
                return -1
            self._pending.append(view[position : position + missing])
            position += missing
            held = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
            if self._await_preface or len(held) != 9 or held[:3] == b"\0\0\0":
                self._frames(held, 0)  # the preface, or one whole frame
                return position
            # Only a frame header was held: now the frame's length is known.
            length = held[0] << 16 | held[1] << 8 | held[2]
            kind, flags, stream_id = held[3], held[4], int.from_bytes(held[5:9], "big") & MAX_STREAM_ID
            if kind == DATA and not flags & PADDED:
                self._begin_data(flags, stream_id, length, view[position:position])
                return position
            self._keep(held, 9 + length)

    def _begin_data(self, flags: int, stream_id: int, length: int, piece) -> None:
        """A DATA frame of `length` bytes whose payload starts with `piece`; the rest follows in later reads."""
        if self._continuation is not None:
            raise ProtocolError("a header block was interrupted")
        self._take(stream_id, length, flags & END_STREAM)
        self._data_left = length - len(piece)
        self._data_stream = stream_id
        self._data_end = bool(flags & END_STREAM)
        if piece:
            self.on_data(stream_id, piece, False)

    def _continue_data(self, data: bytes, position: int) -> int:
        """Hand on the next piece of a DATA payload begun in an earlier read; returns where it ends."""
        size = min(self._data_left, len(data) - position)
        self._data_left -= size
        if size:
            self.on_data(self._data_stream, memoryview(data)[position : position + size],
                         self._data_end and not self._data_left)
        return position + size

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._waiting.clear()
        self.on_lost(exc)

    # ---- frames in ----------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuation is not None and kind != CONTINUATION:
            raise ProtocolError("a header block was interrupted")
        if kind == DATA:
            self._take(stream_id, len(payload), flags & END_STREAM)
            self.on_data(stream_id, unpad(flags, payload), bool(flags & END_STREAM))
        elif kind == HEADERS:
            block = unpad(flags, payload)
            if flags & PRIORITY_FLAG:
                block = block[5:]
            if flags & END_HEADERS:
                self._headers(stream_id, flags, block)
            else:
                self._continuation = (stream_id, flags, bytearray(block))
        elif kind == CONTINUATION:
            if self._continuation is None or self._continuation[0] != stream_id:
                raise ProtocolError("CONTINUATION without its HEADERS")
            self._continuation[2].extend(payload)
            if flags & END_HEADERS:
                stream_id, first_flags, block = self._continuation
                self._continuation = None
                self._headers(stream_id, first_flags, bytes(block))
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, int.from_bytes(payload[:4], "big") & MAX_STREAM_ID)
        elif kind == PING:
            if flags & ACK:
                self.on_ping_ack(payload)
            else:
                self.send(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            self._forget(stream_id)
            self.on_reset(stream_id, int.from_bytes(payload[:4], "big"))
        elif kind == GOAWAY:
            self.on_goaway(int.from_bytes(payload[:4], "big") & MAX_STREAM_ID, int.from_bytes(payload[4:8], "big"))
        elif kind == PUSH_PROMISE:
            raise ProtocolError("server push is turned off")
        # PRIORITY and unknown frame types carry nothing the gateway uses.

    def _headers(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self.decoder.decode(block)
        if not self.client and stream_id not in self.stream_windows:
            # A stream the peer opens: the gateway will answer on it.
            self.stream_windows[stream_id] = self.peer_initial_window
        self.on_headers(stream_id, headers, bool(flags & END_STREAM))

    def _settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload) - len(payload) % 6, 6):
            key = int.from_bytes(payload[offset : offset + 2], "big")
            value = int.from_bytes(payload[offset + 2 : offset + 6], "big")
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream_id in self.stream_windows:
                    self.stream_windows[stream_id] += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                self.peer_max_frame = value
            elif key == SETTINGS_HEADER_TABLE_SIZE and value < 4096:
                self._table_size_update = value
        self.send(frame(SETTINGS, ACK, 0))
        self._resume()

    def _window_update(self, stream_id: int, increment: int) -> None:
        if stream_id == 0:
            self.send_window += increment
        elif stream_id in self.stream_windows:
            self.stream_windows[stream_id] += increment
        self._resume()

    def _take(self, stream_id: int, size: int, ended: bool) -> None:
        """Count received bytes; unless flow control is manual, they are granted back at once."""
        if not self.manual_flow:
            self._grant(stream_id, size, ended)
        elif ended:
            self._stream_taken.pop(stream_id, None)
        else:
            self._stream_taken.setdefault(stream_id, 0)

    def consumed(self, stream_id: int, size: int) -> None:
        """The upper layer no longer holds `size` received bytes of `stream_id`: with manual flow
        control, they may now be granted back to the peer (until then its windows stay shrunk)."""
        if self.manual_flow:
            self._grant(stream_id, size, stream_id not in self._stream_taken)

    def _grant(self, stream_id: int, size: int, ended: bool) -> None:
        """Grant bytes back to the peer in steps of GRANT_STEP; a stream that ended needs no more."""
        self._taken += size
        if self._taken >= GRANT_STEP:
            self.send(window_update(0, self._taken))
            self._taken = 0
        if ended:
            self._stream_taken.pop(stream_id, None)
            return
        taken = self._stream_taken.get(stream_id, 0) + size
        if taken >= GRANT_STEP:
            self.send(window_update(stream_id, taken))
            taken = 0
        self._stream_taken[stream_id] = taken

    # ---- frames out ---------------------------------------------------------------------------

    def send(self, chunk) -> None:
        if self.closed or self.eof_sent:
            return
        if not self._write_scheduled:
            self._schedule_write()
        self._out.append(chunk)
        self._out_size += len(chunk)

    def _schedule_write(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven by hand, without an event loop: the caller calls write_out()
            return
        self._write_scheduled = True
        loop.call_soon(self.write_out)

    def write_out(self) -> None:
        """Write what this connection buffered; the scheduled write of each turn calls this."""
        self._write_scheduled = False
        out, self._out = self._out, []
        size, self._out_size = self._out_size, 0
        if out and self.transport is not None and not self.closed:
            if size > WRITELINES_FROM:
                self.transport.writelines(out)  # large payloads go to the socket without a copy
            else:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def send_headers(self, stream_id: int, headers, end_stream: bool) -> None:
        """A header block (one frame; gRPC's headers fit the default 16 KB frame) after any queued DATA."""
        block = encode_headers(headers)
        if self._table_size_update is not None:
            block = _integer(self._table_size_update, 5, 0x20) + block
            self._table_size_update = None
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        waiting = self._waiting.get(stream_id)
        if waiting:
            waiting.append((None, block, flags))
            return
        self.send(frame(HEADERS, flags, stream_id, block))
        if end_stream:
            self._forget(stream_id)

    def open_stream(self, stream_id: int) -> None:
        self.stream_windows[stream_id] = self.peer_initial_window

    def send_data(self, stream_id: int, data, end_stream: bool) -> None:
        waiting = self._waiting.get(stream_id)
        if waiting:
            waiting.append((memoryview(data), None, end_stream))
            return
        rest = self._send_data(stream_id, memoryview(data), end_stream)
        if rest is not None:
            self._waiting[stream_id] = deque([(rest, None, end_stream)])

    def _send_data(self, stream_id: int, view: memoryview, end_stream: bool) -> memoryview | None:
        """Send as much of `view` as the windows allow; the rest, or None when all of it went."""
        while True:
            window = min(self.send_window, self.stream_windows.get(stream_id, 0), self.peer_max_frame)
            size = min(len(view), window)
            if size < len(view) and size <= 0:
                return view
            last = size == len(view)
            flags = END_STREAM if end_stream and last else 0
            self.send(frame_header(DATA, flags, stream_id, size))
            self.send(view[:size] if size < len(view) else view)
            self.send_window -= size
            if stream_id in self.stream_windows:
                self.stream_windows[stream_id] -= size
            if last:
                if end_stream:
                    self._forget(stream_id)
                return None
            view = view[size:]

    def _resume(self) -> None:
        for stream_id in list(self._waiting):
            waiting = self._waiting[stream_id]
            while waiting:
                view, block, flags = waiting[0]
                if block is not None:
                    waiting.popleft()
                    self.send(frame(HEADERS, flags, stream_id, block))
                    if flags & END_STREAM:
                        self._forget(stream_id)
                    continue
                rest = self._send_data(stream_id, view, flags)
                if rest is not None:
                    waiting[0] = (rest, None, flags)
                    break
                waiting.popleft()
            if not waiting:
                self._waiting.pop(stream_id, None)

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        self._forget(stream_id)
        self.send(rst_stream(stream_id, code))

    def _forget(self, stream_id: int) -> None:
        self.stream_windows.pop(stream_id, None)
        self._waiting.pop(stream_id, None)
        self._stream_taken.pop(stream_id, None)

    def ping(self, payload: bytes) -> None:
        """A PING with 8 bytes of `payload`, which the peer sends back in its ACK."""
        self.send(frame(PING, 0, 0, payload))

    def goaway(self, last_stream_id: int, code: int = NO_ERROR) -> None:
        self.send(frame(GOAWAY, 0, 0, last_stream_id.to_bytes(4, "big") + code.to_bytes(4, "big")))

    def fail(self, reason: str) -> None:
        self.goaway(0, PROTOCOL_ERROR)
        self.write_out()
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        self.write_out()
        if self.transport is not None:
            self.transport.close()

    def finish_sending(self) -> None:
        """Send what is queued, then FIN; keep reading until the peer closes its side (then the
        transport closes, since `eof_received` returns None)."""
        self.write_out()
        if self.transport is None or self.closed or self.eof_sent:
            return
        self.eof_sent = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()

    # ---- what the streams carry (subclasses) ---------------------------------------------------

    def on_headers(self, stream_id: int, headers: list[tuple[str, str]], end_stream: bool) -> None:
        raise NotImplementedError

    def on_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        raise NotImplementedError

    def on_reset(self, stream_id: int, code: int) -> None:
        pass

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        pass

    def on_ping_ack(self, payload: bytes) -> None:
        pass

    def on_lost(self, exc) -> None:
        pass
