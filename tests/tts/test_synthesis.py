"""Synthesize against a real service: rates, duration, loudness, streaming order, cancel."""

from __future__ import annotations

import time

import grpc
import pytest

from voice_testkit.procs import wait_until
from voice_testkit.tts_client import pcm_rms, pcm_seconds, stream, synthesize, synthesize_chunks

# Speech is far above this; digital silence or noise-floor output is far below.
RMS_FLOOR = 300.0
TEXT = "Thank you for calling. How can I help you with your account today?"
WORDS = len(TEXT.split())

MULTI = (
    "Good morning and welcome to the support line. "
    "Your call matters to us. "
    "Please have your account number ready. "
    "A member of our team will be with you shortly. "
    "You can also visit our website for answers to common questions. "
    "Thank you for waiting."
)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_audio_has_plausible_duration_and_is_not_silence(tts, rate: int) -> None:
    received = synthesize_chunks(tts.target, TEXT, rate)
    pcm = b"".join(r.chunk.audio for r in received)
    seconds = pcm_seconds(pcm, rate)
    assert 0.2 * WORDS <= seconds <= 1.0 * WORDS, f"{seconds:.2f} s for {WORDS} words"
    assert pcm_rms(pcm) > RMS_FLOOR
    assert all(r.chunk.sample_rate_hz == rate for r in received)
    # Small chunks so playback can start early: at most 100 ms each.
    assert max(len(r.chunk.audio) for r in received) <= rate // 10 * 2
    assert len(pcm) % 2 == 0


def test_rate_zero_means_native_rate(tts) -> None:
    received = synthesize_chunks(tts.target, "Hello there.", 0)
    assert {r.chunk.sample_rate_hz for r in received} == {22050}
    pcm = b"".join(r.chunk.audio for r in received)
    assert pcm_rms(pcm) > RMS_FLOOR


def test_native_rate_may_be_named(tts) -> None:
    pcm = synthesize(tts.target, "Hello there.", 22050)
    assert 0.3 <= pcm_seconds(pcm, 22050) <= 3.0


def test_sentences_are_numbered_marked_and_carry_their_text(tts) -> None:
    received = synthesize_chunks(tts.target, MULTI, 8000)
    chunks = [r.chunk for r in received]
    indexes = [c.sentence_index for c in chunks]
    assert indexes == sorted(indexes)
    assert sorted(set(indexes)) == list(range(indexes[-1] + 1))
    assert indexes[-1] >= 5                      # six sentences (the first may be split)
    for index in set(indexes):
        mine = [c for c in chunks if c.sentence_index == index]
        assert mine[0].sentence.strip()
        assert all(not c.sentence for c in mine[1:])
        assert [c.last_in_sentence for c in mine] == [False] * (len(mine) - 1) + [True]
    spoken = " ".join(c.sentence for c in chunks if c.sentence)
    assert spoken.split() == MULTI.split()


def test_first_audio_is_sent_before_the_last_sentence_is_synthesized(tts) -> None:
    call_id = "order-1"
    chunks = stream(tts.target, MULTI, 16000, call_id=call_id)
    first = next(chunks)
    # Read the server's log the moment the first chunk is here: the last sentence must
    # not have been synthesized yet (the service logs each sentence when it is done).
    synthesized_then = [r["message"] for r in tts.log_records(call_id)
                        if "synthesized" in r["message"]]
    rest = list(chunks)
    last_index = rest[-1].chunk.sentence_index
    last_label = f"tts_sentence {last_index + 1}/{last_index + 1} synthesized"
    assert first.chunk.sentence_index == 0
    assert not any(last_label in message for message in synthesized_then), synthesized_then
    # ... and it was synthesized later, in this request.
    assert any(last_label in r["message"] for r in tts.log_records(call_id))
    last_first = next(r for r in rest if r.chunk.sentence_index == last_index)
    assert first.received_at < last_first.received_at


def test_cancel_stops_before_the_next_sentences(tts) -> None:
    call_id = "cancel-1"
    long_text = " ".join(f"This is sentence number {n} of a long answer." for n in range(12))
    chunks = stream(tts.target, long_text, 8000, call_id=call_id)
    assert next(chunks).chunk.sentence_index == 0
    chunks.close()                                   # cancels the RPC

    def stopped() -> list[dict]:
        return [r for r in tts.log_records(call_id) if "stopped after" in r["message"]]

    record = wait_until(stopped, 30, message="the service to log the cancellation")[0]
    assert "of 12 sentences" in record["message"]
    time.sleep(0.5)   # any synthesis still running would log within this time
    synthesized = [r for r in tts.log_records(call_id) if "synthesized" in r["message"]]
    assert len(synthesized) < 12
    assert not any("tts_sentence 12/12" in r["message"] for r in synthesized)
    # The service is still there for others.
    assert pcm_rms(synthesize(tts.target, "Still here.", 8000)) > RMS_FLOOR


def test_concurrent_requests_are_served(tts) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = ["One request.", "Another request at the same time.", "And a third one."]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda t: synthesize(tts.target, t, 16000), texts))
    for text, pcm in zip(texts, results, strict=True):
        assert 0.2 * len(text.split()) <= pcm_seconds(pcm, 16000) <= 1.0 * len(text.split())


def test_deadline_is_respected(tts) -> None:
    with pytest.raises(grpc.RpcError) as err:
        synthesize(tts.target, MULTI * 3, 16000, timeout=0.05)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
