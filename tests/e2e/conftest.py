"""Each end-to-end test starts its own core against the session's real services (`ai`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AiServices
from voice_testkit.stack import Core, core


@pytest.fixture
def start_core(ai: AiServices, tmp_path: Path):
    """Start a core against the session's services: `with start_core(**env) as c:`."""

    @contextlib.contextmanager
    def starter(**env: str) -> Iterator[Core]:
        with core(tmp_path, ai.asr.target, ai.llm.target, ai.tts.target, **env) as running:
            yield running

    return starter
