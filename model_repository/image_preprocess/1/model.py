"""Triton Python-backend model: raw frames -> normalized NCHW pixels, through `kernels.preprocess`."""

import json

import torch
import torch.utils.dlpack
import triton_python_backend_utils as pb_utils

from kernels.preprocess import preprocess


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        dims = pb_utils.get_output_config_by_name(config, "PIXELS")["dims"]
        self.size = (int(dims[1]), int(dims[2]))
        self.device = torch.device("cuda" if args["model_instance_kind"] == "GPU" else "cpu")

    def execute(self, requests):
        # One response per request; a bad request gets its own error and its neighbours succeed.
        return [self._run(request) for request in requests]

    def _run(self, request):
        try:
            frames = pb_utils.get_input_tensor_by_name(request, "FRAMES").as_numpy()
            pixels = preprocess(torch.from_numpy(frames).to(self.device), self.size)
            out = pb_utils.Tensor.from_dlpack("PIXELS", torch.utils.dlpack.to_dlpack(pixels.contiguous()))
            return pb_utils.InferenceResponse(output_tensors=[out])
        except ValueError as exc:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
            )
