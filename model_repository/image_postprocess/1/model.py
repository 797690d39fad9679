"""Triton Python-backend model: logits -> top-k labels, class ids and probabilities.

One `kernels.postprocess.softmax_topk` call over the whole batch.
"""

import torch

from models import triton_io
from models.classifier import NUM_CLASSES
from models.labels import load_labels, placeholder_labels
from kernels.postprocess import softmax_topk


def _io(k: int):
    inputs = [{"name": "LOGITS", "data_type": "TYPE_FP32", "dims": [NUM_CLASSES]}]
    outputs = [
        {"name": "LABELS", "data_type": "TYPE_STRING", "dims": [k]},
        {"name": "CLASS_IDS", "data_type": "TYPE_INT64", "dims": [k]},
        {"name": "SCORES", "data_type": "TYPE_FP32", "dims": [k]},
    ]
    return inputs, outputs


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        k = int(triton_io.parameters(auto_complete_model_config.as_dict()).get("TOP_K", "5"))
        auto_complete_model_config.set_dynamic_batching()
        return triton_io.complete_config(auto_complete_model_config, *_io(k))

    def initialize(self, args):
        params = triton_io.parameters(triton_io.load_config(args))
        self.k = int(params.get("TOP_K", "5"))
        self.device = triton_io.instance_device(args)
        labels_path = triton_io.model_file(args, params["LABELS"]) if params.get("LABELS") else None
        if labels_path is not None and labels_path.is_file():
            self.labels = load_labels(labels_path, NUM_CLASSES)
        else:
            self.labels = placeholder_labels(NUM_CLASSES)

    def execute(self, requests):
        return triton_io.responses_for(requests, self._run_batch, self.device)

    def _run_batch(self, requests):
        logits = [triton_io.input_tensor(request, "LOGITS", self.device) for request in requests]
        scores, indices = softmax_topk(torch.cat(logits), self.k)
        names = [[self.labels[i] for i in row] for row in indices.tolist()]
        results, start = [], 0
        for part in logits:
            end = start + len(part)
            results.append([
                triton_io.bytes_output("LABELS", names[start:end]),
                triton_io.output("CLASS_IDS", indices[start:end]),
                triton_io.output("SCORES", scores[start:end]),
            ])
            start = end
        return results
