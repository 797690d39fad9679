"""TENANT = the request's forwarded `x-tenant` header (a request parameter), "" when it has none."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            tenant = json.loads(request.parameters() or "{}").get("x-tenant", "")
            tensor = pb_utils.Tensor("TENANT", np.array([str(tenant).encode()], dtype=np.object_))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
