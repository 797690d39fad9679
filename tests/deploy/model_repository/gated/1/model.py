"""Answers X with X, once the file `open` exists in gate_dir; writes `started-<X>` on entry."""

import json
import time
from pathlib import Path

import triton_python_backend_utils as pb_utils

GATE_LIMIT_S = 120


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.gate = Path(config["parameters"]["gate_dir"]["string_value"])

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            (self.gate / f"started-{int(x.flat[0])}").touch()
            deadline = time.monotonic() + GATE_LIMIT_S
            while not (self.gate / "open").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x)]))
        return responses
