"""A real TTS service process on 127.0.0.1, one per test module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from voice_testkit.procs import Proc, base_env, free_port, python_module, running, wait_serving

SERVICE = "voiceai.tts.v1.Synthesizer"


@dataclass
class TtsProcess:
    target: str
    proc: Proc

    def log_records(self, call_id: str | None = None) -> list[dict]:
        """The service's JSON log lines (production format), optionally for one call_id."""
        records = []
        for line in self.proc.output().splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue   # a line still being written
            if call_id is None or record.get("call_id") == call_id:
                records.append(record)
        return records


def start_tts(log_dir: Path, **env: str) -> Iterator[TtsProcess]:
    port = free_port()
    # Production log format (JSON lines with call_id), plus the synthesis timings.
    environment = base_env(TTS_PORT=str(port), TTS_ENABLE_DEBUG="1", DEVELOPMENT_MODE="0",
                           **env)
    target = f"127.0.0.1:{port}"
    with running(python_module("tts_service"), environment, log_dir / "tts.log") as proc:
        wait_serving(target, proc, timeout=120, service=SERVICE)
        yield TtsProcess(target, proc)


@pytest.fixture(scope="module")
def tts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TtsProcess]:
    yield from start_tts(tmp_path_factory.mktemp("tts"))
