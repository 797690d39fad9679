"""Encoded video for the load generator: the access units a camera would send, as request bodies.

A clip comes from a real file (demuxed with PyAV, MP4/MKV packets turned into Annex B by the
mp4toannexb bitstream filter) or is encoded once at start from the synthetic scene with libx264 or
libx265. Either way it starts on a keyframe that carries its parameter sets, so a stream that loops
the clip restarts cleanly at every loop, and it has no B-frames from the encoder here (a camera's
low-latency profile), so each access unit gives the decoder one picture at once.
"""

from __future__ import annotations

import fractions
import functools
from dataclasses import dataclass

import numpy as np
from tritonclient.grpc import service_pb2

from loadtest.payloads import TensorSpec, _bytes_tensor, parse_resolution, synthetic_clip

CODECS = ("h264", "hevc")
_ENCODERS = {"h264": "libx264", "hevc": "libx265"}
_ANNEXB_FILTERS = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}
_START_CODES = (b"\x00\x00\x01", b"\x00\x00\x00\x01")


@dataclass(frozen=True)
class EncodedClip:
    codec: str
    units: list[bytes]  # Annex B access units in decode order, the first a keyframe
    # Which units are keyframes (as the encoder or the container flagged them): the load generator
    # counts those frames apart, since a keyframe costs a decoder several times a predicted frame.
    keyframes: frozenset[int] = frozenset()

    def is_keyframe(self, slot: int) -> bool:
        """Whether a camera's frame `slot` (the clip looped) carries a keyframe."""
        return slot % len(self.units) in self.keyframes


@functools.lru_cache(maxsize=4)  # the bodies and the catch-up requests share one encoding
def load_clip(codec: str, source: str, resolution: str, frames: int, fps: float) -> EncodedClip:
    if codec not in CODECS:
        raise ValueError(f"--codec must be one of {', '.join(CODECS)}, got {codec!r}")
    if frames < 1:
        raise ValueError(f"the clip needs at least one frame, got {frames}")
    if source in ("", "synthetic"):
        height, width = parse_resolution(resolution)
        return encode_frames(codec, synthetic_clip(height, width, frames), fps)
    return demux_file(codec, source, frames)


def encode_frames(codec: str, frames: list[np.ndarray], fps: float, gop: int | None = None) -> EncodedClip:
    """RGB frames -> Annex B access units; a keyframe every `gop` frames (default: one a second)."""
    import av

    height, width = frames[0].shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"4:2:0 video needs an even width and height, got {width}x{height}")
    gop = gop or max(1, round(fps))
    context = av.CodecContext.create(_ENCODERS[codec], "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    rate = fractions.Fraction(fps).limit_denominator(1001)
    context.framerate, context.time_base = rate, 1 / rate
    context.gop_size = gop
    context.max_b_frames = 0
    context.options = (
        {"tune": "zerolatency", "preset": "veryfast", "keyint_min": str(gop), "sc_threshold": "0"}
        if codec == "h264" else
        {"preset": "veryfast", "x265-params": f"log-level=error:keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"}
    )
    packets = []
    for index, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        packets += context.encode(frame)
    packets += context.encode(None)
    return EncodedClip(codec, [bytes(p) for p in packets], frozenset(i for i, p in enumerate(packets) if p.is_keyframe))


def demux_file(codec: str, path: str, frames: int) -> EncodedClip:
    """Up to `frames` access units of the file's first video stream, from its first keyframe on."""
    import av

    try:
        container = av.open(path)
    except (OSError, av.error.FFmpegError) as exc:
        raise ValueError(f"cannot open {path}: {exc}") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        found = stream.codec_context.name
        if found not in (codec, "h265" if codec == "hevc" else codec):
            raise ValueError(f"{path} holds {found} video, not {codec}: pass --codec {found} or another file")
        annexb = None
        units: list[bytes] = []
        keyframes: set[int] = set()
        for packet in container.demux(stream):
            if packet.size == 0 or (not units and not packet.is_keyframe):
                continue
            if annexb is None:
                # Containers such as MP4 store length-prefixed NAL units and keep the parameter sets
                # in the stream header: the filter writes start codes and puts them before keyframes.
                raw = bytes(packet)
                annexb = False if raw.startswith(_START_CODES) else av.bitstream.BitStreamFilterContext(
                    _ANNEXB_FILTERS[codec], stream)
            if packet.is_keyframe:
                keyframes.add(len(units))
            units += [bytes(p) for p in annexb.filter(packet)] if annexb else [bytes(packet)]
            if len(units) >= frames:
                break
    if not units:
        raise ValueError(f"no keyframe found in the video of {path}")
    return EncodedClip(codec, units[:frames], frozenset(k for k in keyframes if k < frames))


def unit_request(spec: TensorSpec, codec: str, units: list[bytes]) -> bytes:
    """A serialized ModelInferRequest carrying `units` (one or more access units) and the codec."""
    request = service_pb2.ModelInferRequest(model_name=spec.model)
    request.inputs.add(name=spec.input, datatype="BYTES", shape=[1, len(units)] if spec.batch_dim else [len(units)])
    request.raw_input_contents.append(_bytes_tensor(units))
    request.inputs.add(name="CODEC", datatype="BYTES", shape=[1, 1] if spec.batch_dim else [1])
    request.raw_input_contents.append(_bytes_tensor([codec.encode()]))
    return request.SerializeToString()


def unit_bodies(spec: TensorSpec, clip: EncodedClip) -> list[bytes]:
    """One pre-encoded request per access unit of the clip."""
    return [unit_request(spec, clip.codec, [unit]) for unit in clip.units]


@dataclass(frozen=True)
class UnitRequests:
    """Requests of several access units, for a camera that sends a dropped frame's unit with the next.

    A decoder needs every access unit: a frame the generator could not send in its slot is counted
    dropped, and its unit still goes out, ahead of the next one, in the same request.
    """

    spec: TensorSpec
    clip: EncodedClip

    def body(self, slots: list[int]) -> bytes:
        units = self.clip.units
        return unit_request(self.spec, self.clip.codec, [units[slot % len(units)] for slot in slots])
