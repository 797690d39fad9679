"""PARAMETERS = the request's parameters as JSON (the forwarded headers among them)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            parameters = request.parameters() or "{}"
            tensor = pb_utils.Tensor("PARAMETERS", np.array([parameters.encode()], dtype=np.object_))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
