"""Benchmark-only Triton model: image_pipeline's steps in one Python-backend process.

Encoded images -> one nvJPEG call for the whole dynamic batch -> `kernels.preprocess` -> ResNet-50
-> top-k, with the tensors on one device and no ensemble hop between the steps. Served beside
image_pipeline by `bench.gpu.run_fleet --extra-models`, so the two measure side by side; not part
of the model repository.
"""

import torch
import triton_python_backend_utils as pb_utils

from models import triton_io
from models.decode import Decoder
from models.pipeline import build_from_parameters


class TritonPythonModel:
    def initialize(self, args):
        self.device = triton_io.instance_device(args)
        params = triton_io.parameters(triton_io.load_config(args))
        self.decoder = Decoder(self.device)
        self.pipeline, self.labels = build_from_parameters(params, lambda path: triton_io.model_file(args, path), self.device)
        pb_utils.Logger.log_info(f"image_fused on {self.device}, nvJPEG {self.decoder.uses_gpu_jpeg}")

    def execute(self, requests):
        return triton_io.responses_for(requests, self._run_batch, self.device)

    def _run_batch(self, requests):
        encoded = [triton_io.input_bytes(request, "IMAGE") or [] for request in requests]
        decoded = self.decoder.decode_requests(encoded)
        good = [frames for frames in decoded if not isinstance(frames, Exception) and frames]
        flat = [frame for frames in good for frame in frames]
        if not flat:
            return [item if isinstance(item, Exception) else ValueError("no IMAGE") for item in decoded]
        top = self.pipeline.classify_frames(flat)
        names = top.labels(self.labels)
        indices, scores = torch.split(top.indices, [len(f) for f in good]), torch.split(top.scores, [len(f) for f in good])
        parts = iter(zip(indices, scores))
        results, start = [], 0
        for item in decoded:
            if isinstance(item, Exception) or not item:
                results.append(item if isinstance(item, Exception) else ValueError("no IMAGE"))
                continue
            ids, probs = next(parts)
            results.append([triton_io.bytes_output("LABELS", names[start : start + len(ids)]),
                            triton_io.output("CLASS_IDS", ids), triton_io.output("SCORES", probs)])
            start += len(ids)
        return results
