"""Recordings, transcripts and the post-call webhook of calls over real SIP and RTP.

The call manager runs behind the direct SIP UAS on 127.0.0.1; the caller is the
project's test phone (devtools.sip_uac + softphone.RtpPeer). The AI services are the
in-process fakes of tests/core/pipeline/fakes.py, with a TTS that speaks a tone, so
that each channel of the WAV can be matched sample for sample against what went over
the wire. With the real services: tests/core/devtools/test_dial_transcript.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from opensips_ai_core import metrics
from opensips_ai_core.calls import CallManager
from opensips_ai_core.config import BotConfig, CoreSettings
from opensips_ai_core.devtools.sip_uac import SipCaller, make_sdp, parse_media_address
from opensips_ai_core.devtools.softphone import RtpPeer
from opensips_ai_core.http import HttpServer
from opensips_ai_core.http_calls import CallApi
from opensips_ai_core.media.g711 import codec_by_name
from opensips_ai_core.media.ports import RtpPortAllocator
from opensips_ai_core.outbound import OutboundCalls
from opensips_ai_core.pipeline.conversation import Call
from opensips_ai_core.recording.archive import CallArchive
from opensips_ai_core.signalling.sip import DirectSipBackend, SipTimers
from tests.core.pipeline.fakes import FakeAsr, FakeLlm, FakeTts, fake_services
from tests.core.pipeline.harness import until
from voice_testkit.http_server import serve
from voice_testkit.procs import LOOPBACK, free_port
from voice_testkit.stack import free_rtp_range

pytestmark = [pytest.mark.timeout(120)]

RATE = 8000
PCMU = codec_by_name("PCMU")


def tone(seconds: float, hz: float, amplitude: int = 6000) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


class ToneTts(FakeTts):
    """The fake TTS, speaking a 1 kHz tone (20 ms per character) instead of silence."""

    async def synthesize(self, text: str, *, sample_rate: int = 8000, voice: str = "",
                         call_id: str = ""):
        self.texts.append(text)
        yield tone(0.02 * len(text), 1000.0).tobytes()


@dataclass
class Core:
    manager: CallManager
    backend: DirectSipBackend
    http: HttpServer
    asr: FakeAsr
    settings: CoreSettings


async def make_core(settings: CoreSettings, bot: BotConfig) -> AsyncIterator[Core]:
    asr = FakeAsr()
    services = fake_services(FakeLlm(), ToneTts(), asr)
    manager = CallManager(settings, bot, services, RtpPortAllocator(settings.rtp_port_min,
                                                                    settings.rtp_port_max))
    backend = DirectSipBackend(LOOPBACK, 0, timers=SipTimers(t1=0.05, t2=0.4))
    manager.backend = backend
    await backend.start(manager)
    http = HttpServer(LOOPBACK, 0, manager.capacity, manager.snapshot)
    http.add_routes(CallApi(OutboundCalls(manager, bot), None,
                            transcripts=manager.transcript).add_routes)
    await http.start()
    try:
        yield Core(manager, backend, http, asr, settings)
    finally:
        await manager.shutdown(1.0)
        await backend.stop()
        await http.stop()


def settings_for(directory: Path, **extra: object) -> CoreSettings:
    rtp = free_rtp_range(10)
    nowhere = f"{LOOPBACK}:{free_port()}"
    return CoreSettings(sip_host=LOOPBACK, sip_port=0, rtp_port_min=rtp[0],
                        rtp_port_max=rtp[1], asr_target=nowhere, llm_target=nowhere,
                        tts_target=nowhere, recordings_dir=directory, webhook_backoff_s=0.01,
                        **extra)


@dataclass
class Webhook:
    url: str
    bodies: list[dict]
    answers: list[int]


async def webhook(answer: Callable[[int], int | None]) -> AsyncIterator[Webhook]:
    """An HTTP receiver on 127.0.0.1: request n gets `answer(n)` (None: never answers)."""
    bodies: list[dict] = []
    answers: list[int] = []
    never = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        bodies.append(json.loads(await request.read()))
        status = answer(len(bodies))
        if status is None:
            await never.wait()
        answers.append(status or 0)
        return web.json_response({}, status=status or 200)

    app = web.Application()
    app.router.add_post("/calls-ended", receive)
    async with serve(app) as address:
        try:
            yield Webhook(f"http://{address}/calls-ended", bodies, answers)
        finally:
            never.set()  # the handlers still waiting answer now: the server stops at once


@dataclass
class Phone:
    sip: SipCaller
    rtp: RtpPeer
    call: Call


async def dial(core: Core) -> Phone:
    rtp = await RtpPeer().open()
    sip = await SipCaller((LOOPBACK, core.backend.port)).open()
    answer = await sip.invite(make_sdp(LOOPBACK, rtp.local_port, codecs=("PCMU",)))
    assert answer.status == 200, answer
    ip, port, _ = parse_media_address(answer.body)
    rtp.start((ip, port))
    call = core.manager.calls[sip.call_id]  # direct SIP: calls are keyed by the Call-ID
    return Phone(sip, rtp, call)


async def hang_up(phone: Phone) -> None:
    await phone.sip.bye()
    await phone.rtp.close()
    phone.sip.close()


async def talk(core: Core, phone: Phone, text: str) -> None:
    """The caller speaks (a 440 Hz tone over RTP) and the recognizer hears `text`."""
    phone.rtp.play(tone(0.5, 440.0))
    await phone.rtp.wait_played()
    stream = next(s for s in core.asr.streams if s.call_id == phone.call.call_id)
    before = len(phone.call.turns_done)
    await stream.final(text)
    await until(lambda: len(phone.call.turns_done) > before, f"the reply to {text!r}", 10)
    await asyncio.wait_for(phone.call.media.wait_idle(), 10)


def find(haystack: np.ndarray, needle: np.ndarray, start: int = 0) -> int:
    """Where `needle` is, sample for sample, in `haystack` (from `start`); -1 if nowhere."""
    first = np.flatnonzero(haystack[start:len(haystack) - len(needle) + 1] == needle[0])
    for offset in first + start:
        if np.array_equal(haystack[offset:offset + len(needle)], needle):
            return int(offset)
    return -1


def failures(kind: str) -> float:
    return metrics.POST_CALL_FAILURES.labels(kind)._value.get()


async def test_a_call_leaves_a_stereo_wav_a_transcript_and_a_webhook_delivery(
        tmp_path: Path) -> None:
    flaky = webhook(lambda n: 503 if n <= 2 else 200)  # fails twice, then accepts
    hook = await anext(flaky)
    bot = BotConfig(greeting="Hello there.", record_audio=True, save_transcript=True,
                    post_call_webhook=hook.url)
    cores = make_core(settings_for(tmp_path / "recordings"), bot)
    core = await anext(cores)
    try:
        phone = await dial(core)
        call_id = phone.sip.call_id
        await until(lambda: bool(phone.call.turns_done), "the greeting", 10)
        await asyncio.wait_for(phone.call.media.wait_idle(), 10)
        await asyncio.sleep(0.3)  # some silence on both channels
        utterance_sent = asyncio.get_running_loop().time()
        await talk(core, phone, "what is my balance")
        reply_frames = [f for f in phone.rtp.frames if f.at >= phone.rtp.frames[0].at]
        # What the transcript says, over HTTP by the SIP Call-ID, while the call goes on.
        async with aiohttp.ClientSession() as client:
            url = f"http://{LOOPBACK}:{core.http.port}/calls/{call_id}/transcript"
            async with client.get(url) as response:
                assert response.status == 200
                live = await response.json()
        assert live["ended"] is None and live["turns"][1]["heard"] == "what is my balance"
        await hang_up(phone)
        await until(lambda: len(hook.bodies) == 3, "the webhook's third attempt", 10)
        await until(lambda: core.manager.archive.pending == 0, "the post-call work", 10)
    finally:
        await anext(cores, None)
        await anext(flaky, None)
    assert utterance_sent and reply_frames

    stem = call_id  # "@" and "." are kept in file names
    with wave.open(str(tmp_path / "recordings" / f"{stem}.wav")) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, RATE)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    caller, bot_side = stereo[:, 0], stereo[:, 1]

    # Left: the caller's utterance as it went over the wire (PCMU), in one piece.
    sent = PCMU.decode(PCMU.encode(tone(0.5, 440.0)))
    at_caller = find(caller, sent)
    assert at_caller > 0, "the caller's utterance is not in the left channel"
    # Right: the greeting first, then the reply after the utterance, each in one piece.
    greeting = tone(0.02 * len("Hello there."), 1000.0)
    at_greeting = find(bot_side, greeting)
    assert 0 <= at_greeting < at_caller
    # Neither side bleeds into the other channel (the reply may start as the utterance's
    # last frames arrive: the fake recognizer's final comes as they are sent).
    assert not caller[at_greeting:at_greeting + len(greeting)].any()
    assert not bot_side[at_caller:at_caller + len(sent) - 800].any()

    transcript = json.loads((tmp_path / "recordings" / f"{stem}.json").read_text())
    greeting_turn, reply_turn = transcript["turns"]
    reply_text = "You said what is my balance. Anything else?"
    assert reply_turn["heard"] == "what is my balance" and reply_turn["said"] == reply_text
    # Its first sentence in one piece (a silent frame may part it from the second).
    at_reply = find(bot_side, tone(0.02 * len("You said what is my balance."), 1000.0),
                    at_caller)
    assert at_reply > 0, "the reply is not in the right channel after the utterance"
    # The transcript's times are the recording's: the reply's first packet is where
    # its audio starts in the WAV (the pacer's frame, give or take one).
    assert abs(reply_turn["first_audio_s"] * RATE - at_reply) <= 2 * 160 + 80
    assert abs(greeting_turn["first_audio_s"] * RATE - at_greeting) <= 2 * 160 + 80
    assert transcript["ended"] == "caller hung up" or "BYE" in transcript["ended"] \
        or transcript["ended"]
    assert transcript["recording"] == f"{stem}.wav"
    assert transcript["sip_call_id"] == call_id and transcript["duration_s"] > 0

    # The webhook: refused twice (503), delivered the third time, with the transcript.
    assert hook.answers == [503, 503, 200]
    delivered = hook.bodies[-1]
    assert delivered["event"] == "call.ended" and delivered["call_id"] == call_id
    assert [t["said"] for t in delivered["turns"]] == ["Hello there.", reply_text]
    assert delivered["turn_latency_ms"] == [reply_turn["latency_ms"]]
    assert {"caller", "callee", "started_at", "ended_at", "duration_s", "ended"} <= set(delivered)


async def test_an_unwritable_directory_and_a_silent_webhook_leave_calls_untouched(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    silent = webhook(lambda n: None)  # takes the request, never answers
    hook = await anext(silent)
    bot = BotConfig(greeting="Hi.", record_audio=True, save_transcript=True,
                    post_call_webhook=hook.url)
    settings = settings_for(blocker / "recordings", webhook_attempts=2, webhook_timeout_s=0.5)
    cores = make_core(settings, bot)
    core = await anext(cores)
    before = {kind: failures(kind) for kind in ("recording", "transcript", "webhook")}
    caplog.set_level(logging.WARNING)
    try:
        for n in range(2):
            phone = await dial(core)
            await until(lambda p=phone: bool(p.call.turns_done), "the greeting", 10)
            await talk(core, phone, f"question number {n}")
            await talk(core, phone, "and another one")
            assert [t["heard"] for t in phone.call.transcript.turns] == \
                [None, f"question number {n}", "and another one"]
            await hang_up(phone)
            # The call is over for the core at once: its slot, port and stream are free,
            # while its recording fails and its webhook hangs in the background.
            await until(lambda: core.manager.held_slots == 0, "the slot released", 5)
            assert core.manager.calls == {}
        await until(lambda: failures("webhook") - before["webhook"] == 2,
                    "both webhook deliveries to fail", 20)
        await until(lambda: core.manager.archive.pending == 0, "the post-call work", 10)
    finally:
        await anext(cores, None)
        await anext(silent, None)
    assert failures("recording") - before["recording"] == 2
    assert failures("transcript") - before["transcript"] == 2
    assert len(hook.bodies) == 4  # two attempts per call
    logged = [r.getMessage() for r in caplog.records if r.name.endswith("core.recording")]
    # Each kind of failure logged once, not once per call or attempt.
    assert len([m for m in logged if ".wav" in m]) == 1, logged
    assert len([m for m in logged if ".json" in m]) == 1, logged
    assert len([m for m in logged if "webhook" in m]) == 1, logged


async def test_a_webhook_that_refuses_is_not_retried(tmp_path: Path) -> None:
    refusing = webhook(lambda n: 400)
    hook = await anext(refusing)
    try:
        archive = CallArchive(settings_for(tmp_path, webhook_url=hook.url))
        before = failures("webhook")
        task = archive.call_ended({"call_id": "c-1", "sip_call_id": "c-1", "turns": []}, None,
                                  BotConfig())
        assert task is not None
        await task
        assert hook.answers == [400] and failures("webhook") - before == 1
        assert archive.transcript("c-1") == {"call_id": "c-1", "sip_call_id": "c-1",
                                             "turns": []}
    finally:
        await anext(refusing, None)


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 64 KiB tmpfs (mounting needs root: skipped elsewhere), unmounted afterwards."""
    import shutil as _shutil
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    if _shutil.which("mount") is None:
        pytest.skip("no mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10,
                       check=False)


async def test_a_full_disk_leaves_no_partial_file_and_the_transcript_still_fits(
        full_disk: Path) -> None:
    import time as _time

    archive = CallArchive(settings_for(full_disk))
    bot = BotConfig(record_audio=True, save_transcript=True)
    recorder = archive.recorder(bot, _time.perf_counter())
    for n in range(500):  # 10 s of the caller: a 320 KB WAV, five times the disk
        recorder.caller.frames.append((recorder.t0 + 0.02 * n, 160 * n, 1, tone(0.02, 440.0)))
    before = (failures("recording"), failures("transcript"))
    task = archive.call_ended({"call_id": "full@127.0.0.1", "sip_call_id": "full@127.0.0.1",
                               "turns": []}, recorder, bot)
    await task
    assert failures("recording") - before[0] == 1 and failures("transcript") == before[1]
    # The WAV failed whole (its temporary file removed); the transcript was written.
    assert files_in(full_disk) == ["full@127.0.0.1.json"]
    assert json.loads((full_disk / "full@127.0.0.1.json").read_text())["call_id"] \
        == "full@127.0.0.1"


class TransferringBackend:
    """A signalling backend's transfer as the call manager sees it (REFER itself: the
    SIPp tests of tests/core/test_call_transfer.py)."""

    def __init__(self, *results) -> None:
        self.results = list(results)

    async def transfer(self, call_id: str, target: str, *, timeout_s: float):
        return self.results.pop(0)

    async def hangup(self, call_id: str) -> None:
        pass


async def test_transfers_are_in_the_transcript_failed_or_done(tmp_path: Path) -> None:
    from opensips_ai_core.signalling.base import CallInfo, TransferResult
    from tests.core.pipeline.fakes import FakeMedia

    settings = settings_for(tmp_path)
    manager = CallManager(settings, BotConfig(), fake_services(),
                          RtpPortAllocator(settings.rtp_port_min, settings.rtp_port_max))
    manager.backend = TransferringBackend(TransferResult(False, 486, "Busy Here"),
                                          TransferResult(True, 200, "OK"))

    async def hangup(call_id: str) -> None:
        pass

    call = Call(CallInfo("x-1", "sip:a@test", "sip:b@test", "sip", sip_call_id="sip-x-1"),
                FakeMedia(autoplay=True), manager.services, BotConfig(greeting="Hi."), hangup)
    manager.calls["x-1"] = call
    call.start()
    await manager.transfer("x-1", "sip:advisers@127.0.0.1")
    await manager.transfer("x-1", "sip:sales@127.0.0.1")
    ended = manager.transcript("sip-x-1")  # by the SIP Call-ID, once ended
    assert ended is not None and ended["ended"] == "transferred"
    transfers = [e for e in ended["events"] if e["type"] == "transfer"]
    assert [(t["target"], t["ok"], t["code"]) for t in transfers] == [
        ("sip:advisers@127.0.0.1", False, 486), ("sip:sales@127.0.0.1", True, 200)]
    assert manager.transcript("x-1") is ended and manager.transcript("nobody") is None
