"""Decoding the encoded images of a whole dynamic batch at once: per-request results and errors.

On CPU every request is decoded with Pillow; on a CUDA machine with torchvision the JPEGs of all
requests go to nvJPEG in one call, and must equal decoding them one at a time.
"""

from __future__ import annotations

import pytest
import torch

from models.decode import Decoder, ImageDecodeError, decode_cpu, whole_jpeg
from tests.models.model_inputs import encode, synthetic_image

# Synthetic pictures, not skimage's photographs: the GPU machine's scipy (under skimage) needs numpy 2,
# and these tests run there under the stubs' numpy 1.26.
GOOD = [encode(synthetic_image(480, 640, seed)) for seed in range(3)]
TRUNCATED = GOOD[1][:2000]


def test_every_request_gets_its_frames_in_order():
    requests = [[GOOD[0], GOOD[1]], [encode(synthetic_image(240, 320, 7), "PNG")], [GOOD[2]]]
    results = Decoder(torch.device("cpu")).decode_requests(requests)
    assert [len(frames) for frames in results] == [2, 1, 1]
    for items, frames in zip(requests, results):
        for item, frame in zip(items, frames):
            assert torch.equal(frame, decode_cpu(item))


def test_a_corrupt_image_fails_only_its_request():
    results = Decoder(torch.device("cpu")).decode_requests([[GOOD[0]], [TRUNCATED, GOOD[1]], [b""], [GOOD[2]]])
    assert isinstance(results[1], ImageDecodeError) and "corrupt JPEG" in str(results[1])
    assert isinstance(results[2], ImageDecodeError) and "empty image" in str(results[2])
    assert torch.equal(results[0][0], decode_cpu(GOOD[0]))
    assert torch.equal(results[3][0], decode_cpu(GOOD[2]))


def test_only_jpegs_with_their_end_marker_count_as_whole():
    assert whole_jpeg(GOOD[0])
    assert not whole_jpeg(TRUNCATED)
    assert not whole_jpeg(encode(synthetic_image(32, 32, 0), "PNG"))


def test_no_requests_decode_to_nothing():
    assert Decoder(torch.device("cpu")).decode_requests([]) == []


def _nvjpeg_decoder() -> Decoder:
    if not torch.cuda.is_available():
        pytest.skip("nvJPEG needs a CUDA device")
    decoder = Decoder(torch.device("cuda"))
    if not decoder.uses_gpu_jpeg:
        pytest.skip("torchvision with nvJPEG is not installed")
    return decoder


def test_nvjpeg_batch_across_requests_equals_one_at_a_time():
    decoder = _nvjpeg_decoder()
    requests = [[GOOD[0], GOOD[1]], [GOOD[2]], [GOOD[1]]]
    results = decoder.decode_requests(requests)
    for items, frames in zip(requests, results):
        for item, frame in zip(items, frames):
            assert frame.device.type == "cuda"
            assert torch.equal(frame, decoder.decode(item))


def test_nvjpeg_batch_with_a_truncated_image_fails_only_its_request():
    # nvJPEG itself decodes a truncated JPEG into a partly black picture without an error.
    decoder = _nvjpeg_decoder()
    results = decoder.decode_requests([[GOOD[0]], [TRUNCATED, GOOD[1]], [GOOD[2]]])
    assert isinstance(results[1], ImageDecodeError) and "corrupt JPEG" in str(results[1])
    assert torch.equal(results[0][0], decoder.decode(GOOD[0]))
    assert torch.equal(results[2][0], decoder.decode(GOOD[2]))
