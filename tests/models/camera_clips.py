"""Encoded camera clips for the camera model's tests, made with PyAV's libx264/libx265, and the same
analysis run offline on the decoded clip (the reference the served results must equal)."""

from __future__ import annotations

import fractions

import av
import numpy as np
import tritonclient.grpc as grpcclient

from models.camera import CameraAnalyzer, CameraFrameIn, luma_frame
from models.classifier import Classifier, ClassifierSettings
from models.pipeline import ImagePipeline
from models.video import FrameResult, VideoSettings
from models.video_decode import PyAVDecoder

ENCODERS = {"h264": "libx264", "hevc": "libx265"}


def scene(index: int, height: int, width: int) -> np.ndarray:
    """A still gradient with a bright box sliding 4 px a frame: steady, small motion."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 96)], -1).astype(np.uint8)
    top, left = height // 3, 16 + 4 * index
    image[top : top + height // 4, left : left + width // 6] = (250, 240, 30)
    return image


def encode_clip(codec: str, frames: int = 30, height: int = 240, width: int = 320, gop: int = 10) -> list[bytes]:
    """Annex B access units, one per frame, a keyframe (with its parameter sets) every `gop` frames.

    No B-frames: a picture comes out of the decoder with its own access unit, as a camera sends it.
    """
    context = av.CodecContext.create(ENCODERS[codec], "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = fractions.Fraction(1, 30)
    context.framerate = fractions.Fraction(30, 1)
    context.gop_size = gop
    context.max_b_frames = 0
    context.options = (
        {"tune": "zerolatency", "keyint_min": str(gop), "sc_threshold": "0"}
        if codec == "h264" else {"x265-params": f"log-level=error:keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"}
    )
    units = []
    for index in range(frames):
        frame = av.VideoFrame.from_ndarray(scene(index, height, width), format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        units += [bytes(packet) for packet in context.encode(frame)]
    units += [bytes(packet) for packet in context.encode(None)]
    return units


def offline_motion(codec: str, units: list[bytes], settings: VideoSettings = VideoSettings()) -> list[float]:
    return [result.motion for result in offline_analysis(codec, units, settings)]


def offline_analysis(codec: str, units: list[bytes], settings: VideoSettings = VideoSettings()) -> list[FrameResult]:
    """Decode the clip in-process and run the camera analysis on it, one picture at a time."""
    decoder = PyAVDecoder(codec)
    pictures = [p for unit in units for p in decoder.decode(unit)] + decoder.flush()
    analyzer = CameraAnalyzer(ImagePipeline(Classifier(ClassifierSettings(seed=0)), k=5), settings)
    results = []
    for index, picture in enumerate(pictures):
        frame = CameraFrameIn(stream=1, frame=luma_frame(picture), start=index == 0, end=False, picture=picture)
        results.append(analyzer.step([frame])[0])
    return results


def units_input(units: list[bytes]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("ACCESS_UNITS", [1, len(units)], "BYTES")
    tensor.set_data_from_numpy(np.array([units], dtype=np.object_))
    return tensor


def codec_input(codec: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("CODEC", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[codec.encode()]], dtype=np.object_))
    return tensor
