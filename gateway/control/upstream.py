"""What the control service's calls to pods share: the error a call ends with, and the client
metadata that goes on to the pod."""

from __future__ import annotations

import grpc

# Metadata that belongs to one HTTP/2 hop and is set again by the gateway's own channel.
_HOP_HEADERS = frozenset({"user-agent", "te", "content-type", "host", "connection"})


class UpstreamError(Exception):
    """A call that ended with a non-OK status, from a pod or from the gateway itself."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata=None):
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def upstream_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    """The client's metadata minus per-hop headers, to send on to the pod."""
    return tuple(
        (key, value) for key, value in context.invocation_metadata() or ()
        if key not in _HOP_HEADERS and not key.startswith((":", "grpc-"))
    )
