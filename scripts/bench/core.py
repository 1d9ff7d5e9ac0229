#!/usr/bin/env python3
"""Benchmark the whole call path through real SIP calls: turn latency and capacity.

Starts ASR, LLM and TTS (voice_testkit.stack.ai_stack) and a core on 127.0.0.1, with
one of two engine mixes (--stack):

- default: the dev stack's default models and settings (process-compose.yaml): Whisper
  tiny.en, SmolLM2-135M-Instruct, Piper, each service with its debug settings
  (ASR_ENABLE_DEBUG=1, VOSK_SHOW_WORDS=1, ...) at nice 10, the core with core/bot.toml,
  DEVELOPMENT_MODE=1 and DEBUG logs, the bot's tools on a mock bank of its own. The
  caller says utterances of the evaluation set (tests/data/eval/conversation.toml: the
  bank's questions and off-topic ones, plain and varied phrasings), spoken by the TTS
  service's default voice;
- demo: the embedded demo engines (pocketsphinx, the demo LLM, Piper), the core in
  production logging, and the demo's own questions: the figures of earlier runs.

Then:
1. one call, N turns (--turns): turn latency measured at the caller (end of its speech
   to the first reply audio), p50/p95, with the core's per-stage breakdown from its
   transcript (GET /calls/{Call-ID}/transcript) and what it heard and said;
2. capacity: K simultaneous calls (--calls), each greeted, then --call-turns turns; a
   level passes when every reply is delivered (a reply turn done and its audio heard by
   the caller) and the outbound RTP jitter p99 (deviation of packet gaps from 20 ms, at
   the caller) stays under 5 ms. Per level: the caller's latency, the core's stages, the
   CPU seconds each process used and the machine's load average.
A caller speaks only once the core says the bot's turn has ended and its audio played
out (GET /calls), never after a guessed quiet spell.
Prints the figures and writes the stack's part of the "core" section of docs/benchmarks.md.

Usage: .venv/bin/python scripts/bench/core.py [--stack default|demo] [--turns N]
           [--calls 1,2,4,6] [--call-turns 2] [--note TEXT] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from report import DOC, write_section

from opensips_ai_core.devtools.sip_uac import SipCaller, make_sdp, parse_media_address
from opensips_ai_core.devtools.softphone import RtpPeer, synthesize
from voice_testkit.bank import mock_bank
from voice_testkit.eval_set import carries, is_refusal, load_eval_set
from voice_testkit.procs import ROOT
from voice_testkit.stack import STACK_NAMES, AiStack, Core, ai_stack, core

# The demo's own questions (its phrase list knows them).
QUESTIONS = ["what is my balance", "what are your opening hours", "i lost my card",
             "i want to talk to a person"]
# As in process-compose.yaml: the AI services yield the CPU to the core's media.
SERVICE_NICE = 10
TURN_LINE = re.compile(r"Turn timing \S+: (.*)")
TRAILING_SILENCE_S = 0.5  # silence the caller sends after each utterance
SPEECH_LEVEL = 500  # a sample louder than this is speech (the TTS voice's own tail is not)
WAIT_S = 90.0             # bound on any one wait (a turn, a greeting) of a loaded machine
POLL_S = 0.2
STAGES = ["asr_final", "llm_first_token", "tts_request", "tts_first_audio", "first_rtp"]


@dataclass
class Said:
    text: str
    kind: str = "demo"
    expect: tuple[tuple[str, ...], ...] = ()


@dataclass
class TurnOutcome:
    said: Said
    latency_ms: float | None  # at the caller, from the end of its speech
    heard: str = ""
    reply: str = ""
    outcome: str = ""
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def delivered(self) -> bool:
        return self.latency_ms is not None and self.outcome == "done" and bool(self.reply)

    @property
    def verdict(self) -> str:
        if not self.delivered:
            return "lost"
        if self.said.kind == "demo":
            return "-"
        if self.said.kind == "refuse":
            return "right" if is_refusal(self.reply) else "wrong"
        if carries(self.reply, self.said.expect):
            return "right"
        return "honest" if is_refusal(self.reply) else "wrong"


@dataclass
class CallResult:
    turns: list[TurnOutcome]
    jitter: list[float]
    error: str = ""


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def caller_speech(stack: str) -> list[Said]:
    if stack == "demo":
        return [Said(q) for q in QUESTIONS]
    # Questions the bot knows, ones it must refuse, and small talk (the LLM generates its
    # reply), in plain and varied words; not
    # the transfers or goodbyes (they end the call), nor hesitations (no reply is due).
    said = [Said(u.text, u.kind, u.expect) for u in load_eval_set()
            if u.kind in ("fact", "refuse", "greet") and u.style in ("plain", "variant")]
    # A fixed mix of topics, so that a few turns are not all about opening hours; the
    # small talk second, so that each level has an LLM generation (a question is answered
    # by a knowledge line or refused without one).
    random.Random(11).shuffle(said)
    said.sort(key=lambda s: s.kind != "greet")
    return said[1:2] + said[:1] + said[2:]


# --- the core's account of a call -----------------------------------------------------------


class CoreView:
    """The core's HTTP API: its calls (GET /calls, one poll for all callers) and a call's
    transcript by SIP Call-ID."""

    def __init__(self, running: Core) -> None:
        self.core = running
        self.calls: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CoreView:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _poll(self) -> None:
        while True:
            try:
                calls = await asyncio.to_thread(self.core.calls)
                self.calls = {c["call_id"]: c for c in calls}
            except OSError:
                pass
            await asyncio.sleep(POLL_S)

    async def transcript(self, sip_call_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                found = await asyncio.to_thread(self.core.transcript, sip_call_id)
            except OSError:  # a busy core: ask again
                found = None
            if found is not None:
                return found
            await asyncio.sleep(POLL_S)
        raise RuntimeError(f"no transcript for {sip_call_id}")

    async def bot_done(self, call_id: str, turns: int) -> None:
        """Until the call has `turns` turns ended and the bot no longer talks."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            call = self.calls.get(call_id)
            if call is not None and Core.turn_over(call, turns):
                return
            await asyncio.sleep(POLL_S / 2)
        raise RuntimeError(f"call {call_id}: turn {turns} not over within {WAIT_S:.0f} s")

    async def reply(self, sip_call_id: str, call_id: str, after: int) -> list[dict[str, Any]]:
        """The turns past the first `after` once the reply to the caller's utterance has
        played out (Core.reply_settled: not a part cut off by the rest of the utterance)."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            call = self.calls.get(call_id)
            if call is not None and Core.turn_over(call, after + 1):
                try:
                    found = await asyncio.to_thread(self.core.transcript, sip_call_id)
                except OSError:  # a busy core: ask again
                    found = None
                if found is not None and Core.reply_settled(found, after):
                    turns: list[dict[str, Any]] = found["turns"][after:]
                    return turns
            await asyncio.sleep(POLL_S)
        raise RuntimeError(f"call {call_id}: no reply after turn {after} within {WAIT_S:.0f} s")


# --- the caller -----------------------------------------------------------------------------


async def dial(sip_port: int) -> tuple[SipCaller, RtpPeer]:
    rtp = await RtpPeer().open()
    sip = await SipCaller(("127.0.0.1", sip_port)).open()
    answer = await sip.invite(make_sdp("127.0.0.1", rtp.local_port))
    if answer.status != 200:
        raise RuntimeError(f"call refused: {answer.status}")
    ip, port, _ = parse_media_address(answer.body)
    rtp.start((ip, port))
    return sip, rtp


def jitter_ms(rtp: RtpPeer) -> list[float]:
    times = [f.at for f in rtp.frames]
    return [abs((b - a) * 1000 - 20.0) for a, b in itertools.pairwise(times)]


async def call(view: CoreView, sip_port: int, script: list[tuple[Said, np.ndarray]]) \
        -> CallResult:
    """One call: the greeting, then each utterance once the bot's reply to the previous one
    has played out (an utterance heard as two parts is one turn of the caller's here)."""
    sip, rtp = await dial(sip_port)
    turns: list[TurnOutcome] = []
    try:
        call_id = (await view.transcript(sip.call_id))["call_id"]
        await view.bot_done(call_id, 1)  # the greeting
        ended = 1
        for said, pcm in script:
            rtp.play(pcm)
            end = await rtp.wait_played()
            new = await view.reply(sip.call_id, call_id, ended)
            ended += len(new)
            speech = rtp.speech_frames_after(end)
            latency = ((speech[0].at - end + quiet_tail_s(pcm)) * 1000 if speech else None)
            # The reply to this utterance: a line the core says after it (a transfer this
            # caller refuses: "I couldn't put you through") is not the reply.
            last = next((t for t in reversed(new) if t["kind"] == "reply"), new[-1])
            turns.append(TurnOutcome(
                said, latency, heard=" ".join(t["heard"] for t in new if t.get("heard")),
                reply=last.get("said") or "" if last["kind"] == "reply" else "",
                outcome=last.get("outcome") or "", stages=last.get("stages_ms") or {}))
        return CallResult(turns, jitter_ms(rtp))
    except (RuntimeError, OSError) as err:
        return CallResult(turns, jitter_ms(rtp), str(err))
    finally:
        await sip.bye()
        await rtp.close()
        sip.close()


def quiet_tail_s(pcm: np.ndarray) -> float:
    """How long the utterance's audio goes on after its last loud sample: the end of the
    caller's speech is that much before the last frame sent."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > SPEECH_LEVEL)
    return (len(pcm) - (int(loud[-1]) + 1 if loud.size else 0)) / 8000


# The TTS voice's own quiet ending of each utterance (s), for the report.
VOICE_TAILS: list[float] = []


async def speech_audio(tts: str, said: list[Said]) -> list[np.ndarray]:
    trailing = np.zeros(int(8000 * TRAILING_SILENCE_S), np.int16)
    audio = [np.concatenate([await synthesize(tts, s.text), trailing]) for s in said]
    VOICE_TAILS.extend(quiet_tail_s(pcm) - TRAILING_SILENCE_S for pcm in audio)
    return audio


async def latency_run(running: Core, tts: str, said: list[Said], turns: int) -> CallResult:
    script = [said[i % len(said)] for i in range(turns)]
    audio = await speech_audio(tts, script)
    async with CoreView(running) as view:
        return await call(view, running.sip_port, list(zip(script, audio, strict=True)))


async def capacity_level(running: Core, tts: str, said: list[Said], calls: int,
                         call_turns: int) -> list[CallResult]:
    # Call k says utterances k, k+calls, ...: different words in each call at once.
    scripts = [[said[(k + t * calls) % len(said)] for t in range(call_turns)]
               for k in range(calls)]
    audio = await speech_audio(tts, [s for script in scripts for s in script])
    pcm = iter(audio)
    async with CoreView(running) as view:
        results = await asyncio.gather(
            *(call(view, running.sip_port, [(s, next(pcm)) for s in script])
              for script in scripts), return_exceptions=True)
    return [r if isinstance(r, CallResult) else CallResult([], [], repr(r)) for r in results]


# --- figures --------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds (user + system) each named process, with its children, used."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            total = 0.0
            try:
                proc = psutil.Process(pid)
                for p in [proc, *proc.children(recursive=True)]:
                    times = p.cpu_times()
                    total += times.user + times.system
            except psutil.Error:
                pass
            out[name] = total
        return out

    def used(self) -> dict[str, float]:
        now = self._read()
        return {name: now[name] - self.start[name] for name in now}


def parse_turns(log: str) -> list[dict[str, float]]:
    """The core's `Turn timing` lines (JSON lines in production mode)."""
    out = []
    for raw in log.splitlines():
        text = raw
        if raw.startswith("{"):
            try:
                text = json.loads(raw).get("message", "")
            except ValueError:
                continue
        match = TURN_LINE.search(re.sub(r"\x1b\[[0-9;]*m", "", text))
        if match:
            out.append({k: float(v.rstrip("ms")) for k, v in
                        (p.split("=") for p in match.group(1).split())})
    return out


@dataclass
class Level:
    calls: int
    results: list[CallResult]
    cpu: dict[str, float]
    wall_s: float
    load: tuple[float, float, float]
    call_turns: int = 1

    @property
    def turns(self) -> list[TurnOutcome]:
        return [t for r in self.results for t in r.turns]

    @property
    def expected(self) -> int:
        return self.calls * self.call_turns

    @property
    def delivered(self) -> int:
        return sum(t.delivered for t in self.turns)

    @property
    def jitter(self) -> list[float]:
        return [j for r in self.results for j in r.jitter]

    @property
    def passed(self) -> bool:
        return self.delivered == self.expected and pct(self.jitter, 99) < 5.0

    def latencies(self) -> list[float]:
        return [t.latency_ms for t in self.turns if t.latency_ms is not None]

    def stage(self, name: str) -> list[float]:
        return [t.stages[name] for t in self.turns if t.delivered and name in t.stages]


def verdicts(turns: list[TurnOutcome]) -> str:
    counts = {v: sum(t.verdict == v for t in turns) for v in ("right", "honest", "wrong", "lost")}
    return " / ".join(str(counts[v]) for v in ("right", "honest", "wrong", "lost"))


def level_rows(levels: list[Level], stack: str) -> list[str]:
    head = ("| calls | replies delivered | caller latency p50 / max (ms) | asr_final p50 / max"
            " | tts_first_audio p50 / max | first_rtp p50 / max | jitter p50 / p99 (ms) |"
            " CPU-s ASR / LLM / TTS / core | wall (s) | load avg |")
    rows = [head, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    if stack == "default":
        rows[0] = head + " right / honest / wrong / lost |"
        rows[1] += "---:|"
    for lv in levels:
        lat = lv.latencies()

        def span(values: list[float]) -> str:
            return f"{pct(values, 50):.0f} / {max(values):.0f}" if values else "-"

        cpu = " / ".join(f"{lv.cpu.get(k, 0):.1f}" for k in ("asr", "llm", "tts", "core"))
        row = (f"| {lv.calls} | {lv.delivered}/{lv.expected} | {span(lat)} | "
               f"{span(lv.stage('asr_final'))} | {span(lv.stage('tts_first_audio'))} | "
               f"{span(lv.stage('first_rtp'))} | {pct(lv.jitter, 50):.2f} / "
               f"{pct(lv.jitter, 99):.2f} | {cpu} | {lv.wall_s:.0f} | "
               f"{lv.load[0]:.1f} |")
        if stack == "default":
            row += f" {verdicts(lv.turns)} |"
        rows.append(row)
    return rows


def examples(levels: list[Level], limit: int = 8) -> list[str]:
    """What the callers said, what the core heard and what the bot replied: the largest level
    first, the lost turns and the errors first."""
    out: list[str] = []
    for lv in sorted(levels, key=lambda lv: -lv.calls):
        for r in lv.results:
            if r.error:
                out.append(f"- {lv.calls} call(s): a call failed: {r.error}")
        where = f"{lv.calls} calls" if lv.calls > 1 else "1 call"
        for t in sorted(lv.turns, key=lambda t: t.verdict == "right"):
            out.append(f"- {where}, {t.verdict}: \"{t.said.text}\" heard \"{t.heard}\""
                       f" -> \"{t.reply[:140]}\"")
        if len(out) >= limit:
            break
    return out[:limit]


# --- the run --------------------------------------------------------------------------------


@contextmanager
def started(stack: str, logs: Path, tts_cache: bool) -> Iterator[tuple[AiStack, Core]]:
    with ExitStack() as es:
        ai = es.enter_context(ai_stack(stack, logs, nice=SERVICE_NICE))  # type: ignore[arg-type]
        if stack == "demo":
            core_env = dict(CORE_MAX_CALLS="200", DEVELOPMENT_MODE="0", CORE_LOG_LEVEL="INFO")
        else:
            # The dev stack's core (process-compose.yaml), its tools on a bank of its own.
            bank = es.enter_context(mock_bank(logs))
            core_env = dict(CORE_MAX_CALLS="200", DEVELOPMENT_MODE="1", CORE_LOG_LEVEL="DEBUG",
                            CORE_BOT_CONFIG=str(ROOT / "core" / "bot.toml"),
                            BOT_TOOLS_BASE_URL=bank)
        if not tts_cache:
            core_env["CORE_TTS_CACHE_MB"] = "0"
        running = es.enter_context(core(logs, ai.asr.target, ai.llm.target, ai.tts.target,
                                        **core_env))
        yield ai, running


def pids(ai: AiStack, running: Core) -> dict[str, int]:
    return {"asr": ai.asr.proc.popen.pid, "llm": ai.llm.proc.popen.pid,
            "tts": ai.tts.proc.popen.pid, "core": running.proc.popen.pid}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=STACK_NAMES, default="default",
                        help="default: Whisper tiny.en + SmolLM2 + Piper, as the dev stack; "
                             "demo: pocketsphinx + the demo LLM + Piper, the demo's questions")
    parser.add_argument("--turns", type=int, default=0,
                        help="turns of the latency call (default: demo 20, default 10)")
    parser.add_argument("--calls", default="",
                        help="capacity levels (default: demo 5,10,15,20; default 1,2,4,6)")
    parser.add_argument("--call-turns", type=int, default=0,
                        help="turns per call at each level (default: demo 1, default 2)")
    parser.add_argument("--all-levels", action="store_true",
                        help="run every level, also after one failed")
    parser.add_argument("--no-tts-cache", action="store_true",
                        help="CORE_TTS_CACHE_MB=0: every sentence synthesised (for comparison)")
    parser.add_argument("--logs", default="",
                        help="keep the services' and the core's logs in this directory")
    parser.add_argument("--note", default="", help="a sentence for the report (machine load)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    demo = args.stack == "demo"
    turns = args.turns or (20 if demo else 10)
    call_turns = args.call_turns or (1 if demo else 2)
    levels_wanted = [int(x) for x in (args.calls or ("5,10,15,20" if demo else "1,2,4,6"))
                     .split(",") if x]
    said = caller_speech(args.stack)
    # SIGTERM unwinds like an error: the services started here are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.logs:
        Path(args.logs).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, \
            started(args.stack, Path(args.logs or tmp), not args.no_tts_cache) as (ai, running):
        tts = ai.tts.target
        meter = CpuMeter(pids(ai, running))
        started_at = time.monotonic()
        single = asyncio.run(latency_run(running, tts, said, turns))
        single_level = Level(1, [single], meter.used(), time.monotonic() - started_at,
                             os.getloadavg(), turns)
        latencies = single_level.latencies()
        print(f"turn latencies (ms): {[round(x) for x in latencies]}"
              f"{' error: ' + single.error if single.error else ''}", flush=True)
        for t in single.turns:
            print(f"  {t.verdict:6} {t.said.text!r} heard {t.heard!r} -> {t.reply!r}", flush=True)
        timing_lines = parse_turns(running.proc.output())
        levels: list[Level] = []
        for calls in levels_wanted:
            meter = CpuMeter(pids(ai, running))
            started_at = time.monotonic()
            results = asyncio.run(capacity_level(running, tts, said, calls, call_turns))
            level = Level(calls, results, meter.used(), time.monotonic() - started_at,
                          os.getloadavg(), call_turns)
            levels.append(level)
            print("\n".join(level_rows([level], args.stack)[2:]), flush=True)
            for r in results:
                if r.error:
                    print(f"  call error: {r.error}", flush=True)
            if not level.passed and not args.all_levels:
                break

    body = report(args, single_level, timing_lines, levels=levels, turns=turns,
                  call_turns=call_turns)
    print(body)
    if latencies and not args.no_write:
        print(f"written to {write_stack_part(args.stack, body)}")
    return 0


def report(args: argparse.Namespace, single: Level, timing_lines: list[dict[str, float]], *,
           levels: list[Level], turns: int, call_turns: int) -> str:
    demo = args.stack == "demo"
    latencies = single.latencies()
    if demo:
        mix = ("demo engines: pocketsphinx with the bot's phrase list, the demo LLM, Piper; "
               "the demo's own questions; the core in production logging (INFO, JSON)")
    else:
        mix = ("the dev stack's default models and settings: Whisper tiny.en (int8, "
               "ASR_ENABLE_DEBUG=1, VOSK_SHOW_WORDS=1, smart-turn end of turn), "
               "SmolLM2-135M-Instruct with core/bot.toml's knowledge and tools (a mock bank "
               "of its own), Piper; the core with DEVELOPMENT_MODE=1 and DEBUG logs. The "
               "caller says the evaluation set's plain and varied questions "
               "(tests/data/eval/conversation.toml, bank facts and off-topic requests), "
               "spoken by the TTS service's default voice, 8 kHz G.711")
    stage_rows = []
    reply_stages = [t.stages for t in single.turns if t.delivered]
    for stage in STAGES:
        values = [s[stage] for s in reply_stages if stage in s]
        if values:
            stage_rows.append(f"| {stage} | {pct(values, 50):.0f} | {pct(values, 95):.0f} |")
    shares = [t["core_share"] for t in timing_lines if "core_share" in t]
    if shares:
        stage_rows.append(f"| core_share | {pct(shares, 50):.0f} | {pct(shares, 95):.0f} |")
    passing = [lv.calls for lv in levels if lv.passed]
    load = os.getloadavg()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    target = "p50 <= 600 ms" if demo else "p50 <= 1000 ms, p95 <= 1500 ms"
    lines = [
        f"### `--stack {args.stack}` ({stamp})",
        "",
        f"Engines: {mix}. The core's cache of synthesised sentences (CORE_TTS_CACHE_MB) "
        f"{'off' if args.no_tts_cache else 'on'}. Services at nice {SERVICE_NICE} as in the "
        "dev stack; the core's RTP clock thread has SCHED_FIFO priority 10. Load average at "
        "the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}." + (f" {args.note}" if args.note else ""),
        "",
        f"Turn latency at the caller through a SIP call (the utterance's last loud sample to "
        f"the first reply audio), "
        f"{len(latencies)} of {turns} turns: **p50 {pct(latencies, 50):.0f} ms, p95 "
        f"{pct(latencies, 95):.0f} ms** (target {target})"
        + ("" if demo else f"; replies right / honest / confidently wrong / lost: "
           f"{verdicts(single.turns)}") + ". The TTS voice ends each utterance with "
        f"{statistics.fmean(VOICE_TAILS or [0]) * 1000:.0f} ms of its own quiet on average, "
        "before the caller's 0.5 s of silence; runs before 2026-11-30 counted it as speech "
        "(their latencies are that much lower).",
        "",
        "Per stage, from the end of the caller's speech as the core estimates it (ms):",
        "",
        "| stage | p50 | p95 |", "|---|---:|---:|", *stage_rows,
        "",
        f"Simultaneous calls, all dialled at once, each greeted then {call_turns} turn(s) "
        "(each caller speaks when the core says the bot's previous turn has played out). "
        "Latencies in ms; stages from the end of speech, as the core estimates it, of the "
        "delivered replies; CPU-s used by each process (with its children) during the "
        "level; the machine's 1-minute load average at its end:",
        "",
        *level_rows(levels, args.stack),
        "",
        f"Largest level with every reply delivered and jitter p99 < 5 ms: "
        f"**{max(passing) if passing else 'none'}** (target >= {10 if demo else 4}). Jitter "
        "is |gap - 20 ms| between consecutive packets of each call, stamped by the kernel on "
        "arrival at the callers (one Python process on the same cores).",
    ]
    if not demo:
        lines += ["", "Where the time goes as calls are added: `asr_final` (the end of speech "
                  "to the recognizer's final) grows with the calls that finish speaking "
                  "together: each Whisper decode costs about 0.2 CPU-s (a 12 s window for an "
                  "utterance that fits it, 30 s otherwise) plus 0.1-0.2 for smart-turn, and "
                  "the decodes run one at a time (ASR_WHISPER_PARALLEL=1, 2 threads each); "
                  "the ASR's CPU-s also count Silero on every 32 ms of every call's audio. "
                  "A reply the LLM generates (small talk; a knowledge "
                  "answer or a refusal needs none) waits for SmolLM2's prefill of the whole "
                  "history. TTS costs little once the bot's fixed lines are in the core's "
                  "cache.", "",
                  "What the callers said, what the core heard, what the bot replied:", "",
                  *examples([single, *levels])]
    return "\n".join(lines)


def write_stack_part(stack: str, body: str) -> Path:
    """Replace this stack's part of the "core" section, keeping the other's."""
    current = DOC.read_text() if DOC.exists() else ""
    parts: dict[str, str] = {}
    for name in STACK_NAMES:
        match = re.search(rf"<!-- core:{name} -->\n(.*?)\n<!-- /core:{name} -->", current, re.S)
        if match:
            parts[name] = match.group(1)
    parts[stack] = body.strip()
    intro = ("`--stack default` runs the dev stack's real models (Whisper tiny.en, SmolLM2, "
             "Piper) with the evaluation set's questions; `--stack demo` the embedded demo "
             "engines with the demo's own questions. Each run replaces its own part.")
    text = "\n\n".join([intro, *(f"<!-- core:{name} -->\n{parts[name]}\n<!-- /core:{name} -->"
                                 for name in ("default", "demo") if name in parts)])
    return write_section("core", "Core: turn latency and capacity", text)


if __name__ == "__main__":
    sys.exit(main())
