"""Turning captured RTP into utterances, and utterances into text, for the e2e checks."""

from __future__ import annotations

import asyncio

import numpy as np

from opensips_ai_core.devtools.softphone import SPEECH_RMS, rms, synthesize, transcribe
from opensips_ai_core.media.g711 import ulaw_decode
from opensips_ai_core.media.rtp import RtpPacket
from voice_testkit.sniffer import Datagram

FRAME = 160

# The demo bot's answers (bank_dialogue.json, core/bot.toml) clause by clause, as a phrase
# list for the embedded recognizer. Restricted to them it reliably tells one answer from
# another. Clauses, not sentences: the recognizer ends an utterance at each pause, and
# every utterance must be a sequence of whole phrases.
ANSWER_PHRASES = [
    "hello", "this is example bank", "how can i help you", "how can i help you today",
    "thank you for calling example bank", "thank you for calling", "goodbye",
    # The balance: the bot asks for the account number, then speaks the mock bank's answer
    # (dev/testkit/src/voice_testkit/bank.py) for account 12345678...
    "please tell me your account number", "or key it in and press hash", "one moment please",
    "your balance is one thousand two hundred fifty point four zero dollars",
    # ...and in pieces: on a loaded machine TTS audio can arrive with pauses between parts.
    "your balance is", "one thousand two hundred fifty point four zero dollars",
    "i have blocked your card for your safety",
    "a new card will arrive by mail within five working days",
    "our branches are open monday to friday", "and saturday",
    "of course", "please stay on the line while i transfer you to one of our advisers",
    "sorry", "i am having trouble right now", "please say that again", "are you still there",
]


def speech_segments(frames: list[tuple[float, np.ndarray]], gap_s: float = 0.8
                    ) -> list[np.ndarray]:
    """Split received audio into utterances separated by at least `gap_s` of silence."""
    segments: list[list[np.ndarray]] = []
    last_speech = None
    for at, pcm in frames:
        loud = rms(pcm) >= SPEECH_RMS
        if loud:
            if last_speech is None or at - last_speech > gap_s:
                segments.append([])
            last_speech = at
        if segments and last_speech is not None and at - last_speech <= gap_s:
            segments[-1].append(pcm)
    return [np.concatenate(s) for s in segments if s]


def pcmu_frames(datagrams: list[Datagram]) -> list[tuple[float, np.ndarray]]:
    out = []
    for d in datagrams:
        try:
            packet = RtpPacket.parse(d.payload)
        except ValueError:
            continue
        if packet.payload_type == 0:
            out.append((d.at, ulaw_decode(packet.payload)))
    return out


def hear(asr_target: str, pcm: np.ndarray) -> str:
    return asyncio.run(transcribe_reply(asr_target, pcm))


async def transcribe_reply(asr_target: str, pcm: np.ndarray) -> str:
    """What the recognizer makes of a reply: restricted to the answers' phrases, then free.

    The restricted pass is exact when it matches, but returns nothing when a glitch in the
    call's audio (a pause under load, G.711) breaks the grammar; the free pass always says
    something close. Checks look for an answer's words in either.
    """
    restricted = await transcribe_phrases(asr_target, pcm)
    free = await transcribe(asr_target, pcm)
    return f"{restricted} || {free}"


def is_greeting(text: str) -> bool:
    """The greeting "Hello, this is Example Bank. How can I help you?" in either pass.

    Either of its sentences will do: under load the second may come after a pause, and
    pocketsphinx's free pass mangles "how can I help you" more often than the bank's name.
    """
    return "help you" in text or "example bank" in text


def is_account_question(text: str) -> bool:
    """"Please tell me your account number, or key it in and press hash." (the balance's
    first step, core/bot.toml's get_balance tool) in either pass."""
    return "account number" in text or "tell me your account" in text or "press hash" in text


def is_bank_balance(text: str) -> bool:
    """The mock bank's balance of account 12345678, "Your balance is 1,250.40 dollars.".

    "hundred fifty point" tells it from the demo model's own "1,250 dollars and 40 cents"
    (no "point"); the free pass often hears the "four" after it as "for".
    """
    return "hundred fifty point" in text


def is_goodbye_answer(text: str) -> bool:
    return "goodbye" in text or "calling example bank" in text


async def transcribe_phrases(asr_target: str, pcm: np.ndarray) -> str:
    import grpc

    from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc

    async def requests():
        yield asr_pb2.RecognizeRequest(config=asr_pb2.StreamingConfig(
            sample_rate_hz=8000, phrases=ANSWER_PHRASES))
        data = np.asarray(pcm, dtype="<i2").tobytes()
        for i in range(0, len(data), 3200):
            yield asr_pb2.RecognizeRequest(audio=data[i:i + 3200])

    async with grpc.aio.insecure_channel(asr_target) as channel:
        stub = asr_pb2_grpc.RecognizerStub(channel)
        texts = [r.final.text async for r in stub.StreamingRecognize(requests(), timeout=60)
                 if r.HasField("final")]
    return " ".join(t for t in texts if t)


def speech_of(tts_target: str, text: str) -> np.ndarray:
    """The caller's words, made by the TTS service (8 kHz PCM16)."""
    pcm = asyncio.run(synthesize(tts_target, text))
    return np.concatenate([pcm, np.zeros(4000, np.int16)])  # 0.5 s of trailing silence


__all__ = ["FRAME", "hear", "is_account_question", "is_bank_balance", "is_goodbye_answer",
           "pcmu_frames", "speech_of", "speech_segments", "transcribe_reply"]
