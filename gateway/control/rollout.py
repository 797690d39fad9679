"""A model load or unload through the gateway, applied to the fleet as a rollout.

The call goes to one pod first (the first live pod by address); only when it succeeded there does it
go to the other live pods, all at once. A failure on the first pod stops the rollout and leaves every
other pod untouched: a bad model, or a request that crashes Triton, costs one pod, not the fleet.
Pods that are not live (down, ejected, terminating) are skipped and named as such. Every rollout ends
with one outcome per pod, which the gateway logs and puts into the error message or, on success, into
the `tritonfleet-rollout` trailing metadata.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from gateway.fleet.backends import Backend

log = logging.getLogger("tritonfleet.gateway")

OK = "ok"
NOT_SENT = "not sent (stopped before this pod)"
SKIPPED = "skipped (not live)"
TRAILER = "tritonfleet-rollout"


class RolloutFailed(Exception):
    """The call failed on at least one pod; carries the first failing pod's status and every outcome."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Rollout:
    method: str
    model: str
    outcomes: dict[str, str] = field(default_factory=dict)  # pod address → outcome, in rollout order

    def summary(self) -> str:
        return ", ".join(f"{pod}: {outcome}" for pod, outcome in self.outcomes.items())


def order(backends: list[Backend]) -> tuple[list[Backend], list[Backend]]:
    """(the pods to apply it to, first one first; the pods skipped), both by address."""
    ranked = sorted(backends, key=lambda b: b.address)
    return [b for b in ranked if b.admitted], [b for b in ranked if not b.admitted]


async def roll_out(method: str, model: str, backends: list[Backend],
                   send: Callable[[Backend], Awaitable[bytes]]) -> tuple[bytes, Rollout]:
    """Apply `send` to the first live pod, then to the other live pods; returns the first pod's reply.

    Raises RolloutFailed (naming every pod's outcome) when a pod failed, and UNAVAILABLE when no pod is live.
    """
    targets, skipped = order(backends)
    rollout = Rollout(method, model, {b.address: NOT_SENT for b in targets})
    rollout.outcomes.update({b.address: SKIPPED for b in skipped})
    if not targets:
        raise RolloutFailed(grpc.StatusCode.UNAVAILABLE,
                            f"{method} of '{model}': no live backend to apply it to ({rollout.summary()})")
    first, rest = targets[0], targets[1:]
    results = [await _attempt(send, first)]
    if not isinstance(results[0], grpc.aio.AioRpcError):
        results += await asyncio.gather(*(_attempt(send, backend) for backend in rest))
    failures = []
    for backend, result in zip(targets, results):
        if isinstance(result, grpc.aio.AioRpcError):
            rollout.outcomes[backend.address] = f"failed ({result.code().name}: {result.details()})"
            failures.append((backend, result))
        else:
            rollout.outcomes[backend.address] = OK
    if failures:
        backend, error = failures[0]
        stopped = " and stopped there" if backend is first else ""
        message = (f"{method} of '{model}' failed on {backend.address}{stopped}: {error.details()}; "
                   f"every pod: {rollout.summary()}")
        log.warning("model rollout failed", extra={"method": method, "model": model, "outcomes": rollout.outcomes})
        raise RolloutFailed(error.code(), message)
    log.info("model rollout done", extra={"method": method, "model": model, "outcomes": rollout.outcomes})
    return results[0], rollout


async def _attempt(send: Callable[[Backend], Awaitable[bytes]], backend: Backend):
    """The pod's reply, or the gRPC error it answered with."""
    try:
        return await send(backend)
    except grpc.aio.AioRpcError as exc:
        return exc
