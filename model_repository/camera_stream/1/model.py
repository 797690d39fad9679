"""Triton Python-backend model: compressed camera streams, one decoder session per sequence.

Each request carries H.264 or H.265 access units (Annex B) of one camera; `models.camera` keeps the
camera's decoder by correlation id. `execute` only reads the requests and hands them to the
instance's camera pipeline, which answers each through its response sender once its pictures are
decoded and analysed: the next batch comes in while NVDEC still decodes this one. A bad access
unit, a stream waiting for its keyframe or a camera refused at the decoder limit only ever affect
their own request.
"""

import time

import triton_python_backend_utils as pb_utils

from models import camera_io, triton_io
from models.video import settings_from_parameters


def _settings(params: dict) -> tuple[int, tuple[int, int]]:
    return int(params.get("TOP_K", "5")), settings_from_parameters(params).grid


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        params = triton_io.parameters(auto_complete_model_config.as_dict())
        return triton_io.complete_config(
            auto_complete_model_config, camera_io.INPUTS, camera_io.outputs(*_settings(params))
        )

    def initialize(self, args):
        self.service, self.labels, self.device = camera_io.build_service(args)
        self.k, self.grid = _settings(triton_io.parameters(triton_io.load_config(args)))
        metrics = camera_io.CameraMetrics(args)
        self.service.publish = lambda: metrics.publish(len(self.service.streams.streams), self.service.counters)

    def execute(self, requests):
        began = time.perf_counter()
        for request in requests:
            sender = request.get_response_sender()

            def reply(result, sender=sender):
                sender.send(self._response(result), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

            try:
                camera = camera_io.camera_request(request)
            except ValueError as exc:
                self.service.fail(request.correlation_id(), exc, reply)
                continue
            self.service.submit(camera, reply)
        self.service.counters.parse_s += time.perf_counter() - began
        return None

    def _response(self, result):
        if isinstance(result, Exception):
            return camera_io.error_response(result)
        try:
            return pb_utils.InferenceResponse(
                output_tensors=camera_io.result_tensors(result, self.labels, self.k, self.grid)
            )
        except Exception as exc:  # one request's outputs that cannot be built fail only that request
            return camera_io.error_response(RuntimeError(f"building the outputs failed: {exc}"))

    def finalize(self):
        self.service.close()
