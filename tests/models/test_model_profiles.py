"""deploy/model-profiles.yaml is the one source of instance counts and batching: rendering it."""

from __future__ import annotations

import argparse
import shutil
import textwrap

import pytest

from models import cli
from models.profiles import MODEL_REPOSITORY, ProfileError, read_config, render_configs, render_repository
from tritonfleet.triton_server import ModelLoadError


def test_committed_repository_is_the_cpu_profile():
    rendered = render_configs("cpu")
    for name, config in rendered.items():
        assert config == read_config(MODEL_REPOSITORY / name / "config.pbtxt"), f"{name} differs from the cpu profile"


def test_gpu_profile_renders_gpu_instances(tmp_path):
    out = render_repository("gpu", tmp_path / "repo")
    classifier = read_config(out / "image_classifier" / "config.pbtxt")
    assert classifier.instance_group[0].kind == classifier.instance_group[0].KIND_GPU
    assert classifier.max_batch_size == 64 and list(classifier.dynamic_batching.preferred_batch_size) == [16, 32, 64]
    video = read_config(out / "video_pipeline" / "config.pbtxt")
    assert list(video.sequence_batching.oldest.preferred_batch_size) == [8, 16, 32]
    assert (out / "image_classifier" / "1" / "model.py").is_file()
    assert (out / "image_postprocess" / "labels.txt").is_file()
    assert "do not edit" in (out / "video_events" / "config.pbtxt").read_text().splitlines()[0]


def test_a_profile_sets_how_many_sequences_an_instance_takes(tmp_path):
    """Each camera_stream instance admits as many cameras as it keeps decoders for, so the
    sequences spread over the instances instead of filling the first."""
    camera = read_config(render_repository("gpu", tmp_path / "repo") / "camera_stream" / "config.pbtxt")
    candidates = camera.sequence_batching.oldest.max_candidate_sequences
    assert candidates == int(camera.parameters["MAX_DECODERS"].string_value)
    assert candidates != read_config(MODEL_REPOSITORY / "camera_stream" / "config.pbtxt").sequence_batching.oldest.max_candidate_sequences


def write_profiles(tmp_path, body: str):
    path = tmp_path / "profiles.yaml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize(
    "body, message",
    [
        ("profiles: {cpu: {}}", "no profile 'edge'"),
        ("profiles: {edge: {image_classifier: {max_batch_size: 4, colour: red}}}", "unknown keys \\['colour'\\]"),
        ("profiles: {edge: {image_classifier: {max_batch_size: 4, kind: KIND_TPU}}}", "kind must be one of"),
        ("profiles: {edge: {image_classifier: {max_batch_size: 4, preferred_batch_sizes: [8]}}}", "outside 1..max_batch_size"),
        ("profiles: {edge: {image_classifier: {max_batch_size: 4}}}", "must name exactly the models"),
        ("profiles: {edge: {camera_stream: {max_batch_size: 4, max_candidate_sequences: 0}}}",
         "max_candidate_sequences must be >= 1"),
    ],
    ids=["no-profile", "unknown-key", "bad-kind", "preferred-too-big", "missing-models", "candidates-zero"],
)
def test_bad_profiles_are_clear_errors(tmp_path, body, message):
    with pytest.raises(ProfileError, match=message):
        render_configs("edge", profiles=write_profiles(tmp_path, body))


def test_ensemble_may_not_batch_more_than_its_steps(tmp_path):
    text = (MODEL_REPOSITORY.parent / "deploy" / "model-profiles.yaml").read_text()
    path = tmp_path / "profiles.yaml"
    path.write_text(text.replace("image_pipeline:    {max_batch_size: 16}", "image_pipeline:    {max_batch_size: 99}"))
    with pytest.raises(ProfileError, match="ensemble 'image_pipeline' has max_batch_size 99"):
        render_configs("cpu", profiles=path)


def test_only_a_sequence_model_takes_a_candidate_count(tmp_path):
    text = (MODEL_REPOSITORY.parent / "deploy" / "model-profiles.yaml").read_text()
    path = tmp_path / "profiles.yaml"
    path.write_text(text.replace("image_classifier:  {kind: KIND_CPU, count: 1, max_batch_size: 32,",
                                 "image_classifier:  {kind: KIND_CPU, count: 1, max_batch_size: 32, max_candidate_sequences: 8,"))
    with pytest.raises(ProfileError, match="max_candidate_sequences needs the sequence batcher's oldest strategy"):
        render_configs("cpu", profiles=path)


def test_cli_renders_and_reports_errors(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["render-models", "--profile", "gpu", "--out", str(tmp_path / "out")])
    assert args.func(args) == 0
    assert (tmp_path / "out" / "image_pipeline" / "config.pbtxt").is_file()
    args = parser.parse_args(["render-models", "--profile", "nope", "--out", str(tmp_path / "x")])
    assert args.func(args) == 1
    assert "no profile 'nope'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    "old, new, message",
    [
        ("data_type: TYPE_FP32\n  dims: 3", "data_type: TYPE_FP16\n  dims: 3",
         "expects datatype TYPE_FP16 for input 'PIXELS', model provides TYPE_FP32"),
        ("dims: 1000", "dims: 10", "tensor 'LOGITS': the model expects dims \\[1000\\] but the model configuration specifies dims \\[10\\]"),
    ],
    ids=["dtype", "dims"],
)
def test_wrong_config_fails_the_load_with_a_clear_error(tmp_path, triton_fleet, old, new, message):
    repo = render_repository("cpu", tmp_path / "repo")
    for name in ("image_preprocess", "image_postprocess", "image_pipeline", "video_pipeline", "video_events"):
        shutil.rmtree(repo / name)
    config = repo / "image_classifier" / "config.pbtxt"
    assert old in config.read_text()
    config.write_text(config.read_text().replace(old, new))
    with pytest.raises(ModelLoadError, match=f"image_classifier.*{message}"):
        triton_fleet(1, repo=repo)
