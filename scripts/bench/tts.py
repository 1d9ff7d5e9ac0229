"""TTS service: time to first audio and real-time factor, over real gRPC on 127.0.0.1.

Starts `python -m tts_service` (the bundled Piper voice unless TTS_VOICE says
otherwise) and measures, as the core would see it, one request at a time:

- time to first audio: from sending Synthesize to receiving the first AudioChunk;
- real-time factor: time to the last chunk / seconds of audio received (< 1 is
  faster than real time);

for a 10-word and a 40-word text, with each voice given by --voices, median and
max over --runs requests (after one unmeasured request per text).

    .venv/bin/python scripts/bench/tts.py [--runs 7] [--rate 8000] [--onnx-threads 1]
        [--voices piper:en_US-joe-medium,espeak-ng:en-us] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from report import write_section

from voice_testkit.procs import (
    base_env,
    free_port,
    python_module,
    running,
    wait_serving,
)
from voiceai.tts.v1 import tts_pb2, tts_pb2_grpc

SERVICE = "voiceai.tts.v1.Synthesizer"
TARGET_FIRST_AUDIO_MS = 150.0
TEXTS = {
    # A typical first reply: the service starts with the clause before the comma.
    "10 words": "Thank you for calling, how can I help you today?",
    # The same length with no pause to cut at: the whole sentence comes first.
    "10 words, one clause": "The quick brown fox jumps over the lazy dog today.",
    "40 words": (
        "Your current balance is two hundred and fifteen dollars. "
        "The last payment of fifty dollars was received on Monday, and no further "
        "payments are due this month. Would you like me to send a statement to your "
        "email address, or is there anything else?"
    ),
}


@dataclass
class Run:
    first_audio_s: float
    total_s: float
    audio_s: float

    @property
    def rtf(self) -> float:
        return self.total_s / self.audio_s


def measure(stub: tts_pb2_grpc.SynthesizerStub, text: str, voice: str, rate: int) -> Run:
    request = tts_pb2.SynthesizeRequest(text=text, voice=voice, sample_rate_hz=rate,
                                        call_id="bench")
    started = time.perf_counter()
    first = None
    samples = 0
    chunk_rate = rate
    for chunk in stub.Synthesize(request, timeout=120):
        if first is None:
            first = time.perf_counter() - started
        samples += len(chunk.audio) // 2
        chunk_rate = chunk.sample_rate_hz
    total = time.perf_counter() - started
    assert first is not None and samples > 0, "no audio came back"
    return Run(first, total, samples / chunk_rate)


def run(runs: int, rate: int, voices: list[str], onnx_threads: int
        ) -> list[tuple[str, str, list[Run]]]:
    port = free_port()
    target = f"127.0.0.1:{port}"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        env = base_env(TTS_PORT=str(port), TTS_ONNX_THREADS=str(onnx_threads))
        with running(python_module("tts_service"), env, Path(tmp) / "tts.log") as proc:
            wait_serving(target, proc, timeout=120, service=SERVICE)
            with grpc.insecure_channel(target) as channel:
                stub = tts_pb2_grpc.SynthesizerStub(channel)
                for voice in voices:
                    for label, text in TEXTS.items():
                        measure(stub, text, voice, rate)     # unmeasured: caches, JIT paths
                        results.append(
                            (voice, label, [measure(stub, text, voice, rate)
                                            for _ in range(runs)]))
    return results


def render(results: list[tuple[str, str, list[Run]]], args: argparse.Namespace,
           load: tuple[float, float, float]) -> str:
    runs, rate = args.runs, args.rate
    lines = [
        f"One request at a time, {runs} runs each after one unmeasured run, output "
        f"{rate} Hz, TTS_ONNX_THREADS={args.onnx_threads}; first audio = request sent to "
        f"first AudioChunk received; RTF = time to the last chunk / audio length. "
        f"Target: first audio <= "
        f"{TARGET_FIRST_AUDIO_MS:.0f} ms for 10 words (Piper). Load average before/after "
        f"the run: {load[0]:.1f} / {os.getloadavg()[0]:.1f} (the machine is shared; Piper's "
        f"times scale with the CPU it gets).",
        "",
        "| voice | text | audio (s) | first audio median (ms) | first audio max (ms) "
        "| RTF median |",
        "|---|---|---|---|---|---|",
    ]
    for voice, label, measured in results:
        firsts = [r.first_audio_s * 1000 for r in measured]
        lines.append(
            f"| {voice} | {label} | {statistics.median(r.audio_s for r in measured):.2f} "
            f"| {statistics.median(firsts):.0f} | {max(firsts):.0f} "
            f"| {statistics.median(r.rtf for r in measured):.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--rate", type=int, default=8000)
    parser.add_argument("--voices", default="piper:en_US-joe-medium,espeak-ng:en-us")
    parser.add_argument("--onnx-threads", type=int, default=2,
                        help="TTS_ONNX_THREADS for the service (0: onnxruntime's default)")
    parser.add_argument("--no-write", action="store_true", help="only print the figures")
    args = parser.parse_args()
    voices = [v for v in args.voices.split(",") if v]
    load = os.getloadavg()
    body = render(run(args.runs, args.rate, voices, args.onnx_threads), args, load)
    print(body)
    if not args.no_write:
        print(f"written to {write_section('tts', 'TTS', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
