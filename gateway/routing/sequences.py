"""Which pod holds each sequence: a stateful model's requests with one `sequence_id` must all reach the
pod their `sequence_start` went to, since that pod alone has the sequence's state.

One `SequencePins` table serves both kinds of sequence:
- unary sequences (`ModelInfer` with a sequence id): one table for the whole gateway, whose entries
  are forgotten when idle (a client that never sends `sequence_end` must not grow it forever);
- sequences on a `ModelStreamInfer` stream: one table per client stream, forgotten with the stream,
  which also remembers why a sequence ended (its pod was lost) to tell its later messages.

The table only records; picking the start's pod is the request lifecycle's job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

import grpc

from gateway import wire

NOT_STARTED_UNARY = "it was not started through this gateway or its pod is gone; start it again"
NOT_STARTED_ON_STREAM = "it was not started on this stream (no sequence_start)"


class SequenceError(Exception):
    """A request that continues a sequence without a pod to go to: FAILED_PRECONDITION."""

    code = grpc.StatusCode.FAILED_PRECONDITION


def sequence_key(route: wire.RequestRoute) -> tuple[str, int | str]:
    return route.model, route.sequence_id


class SequencePins:
    """(model, sequence_id) -> the pod that holds the sequence."""

    def __init__(self, not_started: str, idle_s: float | None = None, prune_above: int = 1000,
                 still_there: Callable[[Hashable], bool] | None = None):
        self.not_started = not_started
        self.idle_s = idle_s
        self.prune_above = prune_above
        # Whether a pinned pod is still one of the fleet's (a unary sequence outlives any connection).
        self.still_there = still_there
        self.pods: dict[tuple[str, int | str], tuple[Hashable, float]] = {}
        self.lost: dict[tuple[str, int | str], str] = {}

    def pinned(self, route: wire.RequestRoute):
        """The pod of a continuing request; None for a `sequence_start` (the caller picks one, then
        calls `bind`). SequenceError when the sequence has no pod."""
        key = sequence_key(route)
        if route.sequence_start:
            self.lost.pop(key, None)
            return None
        backend = self.pods.get(key, (None, 0.0))[0]
        if backend is None or (self.still_there is not None and not self.still_there(backend)):
            self.pods.pop(key, None)
            reason = self.lost.get(key, self.not_started)
            raise SequenceError(f"sequence {route.sequence_id} of model '{route.model}' cannot continue: {reason}")
        return backend

    def bind(self, route: wire.RequestRoute, backend) -> None:
        """`route` goes to `backend`: pin its sequence there, or forget it at its `sequence_end`."""
        key = sequence_key(route)
        if route.sequence_end:
            self.pods.pop(key, None)
            return
        now = time.monotonic()
        self.pods[key] = (backend, now)
        if route.sequence_start and self.idle_s is not None and len(self.pods) > self.prune_above:
            for stale in [k for k, (_, used) in self.pods.items() if now - used > self.idle_s]:
                del self.pods[stale]

    def lose(self, backend, reason: str) -> list[tuple[str, int | str]]:
        """`backend` was lost: its sequences end, and their later messages are told `reason`."""
        keys = [key for key, (pod, _) in self.pods.items() if pod is backend]
        for key in keys:
            del self.pods[key]
            self.lost[key] = reason
        return keys

    def on(self, backend) -> bool:
        """Whether any sequence is pinned to `backend`."""
        return any(pod is backend for pod, _ in self.pods.values())


def unary_sequences(still_there: Callable[[Hashable], bool]) -> SequencePins:
    """The gateway-wide table of sequences sent as unary `ModelInfer` calls."""
    # Forgotten after 300 s unused: Triton's own idle limit for a sequence is usually lower.
    return SequencePins(NOT_STARTED_UNARY, idle_s=300.0, still_there=still_there)


def stream_sequences() -> SequencePins:
    """The table of one client stream's sequences."""
    return SequencePins(NOT_STARTED_ON_STREAM)
