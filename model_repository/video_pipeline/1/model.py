"""Triton Python-backend model: stateful per-stream video analysis under the sequence batcher.

The `oldest` strategy hands one batch with frames of several streams; `models.video.VideoAnalyzer`
keeps each stream's previous frame and background by correlation id and runs the temporal kernels
and the classifier over the whole batch.
"""

import torch

from models import triton_io, video_io
from models.video import settings_from_parameters


def _io(k: int, grid: tuple[int, int]):
    outputs = [
        {"name": "MOTION", "data_type": "TYPE_FP32", "dims": [1]},
        {"name": "MOTION_TILES", "data_type": "TYPE_FP32", "dims": list(grid)},
        {"name": "SCENE_CHANGE", "data_type": "TYPE_BOOL", "dims": [1]},
        {"name": "CLASSIFIED", "data_type": "TYPE_BOOL", "dims": [1]},
        {"name": "FRAME_INDEX", "data_type": "TYPE_INT64", "dims": [1]},
        {"name": "LABELS", "data_type": "TYPE_STRING", "dims": [k]},
        {"name": "SCORES", "data_type": "TYPE_FP32", "dims": [k]},
    ]
    return [video_io.FRAME_INPUT], outputs


def one(value, dtype: torch.dtype) -> torch.Tensor:
    """A scalar as this request's (1, 1) output: batch of one, one value."""
    return torch.tensor([[value]], dtype=dtype)


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        params = triton_io.parameters(auto_complete_model_config.as_dict())
        grid = settings_from_parameters(params).grid
        return triton_io.complete_config(auto_complete_model_config, *_io(int(params.get("TOP_K", "5")), grid))

    def initialize(self, args):
        self.analyzer, self.labels, self.device = video_io.build_analyzer(args)

    def execute(self, requests):
        return triton_io.responses_for(requests, self._run_batch, self.device)

    def _run_batch(self, requests):
        results, frames, positions = [None] * len(requests), [], []
        for position, request in enumerate(requests):
            try:
                frames.append(video_io.frame_in(request, self.device))
                positions.append(position)
            except ValueError as exc:
                results[position] = exc
        for position, result in zip(positions, self.analyzer.step(frames)):
            results[position] = result if isinstance(result, Exception) else self._outputs(result)
        return results

    def _outputs(self, result):
        return [
            triton_io.output("MOTION", one(result.motion, torch.float32)),
            triton_io.output("MOTION_TILES", result.tiles.unsqueeze(0)),
            triton_io.output("SCENE_CHANGE", one(result.scene_change, torch.bool)),
            triton_io.output("CLASSIFIED", one(result.classified, torch.bool)),
            triton_io.output("FRAME_INDEX", one(result.frame_index, torch.int64)),
            triton_io.bytes_output("LABELS", [[self.labels[i] for i in result.indices.tolist()]]),
            triton_io.output("SCORES", result.scores.unsqueeze(0)),
        ]

    def finalize(self):
        self.analyzer.streams.clear()
