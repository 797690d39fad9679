"""Waits DELAY_MS in small steps, stopping when the request is cancelled; counts the cancelled ones.

DELAY_MS >= 0: DONE = 1 after the wait, or the error CANCELLED once the client (through whatever
proxy) cancelled the call. DELAY_MS < 0: DONE = the number of cancelled requests seen so far.
A request parameter `started_file` names a file the model creates once it works on that request,
so that a test cancels a request the model is executing, not one still queued.
"""

import json
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.cancelled = 0

    def execute(self, requests):
        responses = []
        for request in requests:
            delay_ms = int(pb_utils.get_input_tensor_by_name(request, "DELAY_MS").as_numpy().reshape(-1)[0])
            if delay_ms < 0:
                responses.append(self._done(self.cancelled))
                continue
            started_file = json.loads(request.parameters() or "{}").get("started_file")
            if started_file:
                Path(started_file).touch()
            deadline = time.monotonic() + delay_ms / 1000
            while time.monotonic() < deadline and not request.is_cancelled():
                time.sleep(0.01)
            if request.is_cancelled():
                self.cancelled += 1
                error = pb_utils.TritonError("cancelled by the client", pb_utils.TritonError.CANCELLED)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                responses.append(self._done(1))
        return responses

    @staticmethod
    def _done(value: int):
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("DONE", np.array([value], dtype=np.int32))])
