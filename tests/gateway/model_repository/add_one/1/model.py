"""Stateless test model: OUTPUT0 = INPUT0 + 1, one response per request."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", values + 1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
