"""Triton Python-backend model: encoded images or raw frames -> normalized NCHW pixels.

The JPEGs of every request in the dynamic batch are decoded in one call (one nvJPEG batch on a GPU
instance; a corrupt image fails only its request); all decoded frames then go through
`kernels.preprocess` in one call, whatever their sizes, and the pixels leave through DLPack, so on
a GPU instance they stay on the device for the classifier.
"""

import torch
import triton_python_backend_utils as pb_utils

from models import triton_io
from models.decode import Decoder
from models.pipeline import preprocess_frames

INPUTS = [
    {"name": "IMAGE", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
    {"name": "FRAMES", "data_type": "TYPE_UINT8", "dims": [-1, -1, 3], "optional": True},
]
OUTPUTS = [{"name": "PIXELS", "data_type": "TYPE_FP32", "dims": [3, 224, 224]}]


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        return triton_io.complete_config(auto_complete_model_config, INPUTS, OUTPUTS)

    def initialize(self, args):
        self.device = triton_io.instance_device(args)
        self.decoder = Decoder(self.device)
        decoder = "nvJPEG" if self.decoder.uses_gpu_jpeg else "Pillow"
        pb_utils.Logger.log_info(f"image_preprocess on {self.device}: JPEGs decoded with {decoder}")

    def execute(self, requests):
        return triton_io.responses_for(requests, self._run_batch, self.device)

    def _run_batch(self, requests):
        frames_per_request = self._frames_per_request(requests)
        good = [frames for frames in frames_per_request if not isinstance(frames, Exception)]
        flat = [frame for frames in good for frame in frames]
        pixels = iter(torch.split(preprocess_frames(flat), [len(f) for f in good])) if flat else iter(())
        return [
            item if isinstance(item, Exception) else [triton_io.output("PIXELS", next(pixels))]
            for item in frames_per_request
        ]

    def _frames_per_request(self, requests) -> list:
        """Each request's frames, or the ValueError that request earned; encoded images decoded together."""
        results, encoded_at, encoded = [], [], []
        for request in requests:
            try:
                images, frames = self._inputs(request)
            except ValueError as exc:
                results.append(exc)
                continue
            if images is not None:
                encoded_at.append(len(results))
                encoded.append(images)
                results.append(None)
            else:
                results.append(list(frames))
        for index, frames in zip(encoded_at, self.decoder.decode_requests(encoded)):
            results[index] = frames
        return results

    def _inputs(self, request):
        encoded = triton_io.input_bytes(request, "IMAGE")
        frames = triton_io.input_tensor(request, "FRAMES", self.device)
        if (encoded is None) == (frames is None):
            raise ValueError("send exactly one of IMAGE (encoded JPEG/PNG) or FRAMES (uint8 N x H x W x 3)")
        if frames is not None and (frames.shape[1] == 0 or frames.shape[2] == 0):
            raise ValueError(f"FRAMES must not be empty, got shape {tuple(frames.shape)}")
        return encoded, frames
