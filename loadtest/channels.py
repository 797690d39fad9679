"""The gRPC connections one worker opens, and the custom metadata every call carries.

`--connections N` gives a worker N channels, each with its own TCP connection, and spreads its
requests over them in turn, as ghz's `--connections` does: otherwise all of a worker's calls share
one HTTP/2 connection, and a balancer that picks per connection (an L4 load balancer, a Service's
kube-proxy) sends them all to one pod.
`-H key:value` adds metadata (an auth token, a tenant or routing key) to every call, unary and
streaming. `--tls` and the `--tls-*` files make every channel TLS (`ClientTls`).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

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


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ValueError(f"{flag} {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class ClientTls:
    """TLS toward the target: the CA to trust (empty: the system's roots), a client certificate and
    key for mutual TLS, and the name to check in the server's certificate (empty: the URL's host).
    Files are read when the channels open, in each worker, so a spec stays a few paths."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("--tls-cert-file and --tls-key-file go together (mutual TLS needs both)")

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials; a file that cannot be read is a ValueError naming its flag."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "--tls-ca-file") if self.ca_file else None,
            private_key=_read(self.key_file, "--tls-key-file") if self.key_file else None,
            certificate_chain=_read(self.cert_file, "--tls-cert-file") if self.cert_file else None,
        )

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def open_channel(url: str, tls: ClientTls | None = None) -> grpc.aio.Channel:
    """A channel to `url` (TLS when `tls` is given) with its own TCP connection and no message size limits."""
    options = [
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", -1),
        # Channels of one process to one target share a connection unless each keeps its own pool.
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if tls is None:
        return grpc.aio.insecure_channel(url, options=options)
    return grpc.aio.secure_channel(url, tls.credentials(), options=options + tls.options())


class Channels:
    """A worker's channels; `next()` hands them out in turn."""

    def __init__(self, url: str, connections: int, metadata: Metadata = (), tls: ClientTls | None = None):
        if connections < 1:
            raise ValueError(f"connections must be at least 1, got {connections}")
        self.channels = [open_channel(url, tls) for _ in range(connections)]
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
