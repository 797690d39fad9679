"""Trivial stateless model: the byte length of each encoded image, so load tests measure the path."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
            sizes = np.array([[len(item[0])] for item in images], dtype=np.int64)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("NBYTES", sizes)]))
        return responses
