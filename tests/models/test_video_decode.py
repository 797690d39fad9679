"""NVDEC's errors, as the camera model sees them: a refused access unit is a CorruptAccessUnit.

PyNvVideoCodec needs an NVIDIA GPU. Where it is missing (CI), a stand-in for the library with its
error types' names (read from PyNvVideoCodec 2.2.4) drives `NvDecDecoder`; where it is installed,
the names are checked against the real module.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from models.video_decode import CorruptAccessUnit, NvDecDecoder, library_errors, nvdec_available


class PyNvVCException(Exception):
    pass


class PyNvVCExceptionUnsupported(Exception):
    pass


def decoder_raising(error: Exception) -> NvDecDecoder:
    """An NvDecDecoder over a stand-in for PyNvVideoCodec (its error types, PacketData and a
    decoder session) whose Decode raises `error`."""
    library = SimpleNamespace(
        PyNvVCException=PyNvVCException, PyNvVCExceptionUnsupported=PyNvVCExceptionUnsupported,
        PacketData=SimpleNamespace, VideoPacketFlag=SimpleNamespace(ENDOFPICTURE=1),
    )
    decoder = NvDecDecoder.__new__(NvDecDecoder)  # __init__ would open a session on a GPU
    decoder._nvc, decoder._low_latency = library, True
    decoder._decoder = SimpleNamespace(Decode=lambda packet: (_ for _ in ()).throw(error))
    return decoder


@pytest.mark.parametrize("error", [PyNvVCException("cuvidDecodePicture failed: 1"),
                                   PyNvVCExceptionUnsupported("unsupported: 4:4:4 H.264")])
def test_an_access_unit_nvdec_refuses_is_a_corrupt_access_unit(error):
    with pytest.raises(CorruptAccessUnit, match=f"NVDEC refused the access unit: {error}"):
        decoder_raising(error).decode(b"\x00\x00\x00\x01\x65\x88")


def test_an_error_that_is_not_nvdecs_is_not_taken_for_a_corrupt_unit():
    with pytest.raises(MemoryError):
        decoder_raising(MemoryError("out of host memory")).decode(b"\x00\x00\x00\x01\x65\x88")


@pytest.mark.skipif(not nvdec_available(), reason="PyNvVideoCodec (NVDEC) is not installed here")
def test_the_error_types_caught_are_pynvvideocodecs_own():
    import PyNvVideoCodec

    assert all(issubclass(error, BaseException) for error in library_errors(PyNvVideoCodec))
