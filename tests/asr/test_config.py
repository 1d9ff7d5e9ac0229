"""Bad environment: the service exits 2 with one line naming the variable."""

from __future__ import annotations

import subprocess

import pytest

from voice_testkit.procs import ROOT, base_env, python_module


def run_with(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(python_module("asr_service"), env=base_env(ASR_PORT="0", **env),
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("env", "names"), [
    ({"VOSK_MODEL_PATH": "/nonexistent/vosk-model"}, ["VOSK_MODEL_PATH", "does not exist"]),
    ({"ASR_ENGINE": "foo"}, ["ASR_ENGINE", "'foo'"]),
    ({"ASR_MAX_CHUNK_BYTES": "64000"}, ["ASR_MAX_CHUNK_BYTES", "32000"]),
    ({"ASR_MAX_CONCURRENT_STREAMS": "0"}, ["ASR_MAX_CONCURRENT_STREAMS"]),
    ({"ASR_PAUSE_S": "0.6"}, ["ASR_PAUSE_S=0.6", "ASR_ENDPOINT_SILENCE_S=0.5"]),
    ({"ASR_VAD_MODE": "4"}, ["ASR_VAD_MODE"]),
])
def test_bad_environment_exits_2_with_one_line(env: dict[str, str], names: list[str]) -> None:
    result = run_with(**env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("asr-service: configuration error:")
    for name in names:
        assert name in lines[0]


def test_model_path_that_is_a_file_exits_2(tmp_path) -> None:
    not_a_dir = tmp_path / "model.bin"
    not_a_dir.write_bytes(b"x")
    result = run_with(VOSK_MODEL_PATH=str(not_a_dir))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"asr-service: configuration error: VOSK_MODEL_PATH='{not_a_dir}': not a directory"
    ]


def test_directory_without_a_vosk_model_exits_2(tmp_path) -> None:
    result = run_with(VOSK_MODEL_PATH=str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"asr-service: configuration error: VOSK_MODEL_PATH='{tmp_path}': "
        "not a Vosk model directory (no am/final.mdl)"
    ]


def test_endpoint_silence_is_validated() -> None:
    import subprocess

    from voice_testkit.procs import base_env, python_module

    result = subprocess.run(python_module("asr_service"),
                            env=base_env(ASR_ENDPOINT_SILENCE_S="0"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "ASR_ENDPOINT_SILENCE_S='0'" in result.stderr
