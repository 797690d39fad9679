"""Triton Python-backend model, decoupled: scene-change events of per-stream video sequences.

Each request is one frame. Its response sender gets an "scene_change" response when the frame
changes scene, a "sequence_end" response (with the final flag) when the request ends its sequence,
and otherwise just the final flag, so every request is completed exactly once.
"""

import torch
import triton_python_backend_utils as pb_utils

from models import triton_io, video_io

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _io(k: int):
    outputs = [
        {"name": "EVENT", "data_type": "TYPE_STRING", "dims": [1]},
        {"name": "FRAME_INDEX", "data_type": "TYPE_INT64", "dims": [1]},
        {"name": "MOTION", "data_type": "TYPE_FP32", "dims": [1]},
        {"name": "LABELS", "data_type": "TYPE_STRING", "dims": [k]},
        {"name": "SCORES", "data_type": "TYPE_FP32", "dims": [k]},
    ]
    return [video_io.FRAME_INPUT], outputs


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        params = triton_io.parameters(auto_complete_model_config.as_dict())
        auto_complete_model_config.set_model_transaction_policy({"decoupled": True})
        return triton_io.complete_config(auto_complete_model_config, *_io(int(params.get("TOP_K", "5"))))

    def initialize(self, args):
        if not pb_utils.using_decoupled_model_transaction_policy(triton_io.load_config(args)):
            raise ValueError("video_events answers 0..n times per request: set model_transaction_policy.decoupled")
        self.analyzer, self.labels, self.device = video_io.build_analyzer(args)

    def execute(self, requests):
        senders = [request.get_response_sender() for request in requests]
        frames, accepted = [], []
        for sender, request in zip(senders, requests):
            try:
                frames.append(video_io.frame_in(request, self.device))
                accepted.append(sender)
            except ValueError as exc:
                sender.send(triton_io.error_response(exc), flags=FINAL)
        try:
            results = self.analyzer.step(frames)
        except Exception as exc:  # a failure of the batch itself: still complete every request
            results = [exc] * len(frames)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        for sender, frame, result in zip(accepted, frames, results):
            self._answer(sender, frame, result)
        return None

    def _answer(self, sender, frame, result) -> None:
        if isinstance(result, Exception):
            sender.send(triton_io.error_response(result), flags=FINAL)
            return
        if result.scene_change:
            sender.send(self._event("scene_change", result))
        if frame.end:
            sender.send(self._event("sequence_end", result), flags=FINAL)
        else:
            sender.send(flags=FINAL)

    def _event(self, kind: str, result):
        return pb_utils.InferenceResponse(output_tensors=[
            triton_io.bytes_output("EVENT", [[kind]]),
            triton_io.output("FRAME_INDEX", torch.tensor([[result.frame_index]], dtype=torch.int64)),
            triton_io.output("MOTION", torch.tensor([[result.motion]], dtype=torch.float32)),
            triton_io.bytes_output("LABELS", [[self.labels[i] for i in result.indices.tolist()]]),
            triton_io.output("SCORES", result.scores.unsqueeze(0)),
        ])

    def finalize(self):
        self.analyzer.streams.clear()
