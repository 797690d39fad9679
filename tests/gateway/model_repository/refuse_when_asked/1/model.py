"""Test model: OUTPUT0 = INPUT0 + 1, or the model's own UNAVAILABLE when REFUSE is true.

Triton's Python backend has no RESOURCE_EXHAUSTED code, so a model out of capacity answers UNAVAILABLE;
the gateway must tell that answer from a pod it cannot reach.
"""

import triton_python_backend_utils as pb_utils

REFUSAL = "decoder limit reached: this pod decodes no more cameras"


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            refuse = pb_utils.get_input_tensor_by_name(request, "REFUSE")
            if refuse is not None and bool(refuse.as_numpy().reshape(-1)[0]):
                error = pb_utils.TritonError(REFUSAL, pb_utils.TritonError.UNAVAILABLE)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", values + 1)]))
        return responses
