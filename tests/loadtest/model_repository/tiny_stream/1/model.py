"""Sequence model for camera streams: counts frames per correlation id, optionally slowly."""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.delay_s = float(config["parameters"]["delay_ms"]["string_value"]) / 1000.0
        self.counts = {}

    def execute(self, requests):
        if self.delay_s:
            # One sleep per execution: the whole batch is as late as a slow model would make it.
            time.sleep(self.delay_s)
        responses = []
        for request in requests:
            sequence = request.correlation_id()
            start = pb_utils.get_input_tensor_by_name(request, "START").as_numpy()
            if start.any():
                self.counts[sequence] = 0
            self.counts[sequence] = self.counts.get(sequence, 0) + 1
            count = np.array([[self.counts[sequence]]], dtype=np.int64)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("FRAME_COUNT", count)]))
        return responses
