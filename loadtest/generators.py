"""The request generators one worker runs on its event loop: open loop, closed loop, camera streams.

Every request goes out as pre-serialized bytes on a raw gRPC method (no protobuf work per request)
and comes back as one `RequestResult` handed to `emit`. Open-loop latency counts from the scheduled
send time, so a request that could not leave on time because the sender or the server was stuck is
charged for the wait.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import grpc

from loadtest.channels import Channels
from loadtest.payloads import sequence_header
from loadtest.records import DROPPED, OK, STREAM_ERROR, RequestResult
from loadtest.shape import Shape

INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
# A ModelStreamInferResponse whose first field (1: error_message) is present carries an error;
# protobuf writes fields in number order and leaves empty strings out, so one byte tells.
_STREAM_ERROR_TAG = b"\x0a"

Emit = Callable[[RequestResult], None]
now_ns = time.monotonic_ns


async def sleep_until(deadline_ns: int) -> None:
    delay = deadline_ns - now_ns()
    if delay > 0:
        await asyncio.sleep(delay / 1e9)


async def timed_call(call, body: bytes, timeout_s: float, metadata=None) -> tuple[int, str]:
    """Send one unary call: when it left, and how it ended (OK or the gRPC status code's name)."""
    sent = now_ns()
    try:
        await call(body, timeout=timeout_s, metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        return sent, exc.code().name
    return sent, OK


class Unary:
    """One ModelInfer call with bytes in and bytes out, each on the worker's next channel."""

    def __init__(self, channels: Channels, timeout_s: float):
        self.calls = {id(channel): channel.unary_unary(INFER) for channel in channels.channels}
        self.channels, self.timeout_s = channels, timeout_s

    async def __call__(self, body: bytes, scheduled_ns: int, emit: Emit, stream: int = -1, deadline_ns: int = 0):
        call = self.calls[id(self.channels.next())]
        sent, status = await timed_call(call, body, self.timeout_s, self.channels.metadata)
        emit(RequestResult(scheduled_ns, sent, now_ns(), status, stream, deadline_ns))


async def open_loop(unary: Unary, bodies: list[bytes], offsets_ns: list[int], t0_ns: int, emit: Emit) -> None:
    """Send request i at t0 + offsets[i], whether or not earlier ones have come back."""
    pending: set[asyncio.Task] = set()
    for index, offset in enumerate(offsets_ns):
        scheduled = t0_ns + offset
        await sleep_until(scheduled)
        task = asyncio.create_task(unary(bodies[index % len(bodies)], scheduled, emit))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


async def closed_loop(unary: Unary, bodies: list[bytes], shape: Shape, share: Callable[[float], int],
                      t0_ns: int, emit: Emit) -> None:
    """`share(level)` users each send, wait for the answer, and send again, until the shape ends."""
    end_ns = t0_ns + int(shape.duration_s * 1e9)
    await sleep_until(t0_ns)

    async def user(slot: int) -> None:
        sent = 0
        while (start := now_ns()) < end_ns:
            if slot >= share(shape.level_at((start - t0_ns) / 1e9)):
                await asyncio.sleep(0.01)  # this user is idle at the current step of the shape
                continue
            await unary(bodies[(slot + sent) % len(bodies)], start, emit)
            sent += 1

    await asyncio.gather(*(user(slot) for slot in range(share(shape.peak))))


@dataclass
class CameraPlan:
    """One camera stream: its frames, pace and sequence identity."""

    stream: int
    correlation_id: int
    fps: float
    frames: int  # frame slots in the run
    start_ns: int
    bodies: list[bytes]  # pre-encoded frames of the clip, cycled
    # Encoded video (loadtest.video_source.UnitRequests): a dropped frame's access unit goes out with
    # the next request, since a decoder cannot skip one; None for raw frames, which can be dropped.
    catch_up: object | None = None

    @property
    def period_ns(self) -> int:
        return int(1e9 / self.fps)

    def keyframe(self, slot: int) -> bool:
        return self.catch_up is not None and self.catch_up.clip.is_keyframe(slot)

    def request(self, slot: int, start: bool, end: bool, skipped: tuple[int, ...] = ()) -> bytes:
        body = self.catch_up.body([*skipped, slot]) if skipped else self.bodies[slot % len(self.bodies)]
        return body + sequence_header(
            self.correlation_id, start, end, f"{self.stream}-{slot}")


class Camera:
    """Sends one frame per slot; a slot that comes while `max_in_flight` frames await their answers
    drops its frame (1, the default: a camera waits for each answer before its next frame).

    `mode` is "stream" (one ModelStreamInfer per camera, a sequence on it) or "unary" (one ModelInfer
    per frame with the same sequence parameters), to compare the two. Only a stream keeps a
    sequence's frames in order, so only a stream may have more than one in flight (runs.run_video
    checks).
    """

    def __init__(self, channels: Channels, plan: CameraPlan, mode: str, emit: Emit, timeout_s: float,
                 max_in_flight: int = 1):
        # Cameras take the worker's channels in turn, so its streams spread evenly over them.
        self.channel, self.plan, self.mode, self.emit = channels.next(), plan, mode, emit
        self.metadata = channels.metadata
        self.timeout_s = timeout_s
        self.in_flight: deque[tuple[int, int, bool]] = deque()  # (scheduled, sent, keyframe) awaiting answers
        self.max_in_flight = max_in_flight
        self.outstanding = 0  # frames sent and not yet answered
        self.idle = asyncio.Event()  # set while no frame is outstanding
        self.idle.set()
        self.sequence_open = False
        self.skipped: list[int] = []  # encoded video: slots dropped since the last send
        self.call = None
        self.reader: asyncio.Task | None = None
        self.infer = self.channel.unary_unary(INFER)
        self.unary_tasks: set[asyncio.Task] = set()  # held so the loop cannot garbage-collect them

    async def run(self) -> None:
        plan = self.plan
        last = plan.frames - 1
        for slot in range(plan.frames):
            # From the slot number, not a sum of rounded periods, so slot k lands exactly k/FPS in.
            scheduled = plan.start_ns + round(slot * 1e9 / plan.fps)
            await sleep_until(scheduled)
            if self.outstanding >= self.max_in_flight:
                self.emit(RequestResult(scheduled, 0, now_ns(), DROPPED, plan.stream, plan.period_ns,
                                        plan.keyframe(slot)))
                if plan.catch_up is not None:
                    self.skipped.append(slot)
                continue
            body = plan.request(slot, not self.sequence_open, slot == last, self._take_skipped())
            await self._send(body, scheduled, slot == last, plan.keyframe(slot))
        await self.idle.wait()
        if self.sequence_open:
            # The last slot was dropped: close the sequence with one frame that is not measured.
            skipped = self._take_skipped() or (last,)
            await self._send(plan.request(skipped[-1], False, True, skipped[:-1]), 0, True)
            await self.idle.wait()
        await self._close()

    def _take_skipped(self) -> tuple[int, ...]:
        skipped, self.skipped = tuple(self.skipped), []
        return skipped

    async def _send(self, body: bytes, scheduled: int, end: bool, keyframe: bool = False) -> None:
        self.outstanding += 1
        self.idle.clear()
        self.sequence_open = not end
        if self.mode == "unary":
            task = asyncio.create_task(self._unary(body, scheduled, keyframe))
            self.unary_tasks.add(task)
            task.add_done_callback(self.unary_tasks.discard)
            return
        if self.call is None:
            self.call = self.channel.stream_stream(STREAM_INFER)(timeout=self.timeout_s, metadata=self.metadata)
            self.reader = asyncio.create_task(self._read(self.call))
        self.in_flight.append((scheduled, now_ns(), keyframe))
        try:
            await self.call.write(body)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the reader sees the same failure and settles the frame

    async def _unary(self, body: bytes, scheduled: int, keyframe: bool) -> None:
        sent, status = await timed_call(self.infer, body, self.timeout_s, self.metadata)
        self._settle(scheduled, sent, status, keyframe)

    async def _read(self, call) -> None:
        try:
            async for response in call:
                scheduled, sent, keyframe = self.in_flight.popleft()
                self._settle(scheduled, sent, STREAM_ERROR if response[:1] == _STREAM_ERROR_TAG else OK, keyframe)
        except grpc.aio.AioRpcError as exc:
            # The stream broke: its frames in flight fail, and the next frame opens a new sequence.
            while self.in_flight:
                scheduled, sent, keyframe = self.in_flight.popleft()
                self._settle(scheduled, sent, exc.code().name, keyframe)
            self.call, self.sequence_open = None, False

    def _settle(self, scheduled: int, sent: int, status: str, keyframe: bool = False) -> None:
        if scheduled:  # the unmeasured closing frame has no slot
            self.emit(RequestResult(scheduled, sent, now_ns(), status, self.plan.stream, self.plan.period_ns, keyframe))
        self.outstanding -= 1
        if self.outstanding == 0:
            self.idle.set()

    async def _close(self) -> None:
        if self.call is not None:
            await self.call.done_writing()
            await self.reader
