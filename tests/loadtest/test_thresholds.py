"""Thresholds against a real Triton server: met (exit 0), missed (exit 99, with what and by how much),
applied to a live run and to saved results alike."""

from __future__ import annotations

import re

import pytest

from loadtest.results import RunResult
from loadtest.thresholds import THRESHOLDS_MISSED
from tritonfleet.cli import main as cli_main

# No gRPC call completes within a nanosecond, and none takes a minute on these models: limits on
# either side of every possible measurement, so the outcome never rests on how fast the host is.
IMPOSSIBLE_MS, UNMISSABLE_MS = "0.000001", "60000"


def load(kind: str, url: str, output, *extra: str) -> int:
    model = {"image": ["--model", "tiny_image"],
             "video": ["--model", "tiny_stream", "--datatype", "BYTES", "--fps", "10", "--streams", "2"]}
    return cli_main(["loadtest", kind, "--url", url, *model[kind], "--workers", "1", "--warmup", "0", "--quiet",
                     "--duration", "1", "-o", str(output), *extra])


def misses(stderr: str) -> dict[str, str]:
    return dict(re.findall(r"^threshold (--[a-z0-9-]+) missed: (.*)$", stderr, re.M))


@pytest.fixture(scope="module")
def saved_image(tiny_server, tmp_path_factory):
    path = tmp_path_factory.mktemp("thresholds") / "image.json"
    assert load("image", tiny_server.grpc_url, path, "--rate", "20") == 0
    return path


def test_a_run_that_meets_its_thresholds_exits_zero(tiny_server, tmp_path, capsys):
    code = load("image", tiny_server.grpc_url, tmp_path / "run.json", "--rate", "20",
                "--max-p99-ms", UNMISSABLE_MS, "--max-error-rate", "0", "--min-throughput", "0.5")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "thresholds met: --max-p99-ms, --max-error-rate, --min-throughput" in err


def test_a_run_that_misses_exits_99_saying_which_and_by_how_much(tiny_server, tmp_path, capsys):
    output = tmp_path / "run.json"
    code = load("image", tiny_server.grpc_url, output, "--rate", "20",
                "--max-p99-ms", IMPOSSIBLE_MS, "--max-p50-ms", UNMISSABLE_MS, "--min-throughput", "1e9")
    assert code == THRESHOLDS_MISSED
    missed = misses(capsys.readouterr().err)
    assert set(missed) == {"--max-p99-ms", "--min-throughput"}
    p99 = RunResult.load(output).to_dict()["summary"]["latency_ms"]["p99"]  # the result is still written
    assert missed["--max-p99-ms"] == (f"p99 latency {p99:.6g} ms > 1e-06 ms (by {p99 - 1e-6:.6g} ms)")
    assert re.fullmatch(r"answered requests per second [\d.]+ /s < 1e\+09 /s \(by [\d.e+]+ /s\)",
                        missed["--min-throughput"])


def test_errors_miss_the_error_rate_and_leave_no_latency_to_meet(tiny_server, tmp_path, capsys):
    code = cli_main(["loadtest", "image", "--url", tiny_server.grpc_url, "--model", "no_such_model", "--rate", "20",
                     "--duration", "1", "--warmup", "0", "--workers", "1", "--quiet", "-o", str(tmp_path / "run.json"),
                     "--max-error-rate", "0.5", "--max-p99-ms", UNMISSABLE_MS])
    assert code == THRESHOLDS_MISSED
    missed = misses(capsys.readouterr().err)
    assert missed["--max-error-rate"] == "error rate 1 > 0.5 (by 0.5)"
    assert missed["--max-p99-ms"] == f"p99 latency none (no call succeeded), limit {UNMISSABLE_MS} ms"


def test_report_gates_on_a_saved_run(saved_image, capsys):
    assert cli_main(["loadtest", "report", str(saved_image), "--max-p99-ms", UNMISSABLE_MS]) == 0
    assert cli_main(["loadtest", "report", str(saved_image), "--max-p99-ms", IMPOSSIBLE_MS]) == THRESHOLDS_MISSED
    assert "--max-p99-ms" in misses(capsys.readouterr().err)


def test_video_limits_on_an_image_result_are_a_clear_error(saved_image, capsys):
    assert cli_main(["loadtest", "report", str(saved_image), "--min-fps", "10"]) == 2
    assert "--min-fps apply to video runs, not to image runs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["loadtest", "image", "--url", "127.0.0.1:1", "--max-late-frames", "0"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("flag, value, message", [
    ("--max-error-rate", "1.5", "a share from 0 to 1"),
    ("--max-p99-ms", "-1", "must be a number of at least 0"),
    ("--max-p99-ms", "nan", "must be a number of at least 0"),
])
def test_bad_limits_are_refused_before_any_load(tmp_path, capsys, flag, value, message):
    output = tmp_path / "run.json"
    try:
        code = load("image", "127.0.0.1:1", output, flag, value)
    except SystemExit as exit_info:
        code = exit_info.code
    assert code == 2 and message in capsys.readouterr().err
    assert not output.exists()


def test_a_model_slower_than_the_frame_period_misses_every_video_limit(tiny_server, tmp_path, capsys):
    # tiny_stream_slow answers in 150 ms: at 10 FPS every answer is late and the slot after it is
    # dropped, so no stream reaches 10 FPS whatever the host's speed.
    output = tmp_path / "video.json"
    code = cli_main(["loadtest", "video", "--url", tiny_server.grpc_url, "--model", "tiny_stream_slow",
                     "--datatype", "BYTES", "--fps", "10", "--streams", "2", "--duration", "2", "--warmup", "0",
                     "--workers", "1", "--quiet",
                     "-o", str(output), "--min-fps", "10", "--max-late-frames", "0", "--max-dropped-frames", "0"])
    assert code == THRESHOLDS_MISSED
    missed = misses(capsys.readouterr().err)
    assert set(missed) == {"--min-fps", "--max-late-frames", "--max-dropped-frames"}
    summary = RunResult.load(output).to_dict()["summary"]["video"]
    assert missed["--max-late-frames"] == f"late frames {summary['late']} > 0 (by {summary['late']})"
    assert missed["--max-dropped-frames"] == f"dropped frames {summary['dropped']} > 0 (by {summary['dropped']})"
    slowest = min(summary["per_stream"], key=lambda row: row["answered"] / row["slots"])
    fps = 10 * slowest["answered"] / slowest["slots"]
    assert missed["--min-fps"] == (f"stream {slowest['stream']}'s achieved FPS {fps:.6g} FPS < 10 FPS "
                                   f"(by {10 - fps:.6g} FPS)")


def test_camera_streams_that_keep_up_meet_min_fps(tiny_server, tmp_path, capsys):
    # A fast model at 10 FPS: the floor is a tenth of the asked rate, far from any scheduling jitter.
    code = load("video", tiny_server.grpc_url, tmp_path / "video.json", "--min-fps", "1", "--max-error-rate", "0")
    assert code == 0, capsys.readouterr().err


def test_a_sweep_checks_the_thresholds_on_the_level_it_settles_on(tiny_server, tmp_path, capsys):
    output = tmp_path / "sweep.json"
    code = cli_main(["loadtest", "sweep", "image", "--url", tiny_server.grpc_url, "--model", "tiny_image",
                     "--workers", "1", "--warmup", "0", "--quiet", "--slo-ms", UNMISSABLE_MS, "--start", "20",
                     "--limit", "20", "--trial", "1", "-o", str(output), "--max-p99-ms", IMPOSSIBLE_MS])
    assert code == THRESHOLDS_MISSED
    assert set(misses(capsys.readouterr().err)) == {"--max-p99-ms"}
    assert RunResult.load(output).sweep.slo_ms == float(UNMISSABLE_MS)
