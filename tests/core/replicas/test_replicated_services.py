"""A call through a core whose ASR and TTS are two replicas each (real services on
127.0.0.1): both replicas of each get work, and killing one of each mid-call loses
nothing (the ASR stream reopens on the other replica, as after a restart)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from opensips_ai_core.devtools.sip_uac import SipCaller, make_sdp, parse_media_address
from opensips_ai_core.devtools.softphone import RtpPeer, speak_and_listen
from opensips_ai_core.grpc_clients.channel import HEALTH_SERVICE
from tests.e2e.audio import is_account_question, speech_of, transcribe_reply
from tests.e2e.test_conversation import greeting_over
from voice_testkit.procs import health_status
from voice_testkit.stack import SERVICE_NAMES, Core, Service, build_demo_llm, core, service

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


@dataclass
class Replicas:
    asr: list[Service]
    tts: list[Service]
    llm: Service

    @staticmethod
    def target(services: list[Service]) -> str:
        return ",".join(svc.target for svc in services)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    logdir = tmp_path_factory.mktemp("replica-logs")
    cache = tmp_path_factory.mktemp("llm-cache")
    build_demo_llm(cache)
    # Production logging (JSON lines with the call's id): which replica served a call.
    asr_env = dict(ASR_ENGINE="pocketsphinx", ASR_LOG_LEVEL="DEBUG", ASR_ENABLE_DEBUG="1",
                   ASR_WORKERS="1")
    with contextlib.ExitStack() as stack:
        asr = [stack.enter_context(service("asr", logdir, **asr_env)) for _ in range(2)]
        tts = [stack.enter_context(service("tts", logdir, TTS_ENABLE_DEBUG="1"))
               for _ in range(2)]
        llm = stack.enter_context(service("llm", logdir, VOICE_CACHE_DIR=str(cache),
                                          LLM_MODEL="demo", LLM_ENABLE_DEBUG="1", DEVELOPMENT_MODE="1"))
        yield Replicas(asr, tts, llm)


def served(svc: Service, call_id: str, message: str) -> int:
    """How many of `svc`'s log lines for `call_id` start with `message`."""
    count = 0
    for line in svc.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("call_id") == call_id and entry["message"].startswith(message):
                count += 1
    return count


def kill(svc: Service) -> None:
    """A replica lost: SIGKILL its process group (no drain, its connections reset)."""
    svc.proc.signal(signal.SIGKILL)
    svc.proc.wait(10)


@contextlib.asynccontextmanager
async def dial(server: Core) -> AsyncIterator[tuple[SipCaller, RtpPeer]]:
    """Call the core; yield once its greeting has been heard to the end (as the core
    reports it: two sentences may be far apart on a busy machine)."""
    earlier = {call["call_id"] for call in await asyncio.to_thread(server.calls)}
    rtp = await RtpPeer().open()
    sip = await SipCaller(("127.0.0.1", server.sip_port)).open()
    try:
        answer = await sip.invite(make_sdp("127.0.0.1", rtp.local_port))
        assert answer.status == 200, answer
        ip, port, _ = parse_media_address(answer.body)
        rtp.start((ip, port))
        first = await rtp.wait_for_speech(time.monotonic() - 1, 30)
        assert first is not None, "no greeting"
        await greeting_over(rtp, server, earlier)
        yield sip, rtp
    finally:
        with contextlib.suppress(Exception):
            await sip.bye()
        await rtp.close()
        sip.close()


async def ask(rtp: RtpPeer, utterance, asr_target: str) -> str:
    turn = await speak_and_listen(rtp, utterance, quiet_s=1.5)
    assert turn.first_reply_at is not None, "no reply"
    return await transcribe_reply(asr_target, turn.reply)


def test_services_answer_health_for_the_name_the_core_asks(replicas: Replicas) -> None:
    for svc in (*replicas.asr, *replicas.tts, replicas.llm):
        assert health_status(svc.target, HEALTH_SERVICE) == "SERVING"
        assert health_status(svc.target, SERVICE_NAMES[svc.name]) == "SERVING"


def alive(services: list[Service]) -> Service:
    return next(svc for svc in services if svc.proc.popen.poll() is None)


async def test_a_call_spreads_over_replicas_and_survives_losing_one_of_each(
        replicas: Replicas, tmp_path: Path) -> None:
    # The caller's line, spoken by a replica before the core starts.
    balance = await asyncio.to_thread(speech_of, replicas.tts[0].target, "what is my balance")
    # The core's cache of synthesised sentences off: the same reply, said again, must
    # reach a TTS replica for the count below.
    cm = core(tmp_path, Replicas.target(replicas.asr), replicas.llm.target,
              Replicas.target(replicas.tts), CORE_TTS_CACHE_MB="0")
    running = await asyncio.to_thread(cm.__enter__)
    try:
        async with dial(running) as (sip, rtp):
            call_id = running.calls()[0]["call_id"]
            # The demo bot asks for the account number (its get_balance tool), twice.
            for _ in range(2):  # greeting + two replies: three TTS requests, round robin
                reply = await ask(rtp, balance, replicas.asr[0].target)
                assert is_account_question(reply), reply
            tts_counts = [served(svc, call_id, "Call Synthesize") for svc in replicas.tts]
            assert all(tts_counts), tts_counts  # both TTS replicas spoke in this call
            streams = [served(svc, call_id, "stream opened") for svc in replicas.asr]
            assert sorted(streams) == [0, 1], streams  # one stream, on one replica
            holder, other = replicas.asr[streams.index(1)], replicas.asr[streams.index(0)]

            # Mid-call, lose the ASR replica holding the call's stream and a TTS replica.
            await asyncio.to_thread(kill, holder)
            await asyncio.to_thread(kill, replicas.tts[0])
            reply = await ask(rtp, balance, other.target)
            assert is_account_question(reply), reply
            assert not sip.bye_received.is_set()
            assert running.calls()[0]["asr_reconnects"] >= 1
            assert served(other, call_id, "stream opened") == 1  # reopened on the other
            assert served(replicas.tts[1], call_id, "Call Synthesize") > tts_counts[1]

        # A later call, with one replica of each left, is served by the survivors.
        first_call = call_id
        async with dial(running) as (sip, rtp):
            [call_id] = [c["call_id"] for c in running.calls() if c["call_id"] != first_call]
            reply = await ask(rtp, balance, alive(replicas.asr).target)
            assert is_account_question(reply), reply
            assert served(alive(replicas.asr), call_id, "stream opened") == 1
            assert served(replicas.tts[1], call_id, "Call Synthesize") >= 2
    finally:
        await asyncio.to_thread(cm.__exit__, None, None, None)
