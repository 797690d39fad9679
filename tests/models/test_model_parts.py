"""The pieces the Triton models wrap, without a server: network, decoding, labels, video state."""

from __future__ import annotations

import pytest
import torch
from skimage import data

from models.classifier import Classifier, ClassifierSettings, build_network
from models.decode import ImageDecodeError, decode_cpu
from models.labels import load_labels
from models.pipeline import ImagePipeline
from models.resnet import resnet50
from models.video import FrameIn, VideoAnalyzer, VideoSettings
from tests.models.model_inputs import encode


def test_resnet50_has_torchvisions_shape_and_key_names():
    model = resnet50()
    state = model.state_dict()
    # torchvision.models.resnet50(): 25,557,032 parameters; keys a weight file must match.
    assert sum(p.numel() for p in model.parameters()) == 25_557_032
    for key in ("conv1.weight", "layer1.0.downsample.0.weight", "layer3.5.bn3.running_var", "layer4.2.conv3.weight", "fc.bias"):
        assert key in state


def test_seeded_network_is_deterministic_and_seed_dependent():
    a, source = build_network(None, seed=0)
    b, _ = build_network(None, seed=0)
    c, _ = build_network(None, seed=1)
    assert source == "seed 0"
    assert torch.equal(a.fc.weight, b.fc.weight) and torch.equal(a.layer2[0].conv2.weight, b.layer2[0].conv2.weight)
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_weights_file_is_loaded_when_present(tmp_path):
    network, _ = build_network(None, seed=3)
    path = tmp_path / "resnet50.pt"
    torch.save(network.state_dict(), path)
    from_file = Classifier(ClassifierSettings(weights=path, seed=0))
    seeded = Classifier(ClassifierSettings(weights=None, seed=3))
    assert from_file.weights_source == str(path)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(from_file(x), seeded(x))


def test_missing_weights_file_falls_back_to_the_seed(tmp_path):
    classifier = Classifier(ClassifierSettings(weights=tmp_path / "absent.pt", seed=5))
    assert classifier.weights_source == "seed 5"


def test_decode_jpeg_and_png():
    photo = data.chelsea()
    assert torch.equal(decode_cpu(encode(photo, "PNG")), torch.from_numpy(photo))
    jpeg = decode_cpu(encode(photo))
    assert jpeg.shape == photo.shape and jpeg.dtype == torch.uint8
    assert (jpeg.float() - torch.from_numpy(photo).float()).abs().mean() < 3


@pytest.mark.parametrize(
    "payload, message",
    [(b"", "empty image"), (b"BM not supported", "not a JPEG or PNG"), (encode(data.coffee())[:1500], "corrupt JPEG"),
     (encode(data.coffee(), "PNG")[:300], "corrupt PNG")],
    ids=["empty", "bmp", "truncated-jpeg", "truncated-png"],
)
def test_decode_rejects_bad_bytes(payload, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_cpu(payload)


def test_labels_file_must_name_every_class(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\n")
    assert load_labels(path, 2) == ["cat", "dog"]
    with pytest.raises(ValueError, match="names 2 classes, the classifier has 1000"):
        load_labels(path, 1000)


class CountingPipeline(ImagePipeline):
    """The real pipeline, recording how many frames each call classified."""

    def __init__(self):
        super().__init__(Classifier(ClassifierSettings(seed=0)), k=3)
        self.calls: list[int] = []

    def classify_frames(self, frames):
        self.calls.append(len(frames))
        return super().classify_frames(frames)


@pytest.fixture(scope="module")
def pipeline():
    return CountingPipeline()


def frame(value: int, size=(16, 16)) -> torch.Tensor:
    return torch.full((*size, 3), value, dtype=torch.uint8)


def test_analyzer_classifies_on_start_motion_and_every_kth_frame(pipeline):
    analyzer = VideoAnalyzer(pipeline, VideoSettings(motion_threshold=5.0, classify_every=3, scene_threshold=200))
    values = [10, 10, 10, 10, 30, 30]  # still, still, still (3rd since), still, motion 20, still
    flags = []
    for index, value in enumerate(values):
        (result,) = analyzer.step([FrameIn(stream=1, frame=frame(value), start=index == 0, end=False)])
        flags.append(result.classified)
        assert result.frame_index == index
    assert flags == [True, False, False, True, True, False]


def test_analyzer_batches_streams_without_mixing_them(pipeline):
    analyzer = VideoAnalyzer(pipeline, VideoSettings(motion_threshold=1000, scene_threshold=1000))
    first = analyzer.step([FrameIn(1, frame(0), True, False), FrameIn(2, frame(100, (8, 12)), True, False)])
    second = analyzer.step([FrameIn(2, frame(110, (8, 12)), False, False), FrameIn(1, frame(3), False, True)])
    assert [r.motion for r in first] == [0.0, 0.0]
    assert [r.motion for r in second] == [pytest.approx(10.0), pytest.approx(3.0)]
    assert set(analyzer.streams) == {2}, "an ended stream leaves no state behind"


def test_analyzer_scene_change_resets_the_background(pipeline):
    analyzer = VideoAnalyzer(pipeline, VideoSettings(scene_threshold=50, background_alpha=0.5))
    results = [analyzer.step([FrameIn(1, frame(v), i == 0, False)])[0] for i, v in enumerate([0, 20, 200, 200])]
    assert [r.scene_change for r in results] == [False, False, True, False]


def test_analyzer_errors_stay_with_their_frame(pipeline):
    analyzer = VideoAnalyzer(pipeline)
    analyzer.step([FrameIn(1, frame(0), True, False)])
    results = analyzer.step([
        FrameIn(1, frame(0, (4, 4)), False, False),
        FrameIn(9, frame(0), False, False),
        FrameIn(2, torch.zeros(4, 4, dtype=torch.float32), True, False),
        FrameIn(1, frame(5), False, False),
    ])
    assert "changed frame size" in str(results[0])
    assert "has no state" in str(results[1])
    assert "uint8" in str(results[2])
    assert results[3].motion == pytest.approx(5.0)


def test_idle_streams_are_dropped(pipeline, monkeypatch):
    analyzer = VideoAnalyzer(pipeline, VideoSettings(idle_timeout_s=10))
    analyzer.step([FrameIn(1, frame(0), True, False)])
    clock = [1e6]
    monkeypatch.setattr("models.video.time.monotonic", lambda: clock[0])
    analyzer.step([FrameIn(2, frame(0), True, False)])
    assert set(analyzer.streams) == {2}


def test_settings_reject_nonsense():
    with pytest.raises(ValueError, match="classify_every"):
        VideoSettings(classify_every=0)
    with pytest.raises(ValueError, match="background_alpha"):
        VideoSettings(background_alpha=0)


def test_two_frames_of_one_stream_in_a_batch_are_taken_in_order(pipeline):
    analyzer = VideoAnalyzer(pipeline, VideoSettings(scene_threshold=1000))
    results = analyzer.step([FrameIn(1, frame(0), True, False), FrameIn(1, frame(4), False, False), FrameIn(1, frame(10), False, True)])
    assert [r.frame_index for r in results] == [0, 1, 2]
    assert [r.motion for r in results] == [0.0, pytest.approx(4.0), pytest.approx(6.0)]
    assert not analyzer.streams
