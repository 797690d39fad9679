"""Open-loop unary load and camera-like streams against one address, each on its own thread and event
loop, recording one `loadtest` RequestResult per request (times are monotonic ns).

The unary load is the load generator's own `Unary` call (pre-serialized bytes on the raw ModelInfer
method); what this adds is pacing that runs until told to stop, since a fault run does not know its
length in advance (a rolling restart takes as long as the servers take to start).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

from loadtest.channels import Channels
from loadtest.generators import STREAM_INFER, Unary, now_ns, sleep_until
from loadtest.records import OK, RequestResult

# Long enough that a call held by a frozen pod is retried by the gateway (keepalive 10 s + 5 s) rather
# than cut by the client: a failure is then the gateway's, not this deadline's.
REQUEST_TIMEOUT_S = 30.0


def slow_request(delay_ms: int) -> bytes:
    """A `slow` request (tests/gateway/model_repository/slow) that sleeps `delay_ms` on its pod."""
    request = service_pb2.ModelInferRequest(model_name="slow")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1])
    request.inputs.add(name="DELAY_MS", datatype="INT32", shape=[1])
    request.raw_input_contents.append(np.ones(1, dtype=np.float32).tobytes())
    request.raw_input_contents.append(np.array([delay_ms], dtype=np.int32).tobytes())
    return request.SerializeToString()


def running_sum_frame(sequence_id: int, start: bool, frame: int, end: bool = False) -> bytes:
    """One frame of a camera-like stream: a `running_sum` step of the stream's sequence."""
    request = service_pb2.ModelInferRequest(model_name="running_sum", id=f"{sequence_id}-{frame}")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 1])
    request.raw_input_contents.append(np.ones((1, 1), dtype=np.float32).tobytes())
    request.parameters["sequence_id"].int64_param = sequence_id
    request.parameters["sequence_start"].bool_param = start
    request.parameters["sequence_end"].bool_param = end
    return request.SerializeToString()


class _LoopThread:
    """An event loop on a thread of its own, running one coroutine until `stop()`."""

    def __init__(self, name: str):
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.error: BaseException | None = None

    def start(self):
        self.thread.start()
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self.run())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by stop()
            self.error = exc

    async def run(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = REQUEST_TIMEOUT_S + 10) -> None:
        self.stopping.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"{self.thread.name} did not end within {timeout:.0f} s")
        if self.error is not None:
            raise self.error


class UnaryLoad(_LoopThread):
    """`rate` requests a second of `body`, each sent at its scheduled time whatever came back."""

    def __init__(self, url: str, rate: float, body: bytes, connections: int = 4):
        super().__init__("unary-load")
        self.url, self.rate, self.body, self.connections = url, rate, body, connections
        self.results: list[RequestResult] = []
        self.started_ns = 0

    async def run(self) -> None:
        channels = Channels(self.url, self.connections)
        unary = Unary(channels, REQUEST_TIMEOUT_S)
        pending: set[asyncio.Task] = set()
        period_ns = int(1e9 / self.rate)
        self.started_ns = t0 = now_ns()
        index = 0
        try:
            while not self.stopping.is_set():
                scheduled = t0 + index * period_ns
                await sleep_until(scheduled)
                task = asyncio.create_task(unary(self.body, scheduled, self.results.append))
                pending.add(task)
                task.add_done_callback(pending.discard)
                index += 1
            if pending:
                await asyncio.gather(*pending)
        finally:
            await channels.close()

    def sent_count(self) -> int:
        return len(self.results)


async def closed_loop_rate(url: str, body: bytes, concurrency: int, seconds: float) -> float:
    """Answers a second with `concurrency` requests always outstanding: the capacity to take 70% of."""
    channels = Channels(url, 4)
    unary = Unary(channels, REQUEST_TIMEOUT_S)
    answered: list[RequestResult] = []
    end = now_ns() + int(seconds * 1e9)

    async def user() -> None:
        while now_ns() < end:
            await unary(body, now_ns(), answered.append)

    started = time.monotonic()
    try:
        await asyncio.gather(*(user() for _ in range(concurrency)))
    finally:
        await channels.close()
    return sum(r.status == OK for r in answered) / (time.monotonic() - started)


@dataclass
class StreamOutcome:
    """One camera stream: its frames' outcomes and how and when the stream itself ended."""

    stream: int
    frames: list[RequestResult] = field(default_factory=list)
    code: str = ""  # the stream's final gRPC status ("" while open)
    details: str = ""
    ended_ns: int = 0


class CameraStreams(_LoopThread):
    """`count` ModelStreamInfer streams, each one sequence sending a frame every 1/fps s, one frame in
    flight at a time (a frame whose slot comes while the previous is unanswered is skipped)."""

    def __init__(self, url: str, count: int, fps: float):
        super().__init__("camera-streams")
        self.url, self.fps = url, fps
        self.outcomes = [StreamOutcome(stream=i) for i in range(count)]

    async def run(self) -> None:
        channels = Channels(self.url, 1)
        try:
            await asyncio.gather(*(self._camera(channels.next(), outcome) for outcome in self.outcomes))
        finally:
            await channels.close()

    async def _camera(self, channel: grpc.aio.Channel, outcome: StreamOutcome) -> None:
        call = channel.stream_stream(STREAM_INFER)(timeout=REQUEST_TIMEOUT_S * 4)
        period_ns = int(1e9 / self.fps)
        t0 = now_ns()
        frame = 0
        try:
            while True:
                scheduled = t0 + frame * period_ns
                await sleep_until(scheduled)
                # The last frame ends the sequence, so its pod need not wait for it to time out.
                last = self.stopping.is_set()
                sent = now_ns()
                await call.write(running_sum_frame(1000 + outcome.stream, frame == 0, frame, end=last))
                reply = await call.read()
                if reply is grpc.aio.EOF:
                    break
                # A stream answer with an error_message (field 1) is a failed frame on a live stream.
                outcome.frames.append(RequestResult(scheduled, sent, now_ns(), "ERROR" if reply[:1] == b"\x0a" else OK,
                                                    outcome.stream))
                frame += 1
                if last:
                    break
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                pass
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass
        code = await call.code()
        outcome.code, outcome.details, outcome.ended_ns = code.name, await call.details() or "", now_ns()
