"""Cutting the bytes a peer sends into HTTP/2 frames, across reads cut anywhere.

`FrameReader` checks the connection preface (server side), then each frame's length against what we
announced before its payload is awaited (so an oversize frame is never buffered), and hands each frame
to its sink. DATA payloads are never copied: a whole one is a view of the read; one longer than what a
read brought is handed on in pieces, one per read, as it arrives. Other payloads are small, and bytes.

The sink (the connection) provides:
    frame_in(kind, flags, stream_id, payload)    every frame but DATA
    data_in(flags, stream_id, payload)           a whole DATA frame
    data_begins(flags, stream_id, length)        a DATA frame whose payload is still arriving: a token
    data_piece(token, stream_id, piece, end)     a piece of that payload; `end`: its last, and END_STREAM
"""

from __future__ import annotations

from gateway.transport.frames import (_FRAME_HEADER, _HEADERS_OVERHEAD, CONTINUATION, DATA, END_STREAM,
                                      ENHANCE_YOUR_CALM, FRAME_SIZE_ERROR, HEADERS, MAX_STREAM_ID, PADDED, PREFACE,
                                      PROTOCOL_ERROR, H2Error)


class FrameReader:
    def __init__(self, sink, expect_preface: bool, max_frame_size: int, max_header_list_size: int):
        self.sink = sink
        self.max_frame_size = max_frame_size
        self.max_header_list_size = max_header_list_size
        self._await_preface = expect_preface
        # The start of a frame (or the preface) that is not complete yet, and how many bytes it needs.
        self._held: list = []
        self._held_size = 0
        self._held_need = 0
        # A DATA payload longer than one read: the sink's token for it, bytes still to come, END_STREAM.
        self._piece_token = None
        self._piece_stream = 0
        self._piece_left = 0
        self._piece_end = False

    def feed(self, data: bytes) -> None:
        """Hand the frames of `data` (what the peer sent next) to the sink; raises H2Error."""
        position = 0
        if self._held:  # the rest of a frame (or the preface) that began in an earlier read
            position = self._finish_held(data)
            if position < 0:
                return
        if self._piece_left:  # the rest of a DATA payload that began in an earlier read
            position = self._continue_piece(data, position)
        self._frames(data, position)

    def _frames(self, data: bytes, position: int) -> None:
        """The frames in `data` from `position`; the start of one that is not complete is held."""
        if self._await_preface:
            if len(data) - position < len(PREFACE):
                if not PREFACE.startswith(data[position:]):
                    raise H2Error(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._hold(data[position:], len(PREFACE))
                return
            if data[position : position + len(PREFACE)] != PREFACE:
                raise H2Error(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            position += len(PREFACE)
            self._await_preface = False
        sink = self.sink
        view = memoryview(data)
        size = len(data)
        unpack = _FRAME_HEADER.unpack_from
        while size - position >= 9:
            high, low, kind, flags, stream_id = unpack(data, position)
            length = high << 8 | low
            self._check_length(kind, length)
            start = position + 9
            end = start + length
            if end > size:
                if kind == DATA and not flags & PADDED:
                    # A payload larger than this read goes on in pieces, as it arrives: no copy.
                    self._begin_piece(flags, stream_id & MAX_STREAM_ID, length, view[start:])
                    return
                break
            position = end
            if kind == DATA:
                sink.data_in(flags, stream_id & MAX_STREAM_ID, view[start:end])
            else:
                sink.frame_in(kind, flags, stream_id & MAX_STREAM_ID, data[start:end])
        if position < size:
            rest = data[position:]
            if size - position < 9:
                self._hold(rest, 9)
            else:
                length = rest[0] << 16 | rest[1] << 8 | rest[2]
                self._check_length(rest[3], length)
                self._hold(rest, 9 + length)

    def _check_length(self, kind: int, length: int) -> None:
        if length > self.max_frame_size:
            raise H2Error(FRAME_SIZE_ERROR, f"a frame of {length} bytes, larger than the {self.max_frame_size} "
                                            "announced")
        if (kind == HEADERS or kind == CONTINUATION) and length > self.max_header_list_size + _HEADERS_OVERHEAD:
            # Longer than a whole header list may be: refused before it is buffered.
            raise H2Error(ENHANCE_YOUR_CALM, f"a header frame of {length} bytes, beyond the header-list limit "
                                             f"of {self.max_header_list_size}")

    def _hold(self, rest, need: int) -> None:
        """Hold the start of an incomplete frame (or preface) until `need` bytes of it have arrived."""
        self._held.append(rest)
        self._held_size = len(rest)
        self._held_need = need

    def _finish_held(self, data: bytes) -> int:
        """Complete the held frame (or preface) from the start of `data`, copying only its own bytes, and
        hand it on; returns where the frames after it begin in `data`, or -1 when it needs more."""
        view = memoryview(data)
        position = 0
        while True:
            missing = self._held_need - self._held_size
            if len(data) - position < missing:
                self._held.append(view[position:])
                self._held_size += len(data) - position
                if self._await_preface and not PREFACE.startswith(b"".join(self._held)):
                    raise H2Error(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return -1
            self._held.append(view[position : position + missing])
            position += missing
            held = b"".join(self._held)
            self._held.clear()
            self._held_size = 0
            if self._await_preface or len(held) != 9 or held[:3] == b"\0\0\0":
                self._frames(held, 0)  # the preface, or one whole frame
                return position
            # Only a frame header was held: now the frame's length is known.
            length = held[0] << 16 | held[1] << 8 | held[2]
            kind, flags, stream_id = held[3], held[4], int.from_bytes(held[5:9], "big") & MAX_STREAM_ID
            self._check_length(kind, length)
            if kind == DATA and not flags & PADDED:
                self._begin_piece(flags, stream_id, length, view[position:position])
                return position
            self._hold(held, 9 + length)

    def _begin_piece(self, flags: int, stream_id: int, length: int, piece) -> None:
        """A DATA frame of `length` bytes whose payload starts with `piece`; the rest follows in later reads."""
        self._piece_token = token = self.sink.data_begins(flags, stream_id, length)
        self._piece_stream = stream_id
        self._piece_left = length - len(piece)
        self._piece_end = bool(flags & END_STREAM)
        if piece:
            self.sink.data_piece(token, stream_id, piece, False)

    def _continue_piece(self, data: bytes, position: int) -> int:
        """Hand on the next piece of a DATA payload begun in an earlier read; returns where it ends."""
        size = min(self._piece_left, len(data) - position)
        self._piece_left -= size
        if size:
            self.sink.data_piece(self._piece_token, self._piece_stream, memoryview(data)[position : position + size],
                                 self._piece_end and not self._piece_left)
        return position + size
