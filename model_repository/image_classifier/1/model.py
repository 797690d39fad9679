"""Triton Python-backend model: ResNet-50 over whole dynamic batches.

All requests of a batch are concatenated into one forward pass (that is what dynamic batching is
for), then split back; float16 and channels_last on a GPU instance.
"""

import torch
import triton_python_backend_utils as pb_utils

from models import triton_io
from models.classifier import Classifier, ClassifierSettings

INPUTS = [{"name": "PIXELS", "data_type": "TYPE_FP32", "dims": [3, 224, 224]}]
OUTPUTS = [{"name": "LOGITS", "data_type": "TYPE_FP32", "dims": [1000]}]


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        auto_complete_model_config.set_dynamic_batching()
        return triton_io.complete_config(auto_complete_model_config, INPUTS, OUTPUTS)

    def initialize(self, args):
        config = triton_io.load_config(args)
        params = triton_io.parameters(config)
        self.device = triton_io.instance_device(args)
        weights = triton_io.model_file(args, params["WEIGHTS"]) if params.get("WEIGHTS") else None
        self.classifier = Classifier(
            ClassifierSettings(weights=weights, seed=int(params.get("SEED", "0")), device=self.device)
        )
        pb_utils.Logger.log_info(
            f"image_classifier on {self.device}: weights from {self.classifier.weights_source}, {self.classifier.dtype}"
        )
        if self.device.type == "cuda":
            preferred = config.get("dynamic_batching", {}).get("preferred_batch_size", [])
            self.classifier.warm_up(tuple(int(size) for size in preferred) or (1,))

    def execute(self, requests):
        return triton_io.responses_for(requests, self._run_batch, self.device)

    def _run_batch(self, requests):
        pixels = [triton_io.input_tensor(request, "PIXELS", self.device) for request in requests]
        logits = self.classifier(torch.cat(pixels))
        return [[triton_io.output("LOGITS", part)] for part in torch.split(logits, [len(p) for p in pixels])]

    def finalize(self):
        del self.classifier
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
