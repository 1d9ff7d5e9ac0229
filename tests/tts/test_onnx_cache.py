"""The Piper voice's optimised graph, cached (tts_service.onnx_cache): the first load
writes it, later loads read it with optimisation off and synthesize exactly the same
audio; an unusable cached file is replaced, not fatal. Real voice, real onnxruntime."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tts_service import onnx_cache
from tts_service.engines import bundled_piper_voice

SENTENCE = "Hello, how can I help you today?"

pytestmark = pytest.mark.slow  # the real Piper voice in onnxruntime


def options() -> Any:  # an onnxruntime.SessionOptions
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return opts


def audio(session: Any, model: Path) -> np.ndarray:
    from piper import PiperVoice
    from piper.config import PiperConfig, SynthesisConfig

    config = PiperConfig.from_dict(json.loads(Path(f"{model}.json").read_text()))
    voice = PiperVoice(session=session, config=config)
    # No noise: the same graph gives the same samples.
    chunks = voice.synthesize(SENTENCE, SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))
    return np.concatenate([chunk.audio_float_array for chunk in chunks])


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VOICE_CACHE_DIR", str(tmp_path / "cache"))
    return bundled_piper_voice()


def test_the_first_load_caches_the_graph_and_the_next_reads_it(
        model: Path, caplog: pytest.LogCaptureFixture) -> None:
    cached = onnx_cache.cached_path(model)
    assert not cached.exists()
    first = onnx_cache.session(model, options())
    assert cached.is_file() and cached.stat().st_size > 0
    with caplog.at_level(logging.DEBUG, logger="tts_service.onnx_cache"):
        second = onnx_cache.session(model, options())
    assert "from its cached optimised graph" in caplog.text
    assert np.array_equal(audio(first, model), audio(second, model))


def test_an_unusable_cached_graph_is_optimised_again(
        model: Path, caplog: pytest.LogCaptureFixture) -> None:
    cached = onnx_cache.cached_path(model)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not an onnx graph")
    session = onnx_cache.session(model, options())
    assert "unusable" in caplog.text
    assert len(audio(session, model)) > 0
    assert cached.stat().st_size > 1000  # written anew by this load
