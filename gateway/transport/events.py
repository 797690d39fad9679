"""What `H2Connection.receive_data` returns: one event per thing the peer did, modeled on h2.events."""

from __future__ import annotations


class Event:
    __slots__ = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class HeadersReceived(Event):
    """A request's or response's headers, or trailers (end_stream), on `stream_id`."""
    __slots__ = ("stream_id", "headers", "end_stream")

    def __init__(self, stream_id: int, headers: list[tuple[str, str]], end_stream: bool):
        self.stream_id, self.headers, self.end_stream = stream_id, headers, end_stream


class DataReceived(Event):
    """A piece of a DATA payload: a view of the received bytes; `flow_controlled_length` is what
    to acknowledge for it (padding is acknowledged by the core itself)."""
    __slots__ = ("stream_id", "data", "end_stream", "flow_controlled_length")

    def __init__(self, stream_id: int, data, end_stream: bool):
        self.stream_id, self.data, self.end_stream = stream_id, data, end_stream
        self.flow_controlled_length = len(data)


class StreamReset(Event):
    """A stream ended by RST_STREAM: sent by the peer (`remote`), or by us for its error."""
    __slots__ = ("stream_id", "error_code", "remote")

    def __init__(self, stream_id: int, error_code: int, remote: bool):
        self.stream_id, self.error_code, self.remote = stream_id, error_code, remote


class PingAckReceived(Event):
    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data


class ConnectionTerminated(Event):
    """The peer sent GOAWAY: streams above `last_stream_id` were not and will not be processed."""
    __slots__ = ("error_code", "last_stream_id", "additional_data")

    def __init__(self, error_code: int, last_stream_id: int, additional_data: bytes):
        self.error_code, self.last_stream_id, self.additional_data = error_code, last_stream_id, additional_data


class ConnectionFailed(Event):
    """The peer broke HTTP/2 or a limit: GOAWAY with `error_code` is queued, nothing more is read."""
    __slots__ = ("error_code", "reason")

    def __init__(self, error_code: int, reason: str):
        self.error_code, self.reason = error_code, reason


class RemoteSettingsChanged(Event):
    __slots__ = ("changed",)

    def __init__(self, changed: dict[int, int]):
        self.changed = changed


class SettingsAcknowledged(Event):
    __slots__ = ()


class WindowUpdated(Event):
    __slots__ = ("stream_id", "delta")

    def __init__(self, stream_id: int, delta: int):
        self.stream_id, self.delta = stream_id, delta
