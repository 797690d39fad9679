"""Load for the fault tests, in a child process of its own: a test that starts a server while this
load has gRPC calls in flight forks the test process, and grpcio's fork handlers skip when other
threads are in a call, which can crash the child before it execs. Spawned, the load's calls are in
another process, and the test's forks find no call in flight."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter

import numpy as np

_CONTEXT = multiprocessing.get_context("spawn")


def _send(url: str, model: str, delay_ms: int, workers: int, stopping, answered, outcomes) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    counts: Counter = Counter()
    lock = threading.Lock()

    def inputs():
        value = grpcclient.InferInput("INPUT0", [1], "FP32")
        value.set_data_from_numpy(np.ones(1, dtype=np.float32))
        tensors = [value]
        if delay_ms:
            delay = grpcclient.InferInput("DELAY_MS", [1], "INT32")
            delay.set_data_from_numpy(np.array([delay_ms], dtype=np.int32))
            tensors.append(delay)
        return tensors

    def worker():
        client = grpcclient.InferenceServerClient(url)
        while not stopping.is_set():
            try:
                client.infer(model, inputs(), client_timeout=30)
                outcome = "OK"
            except InferenceServerException as exc:
                outcome = f"{exc.status()}: {exc.message()}"
            with lock:
                counts[outcome] += 1
                if outcome == "OK":
                    answered.value += 1
        client.close()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcomes.put(dict(counts))


class ChildLoad:
    """`workers` clients in a spawned process, each sending `model` one request at a time until `stop()`,
    which returns how every request ended ({"OK": n, "<status>: <message>": m, ...})."""

    def __init__(self, url: str, model: str = "slow", delay_ms: int = 5, workers: int = 3):
        self.stopping = _CONTEXT.Event()
        self._answered = _CONTEXT.Value("q", 0)
        self._outcomes = _CONTEXT.Queue()
        self.process = _CONTEXT.Process(target=_send, args=(url, model, delay_ms, workers, self.stopping,
                                                            self._answered, self._outcomes), daemon=True)
        self.process.start()

    def answered(self) -> int:
        return self._answered.value

    def stop(self, timeout: float = 60.0) -> dict[str, int]:
        self.stopping.set()
        try:
            return self._outcomes.get(timeout=timeout)
        finally:
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()


def failures(outcomes: dict[str, int]) -> dict[str, int]:
    return {outcome: count for outcome, count in outcomes.items() if outcome != "OK"}
