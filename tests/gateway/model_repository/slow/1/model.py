"""Slowable test model: sleeps `delay_ms` (config) + DELAY_MS (input), then OUTPUT0 = INPUT0 + 1."""

import json
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.base_delay_ms = float(parameters.get("delay_ms", {}).get("string_value", "0"))

    def execute(self, requests):
        responses = []
        for request in requests:
            delay_ms = self.base_delay_ms
            extra = pb_utils.get_input_tensor_by_name(request, "DELAY_MS")
            if extra is not None:
                delay_ms += float(extra.as_numpy().reshape(-1)[0])
            time.sleep(delay_ms / 1000.0)
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", values + 1)]))
        return responses
