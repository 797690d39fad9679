"""Decoder sessions for H.264 and H.265 access units (Annex B), one per camera stream.

A decoder takes one access unit at a time and gives back the pictures it completed (0..n: a
decoder may hold pictures back to reorder them; `flush` hands out the rest when the stream ends).
Each `Picture` is a 4:2:0 frame as the decoder made it, planes as uint8 tensors: the analysis reads
the luma plane, the classifier converts the chroma planes only for the frames it looks at.

Two backends behind one interface: `PyAVDecoder` (FFmpeg's software decoders, for CPU instances
and CI) and `NvDecDecoder` (NVDEC through PyNvVideoCodec, for KIND_GPU instances). The Annex B
checks here are the backends' common front: bytes that are not Annex B, or a corrupt access unit,
are a `CorruptAccessUnit` whichever backend decodes.
"""

from __future__ import annotations

import ctypes
import fractions
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch

CODECS = {"h264": "h264", "hevc": "hevc", "h265": "hevc"}

# NAL unit types (H.264 Table 7-1, H.265 Table 7-1) that start a stream a decoder can join: an IDR
# picture (H.264), an IRAP picture (H.265: BLA, IDR, CRA and the reserved IRAP types).
_H264_KEY = {5}
_HEVC_KEY = set(range(16, 24))
# Video coding layer NAL types: these carry picture data; the rest are parameter sets, SEI, etc.
_H264_VCL = set(range(1, 6))
_HEVC_VCL = set(range(0, 32))


class CorruptAccessUnit(ValueError):
    """Bytes that are not a decodable access unit of the stream's codec."""


def codec_name(value: str) -> str:
    """"h264", "hevc" or "h265" (any case) -> the FFmpeg decoder name; anything else is a ValueError."""
    name = CODECS.get(value.strip().lower())
    if name is None:
        raise ValueError(f"unknown codec {value!r}: send one of {', '.join(sorted(CODECS))}")
    return name


def nal_types(codec: str, access_unit: bytes) -> list[int]:
    """The NAL unit types of an Annex B access unit, in order; CorruptAccessUnit if it is not Annex B."""
    if not (access_unit.startswith(b"\x00\x00\x01") or access_unit.startswith(b"\x00\x00\x00\x01")):
        raise CorruptAccessUnit(
            f"access unit of {len(access_unit)} bytes does not start with an Annex B start code "
            "(00 00 01); MP4/MKV packets need the mp4toannexb bitstream filter"
        )
    types, start = [], access_unit.find(b"\x00\x00\x01")
    while start != -1:
        header = start + 3
        start = access_unit.find(b"\x00\x00\x01", header)
        if header >= len(access_unit) or start == header:
            continue
        byte = access_unit[header]
        if byte & 0x80:
            raise CorruptAccessUnit(f"NAL unit at byte {header} has its forbidden_zero_bit set")
        types.append(byte & 0x1F if codec == "h264" else (byte >> 1) & 0x3F)
    if not types:
        raise CorruptAccessUnit(f"access unit of {len(access_unit)} bytes holds no NAL unit")
    return types


def is_keyframe(codec: str, types: list[int]) -> bool:
    """Whether an access unit of these NAL types starts a picture a decoder can join at."""
    return bool(set(types) & (_H264_KEY if codec == "h264" else _HEVC_KEY))


def has_picture_data(codec: str, types: list[int]) -> bool:
    """Whether an access unit of these NAL types carries a picture (not only parameter sets or SEI)."""
    return bool(set(types) & (_H264_VCL if codec == "h264" else _HEVC_VCL))


@dataclass
class Picture:
    """One decoded 4:2:0 picture: I420 planes (u, v) or NV12 (uv interleaved), uint8 tensors."""

    luma: torch.Tensor  # (H, W)
    u: torch.Tensor | None = None  # (H/2, W/2), I420
    v: torch.Tensor | None = None
    uv: torch.Tensor | None = None  # (H/2, W/2, 2), NV12
    standard: str = "bt709"  # "bt601" | "bt709": the matrix the encoder signalled (or the usual one)
    full_range: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.luma.shape)


class Decoder(Protocol):
    def decode(self, access_unit: bytes) -> list[Picture]: ...

    def flush(self) -> list[Picture]: ...

    def close(self) -> None: ...


# AVColorSpace values (FFmpeg libavutil/pixfmt.h) that mean the BT.601 matrix.
_BT601_SPACES = {5, 6}
_BT709_SPACE = 1
_JPEG_RANGE = 2


def _standard(colorspace: int, height: int) -> str:
    if colorspace == _BT709_SPACE:
        return "bt709"
    if colorspace in _BT601_SPACES:
        return "bt601"
    # Unsigned: the usual convention, BT.601 for standard definition, BT.709 above it.
    return "bt601" if height < 720 else "bt709"


class PyAVDecoder:
    """FFmpeg's decoder through PyAV, one codec context per stream.

    `err_detect=explode` makes FFmpeg fail an access unit it would otherwise conceal (a truncated
    slice, broken entropy coding), so the client learns its stream is damaged. One thread per
    decoder: frame threading would hold back one picture per thread, and the streams of a batch
    already decode in parallel.
    """

    def __init__(self, codec: str):
        import av

        self._av = av
        self._context = av.CodecContext.create(codec, "r")
        self._context.options = {"err_detect": "explode"}
        self._context.thread_count = 1

    def decode(self, access_unit: bytes) -> list[Picture]:
        return self._pictures(self._av.Packet(access_unit))

    def flush(self) -> list[Picture]:
        return self._pictures(None)

    def close(self) -> None:
        # Drained first: FFmpeg's frame threads, when a context has them, wait for input that never
        # comes, and freeing the context under them hangs its owner.
        if self._context is None:
            return
        try:
            self._context.decode(None)
        except self._av.error.FFmpegError:
            pass
        self._context = None

    def _pictures(self, packet) -> list[Picture]:
        try:
            frames = self._context.decode(packet)
        except self._av.error.FFmpegError as exc:
            raise CorruptAccessUnit(f"the decoder refused the access unit: {exc}") from None
        pictures = []
        for frame in frames:
            if frame.is_corrupt:
                raise CorruptAccessUnit("the decoder marked the picture corrupt")
            pictures.append(self._picture(frame))
        return pictures

    @staticmethod
    def _picture(frame) -> Picture:
        if frame.format.name not in ("yuv420p", "yuvj420p"):
            # 4:2:2, 4:4:4 or 10-bit streams: the analysis and the classifier read 8-bit 4:2:0.
            frame = frame.reformat(format="yuv420p")
        planes = [_plane(p, frame.height if i == 0 else (frame.height + 1) // 2) for i, p in enumerate(frame.planes)]
        return Picture(
            luma=planes[0][:, : frame.width],
            u=planes[1][:, : (frame.width + 1) // 2],
            v=planes[2][:, : (frame.width + 1) // 2],
            standard=_standard(int(frame.colorspace), frame.height),
            full_range=frame.format.name == "yuvj420p" or int(frame.color_range) == _JPEG_RANGE,
        )


def _plane(plane, rows: int) -> torch.Tensor:
    """A frame plane as a (rows, line_size) tensor over a copy of its bytes (the decoder reuses them)."""
    return torch.from_numpy(np.frombuffer(plane, np.uint8).reshape(rows, plane.line_size).copy())


class NvDecDecoder:
    """NVDEC through PyNvVideoCodec: pictures stay on the GPU as NV12.

    Decoded surfaces belong to the decoder and are reused, so each picture is copied out. Each
    session decodes and copies on a CUDA stream of its own: on the stream that was current (the
    legacy default stream, unless one was set) every session's copies would wait for each other
    and for the analysis, and sessions decoding in threads would not overlap. `decode` returns once
    its pictures are complete, and marks them as used by the stream that was current when the
    session was made, so their memory is not handed out again while work queued there reads it.
    NVDEC's native display latency holds two pictures back (measured on an H200); `low_latency`
    hands each picture out with its own access unit, which is right for the I/P-only streams of
    cameras and wrong for streams with B-frames, whose pictures must be reordered. `max_size`
    (height, width) sizes the session at creation, so a stream of any size up to it makes NVDEC
    reconfigure the session's decoder instead of destroying and creating one.
    """

    def __init__(self, codec: str, device: torch.device, low_latency: bool = False, own_stream: bool = True,
                 max_size: tuple[int, int] | None = None):
        import PyNvVideoCodec as nvc

        self._nvc = nvc
        self._device = device
        self._low_latency = low_latency
        torch.cuda.set_device(device)
        self._consumer = torch.cuda.current_stream(device)
        # own_stream=False (work on the current stream) is kept to measure what the own stream gains.
        self._stream = torch.cuda.Stream(device) if own_stream else self._consumer
        self._decoder = nvc.CreateDecoder(
            gpuid=device.index or 0,
            codec={"h264": nvc.cudaVideoCodec.H264, "hevc": nvc.cudaVideoCodec.HEVC}[codec],
            cudacontext=_current_cuda_context(),
            cudastream=self._stream.cuda_stream,
            usedevicememory=True,
            latency=nvc.DisplayDecodeLatencyType.LOW if low_latency else nvc.DisplayDecodeLatencyType.NATIVE,
            **({"maxheight": max_size[0], "maxwidth": max_size[1]} if max_size else {}),
        )

    def decode(self, access_unit: bytes) -> list[Picture]:
        source = np.frombuffer(access_unit, np.uint8)
        packet = self._nvc.PacketData()
        packet.bsl = int(source.size)
        packet.bsl_data = int(source.ctypes.data)
        if self._low_latency:
            # One picture per access unit: the decoder may hand it out without waiting for the next.
            packet.decode_flag = int(self._nvc.VideoPacketFlag.ENDOFPICTURE)
        return self._pictures(packet)

    def flush(self) -> list[Picture]:
        packet = self._nvc.PacketData()
        packet.bsl, packet.bsl_data = 0, 0
        packet.decode_flag = int(self._nvc.VideoPacketFlag.ENDOFSTREAM)
        return self._pictures(packet)

    def close(self) -> None:
        self._decoder = None

    def _pictures(self, packet) -> list[Picture]:
        try:
            frames = self._decoder.Decode(packet)
        except library_errors(self._nvc) as exc:
            raise CorruptAccessUnit(f"NVDEC refused the access unit: {exc}") from None
        pictures = []
        with torch.cuda.stream(self._stream):
            for frame in frames:
                nv12 = torch.from_dlpack(frame).clone()  # (H * 3/2, W)
                nv12.record_stream(self._consumer)
                height = nv12.shape[0] * 2 // 3
                pictures.append(Picture(
                    luma=nv12[:height],
                    uv=nv12[height:].view(height // 2, nv12.shape[1] // 2, 2),
                    standard="bt601" if height < 720 else "bt709",
                ))
        if pictures:
            self._stream.synchronize()
        return pictures


def library_errors(nvc) -> tuple[type[BaseException], ...]:
    """What PyNvVideoCodec raises when its decoder refuses input: its base error (a failed NVDEC
    call, with the call and its status) and the one for a stream NVDEC cannot decode (a profile,
    bit depth or size this GPU lacks)."""
    return (nvc.PyNvVCException, nvc.PyNvVCExceptionUnsupported)


def _current_cuda_context() -> int:
    """The CUDA context torch made current (its primary context), so NVDEC shares torch's memory."""
    libcuda = ctypes.CDLL("libcuda.so.1")
    context = ctypes.c_void_p()
    libcuda.cuCtxGetCurrent(ctypes.byref(context))
    return context.value or 0


def nvdec_available() -> bool:
    """Whether PyNvVideoCodec (NVDEC) can be imported here."""
    try:
        import PyNvVideoCodec  # noqa: F401
    except ImportError:
        return False
    return True


def blank_keyframe(codec: str, height: int, width: int) -> bytes:
    """One grey keyframe of this size (Annex B, parameter sets in front), encoded with PyAV, which
    the CPU decoder needs anyway: what a decoder session decodes to be warm for cameras of that size."""
    import av

    context = av.CodecContext.create({"h264": "libx264", "hevc": "libx265"}[codec], "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = fractions.Fraction(1, 30)
    context.options = {"tune": "zerolatency", "preset": "ultrafast"}
    if codec == "hevc":
        context.options = {**context.options, "x265-params": "log-level=error:repeat-headers=1"}
    frame = av.VideoFrame.from_ndarray(np.full((height * 3 // 2, width), 128, np.uint8), format="yuv420p")
    unit = b"".join(bytes(p) for p in [*context.encode(frame), *context.encode(None)])
    if not unit:
        raise RuntimeError(f"{codec} encoder gave no keyframe for {width}x{height}")
    return unit


def decoder_factory(choice: str, device: torch.device, low_latency: bool = False,
                    max_size: tuple[int, int] | None = None) -> Callable[[str], Decoder]:
    """`choice` "auto" | "pyav" | "nvdec" -> a function codec -> new decoder session.

    "auto" takes NVDEC on a GPU instance when PyNvVideoCodec is installed, PyAV otherwise;
    `low_latency` and `max_size` are NVDEC's (see NvDecDecoder). PyAV's decoders hand out I/P
    pictures at once and need no sizing.
    """
    if choice not in ("auto", "pyav", "nvdec"):
        raise ValueError(f"DECODER must be auto, pyav or nvdec, got {choice!r}")
    use_nvdec = choice == "nvdec" or (choice == "auto" and device.type == "cuda" and nvdec_available())
    if use_nvdec:
        if device.type != "cuda":
            raise ValueError("DECODER nvdec needs a KIND_GPU instance")
        return lambda codec: NvDecDecoder(codec, device, low_latency, max_size=max_size)
    return PyAVDecoder
