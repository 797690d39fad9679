"""The gRPC connections one worker opens, and the custom metadata every call carries.

`--connections N` gives a worker N channels, each with its own TCP connection, and spreads its
requests over them in turn, as ghz's `--connections` does: otherwise all of a worker's calls share
one HTTP/2 connection, and a balancer that picks per connection (an L4 load balancer, a Service's
kube-proxy) sends them all to one pod.
`-H key:value` adds metadata (an auth token, a tenant or routing key) to every call, unary and
streaming.
"""

from __future__ import annotations

import itertools
import re

import grpc

Metadata = tuple[tuple[str, str], ...]

# gRPC metadata keys: lower-case letters, digits, '-', '_' and '.' (the HTTP/2 header grammar gRPC allows).
_KEY = re.compile(r"^[a-z0-9_.-]+$")
# Reserved by gRPC and HTTP/2 themselves; sending them would break or spoof the call.
_RESERVED_PREFIXES = ("grpc-", ":")
_RESERVED_KEYS = {"content-type", "te", "user-agent", "host", "connection"}


def parse_header(text: str) -> tuple[str, str]:
    """`key:value` (or `key: value`, as curl writes it) into a metadata pair; argparse's `type`."""
    key, sep, value = text.partition(":")
    if not sep or not key.strip():
        raise ValueError(f"metadata {text!r} is not key:value")
    pair = (key.strip().lower(), value.strip())
    validate_metadata((pair,))
    return pair


def validate_metadata(metadata: Metadata) -> None:
    """Refuse (ValueError) metadata that gRPC would reject or that would spoof its own headers."""
    for key, value in metadata:
        if not _KEY.match(key):
            raise ValueError(f"metadata key {key!r} may hold only a-z, 0-9, '-', '_' and '.'")
        if key.startswith(_RESERVED_PREFIXES) or key in _RESERVED_KEYS:
            raise ValueError(f"metadata key {key!r} is reserved by gRPC")
        if key.endswith("-bin"):
            raise ValueError(f"metadata key {key!r}: binary (-bin) metadata is not supported, send text")
        if not all(" " <= char <= "~" for char in value):
            raise ValueError(f"metadata value of {key!r} must be printable ASCII")


def open_channel(url: str) -> grpc.aio.Channel:
    """An insecure channel to `url` with its own TCP connection and no message size limits."""
    return grpc.aio.insecure_channel(url, options=[
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", -1),
        # Channels of one process to one target share a connection unless each keeps its own pool.
        ("grpc.use_local_subchannel_pool", 1),
    ])


class Channels:
    """A worker's channels; `next()` hands them out in turn."""

    def __init__(self, url: str, connections: int, metadata: Metadata = ()):
        if connections < 1:
            raise ValueError(f"connections must be at least 1, got {connections}")
        self.channels = [open_channel(url) for _ in range(connections)]
        self.metadata = metadata or None
        self._turn = itertools.cycle(self.channels)

    def next(self) -> grpc.aio.Channel:
        return next(self._turn)

    async def ready(self) -> None:
        for channel in self.channels:
            await channel.channel_ready()

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
