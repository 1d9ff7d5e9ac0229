"""A mock adviser for the demo's blind transfer: a SIP UAS that answers and says one line.

    python -m opensips_ai_core.devtools.mock_adviser [--host 127.0.0.1] [--port 5090]

The demo bot's transfer target (core/bot.toml `[bot.transfer_to] advisers`) is
sip:advisers@127.0.0.1:5090; the dev stack runs this there (process-compose.yaml).
Each INVITE is answered by the core's own direct-SIP UAS (`DirectSipBackend`, offer/answer
by `negotiate`); the adviser then says `--line` as G.711 RTP (`devtools.softphone.RtpPeer`)
and hangs up `--hangup-after-s` later (or, with `--wait-for-bye`, waits for the caller's
BYE). The line is made by the TTS service (`--tts`) at the first call and kept; when TTS
cannot make it, a two-tone chime made here is played instead (and TTS asked again next call).
It logs each INVITE with its Referred-By. `GET /health` on tcp HOST:PORT (the same
number as its SIP port, udp) answers 200 while the SIP socket is open: the dev
stack's probe. Development only: loopback by default, any caller is answered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field

import numpy as np
from aiohttp import web

from opensips_ai_core.devtools.softphone import RtpPeer, synthesize
from opensips_ai_core.signalling.base import CallInfo
from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.offer_answer import negotiate
from opensips_ai_core.signalling.sdp import SessionDescription
from opensips_ai_core.signalling.sip import DirectSipBackend
from opensips_ai_core.signalling.sip.message import SipMessage
from opensips_ai_core.signalling.sip.transactions import Address, ServerTransaction

log = logging.getLogger("mock_adviser")

DEFAULT_PORT = 5090
DEFAULT_LINE = "You are through to an adviser. How can I help?"
RATE = 8000


def chime(seconds: float = 0.8) -> np.ndarray:
    """Two tones (660 Hz, then 880 Hz) at a moderate level: the line when TTS is away."""
    half = int(RATE * seconds / 2)
    t = np.arange(half) / RATE
    tones = [np.sin(2 * np.pi * f * t) * np.hanning(half) for f in (660.0, 880.0)]
    return (np.concatenate(tones) * 8000).astype(np.int16)


@dataclass
class AdviserCall:
    info: CallInfo
    rtp: RtpPeer
    task: asyncio.Task[None] | None = None


@dataclass
class Adviser:
    """The CallHandler: answers every call, says the line, hangs up (or waits)."""

    tts: str | None
    line: str = DEFAULT_LINE
    hangup_after_s: float | None = 1.0   # None: wait for the caller's BYE
    host: str = "127.0.0.1"
    backend: DirectSipBackend | None = None
    calls: dict[str, AdviserCall] = field(default_factory=dict)
    answered: list[CallInfo] = field(default_factory=list)
    _audio: np.ndarray | None = None

    async def audio(self) -> np.ndarray:
        if self._audio is None:
            if self.tts is None:
                log.info("no TTS service: the line is a chime")
                self._audio = chime()
                return self._audio
            try:
                self._audio = await synthesize(self.tts, self.line, RATE, timeout=20.0)
            except Exception as error:  # a TTS that is down or slow: the chime, said once
                detail = str(error).splitlines()[0] if str(error) else type(error).__name__
                log.warning("TTS %s could not say the line (%s): a chime this time",
                            self.tts, detail)
                return chime()  # not kept: the next call asks the TTS again
        return self._audio

    async def new_call(self, info: CallInfo,
                       offer: SessionDescription | None) -> SessionDescription:
        if offer is None:
            raise SignallingError(488, "Not Acceptable Here (an SDP offer is required)")
        audio = await self.audio()
        rtp = await RtpPeer().open(self.host)
        try:
            answer, media = negotiate(offer, self.host, rtp.local_port)
        except SignallingError:
            await rtp.close()
            raise
        rtp.set_codec(media.codec, media.payload_type)
        call = AdviserCall(info, rtp)
        self.calls[info.call_id] = call
        self.answered.append(info)
        rtp.start((media.remote_ip, media.remote_port))
        call.task = asyncio.get_running_loop().create_task(self._speak(call, audio))
        log.info("answered %s from %s: saying %r", info.call_id, info.caller, self.line)
        return answer

    async def _speak(self, call: AdviserCall, audio: np.ndarray) -> None:
        await asyncio.sleep(0.3)  # the caller's ACK and its first packets
        call.rtp.play(audio)
        await call.rtp.wait_played()
        if self.hangup_after_s is None or self.backend is None:
            return
        await asyncio.sleep(self.hangup_after_s)
        log.info("hanging up %s", call.info.call_id)
        await self.backend.hangup(call.info.call_id)
        await self._forget(call.info.call_id)

    async def _forget(self, call_id: str) -> None:
        call = self.calls.pop(call_id, None)
        if call is not None:
            await call.rtp.close()

    async def complete_call(self, call_id: str, answer: SessionDescription) -> None:
        raise SignallingError(488, "Not Acceptable Here")  # never offered late

    async def update_call(self, call_id: str, offer: SessionDescription) -> SessionDescription:
        call = self.calls.get(call_id)
        if call is None:
            raise SignallingError(481, "Call/Transaction Does Not Exist")
        answer, media = negotiate(offer, self.host, call.rtp.local_port, session_version=2)
        call.rtp.remote = (media.remote_ip, media.remote_port)
        return answer

    async def end_call(self, call_id: str, reason: str) -> None:
        log.info("%s ended: %s", call_id, reason)
        call = self.calls.get(call_id)
        if call is not None and call.task is not None and call.task is not asyncio.current_task():
            call.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call.task
        await self._forget(call_id)

    async def close(self) -> None:
        for call_id in list(self.calls):
            await self.end_call(call_id, "adviser stopped")


class AdviserSip(DirectSipBackend):
    """The direct-SIP UAS, logging who referred each new call (its Referred-By)."""

    def _on_initial_invite(self, transaction: ServerTransaction, source: Address) -> None:
        request: SipMessage = transaction.request
        log.info("INVITE %s from %s, Referred-By: %s", request.uri, request.get("From"),
                 request.get("Referred-By") or "(none)")
        super()._on_initial_invite(transaction, source)


async def start(adviser: Adviser, host: str, port: int) -> tuple[AdviserSip, web.AppRunner]:
    """The SIP UAS on udp HOST:PORT and its /health on tcp HOST:PORT."""
    sip = AdviserSip(host, port, contact_user="advisers")
    adviser.backend, adviser.host = sip, host
    await sip.start(adviser)

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, sip.port).start()
    return sip, runner


async def serve(adviser: Adviser, host: str, port: int) -> None:
    sip, runner = await start(adviser, host, port)
    log.info("mock adviser on udp:%s:%d (SIP), tcp:%s:%d (/health)", host, sip.port, host,
             sip.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (15, 2):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await adviser.close()
        await sip.stop()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m opensips_ai_core.devtools.mock_adviser",
        description="Mock adviser: a SIP UAS that answers, says one line, hangs up.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="SIP (udp) and /health (tcp) port (default %(default)s)")
    parser.add_argument("--tts", default=os.environ.get("CORE_TTS_TARGET", "127.0.0.1:50053"),
                        help="the TTS service that says the line (default %(default)s)")
    parser.add_argument("--line", default=DEFAULT_LINE, help="what the adviser says")
    parser.add_argument("--hangup-after-s", type=float, default=1.0,
                        help="hang up this long after the line (default %(default)s)")
    parser.add_argument("--wait-for-bye", action="store_true",
                        help="do not hang up: wait for the caller's BYE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    adviser = Adviser(args.tts, args.line, None if args.wait_for_bye else args.hangup_after_s)
    try:
        asyncio.run(serve(adviser, args.host, args.port))
    except OSError as error:
        print(f"mock adviser: cannot listen on {args.host}:{args.port}: {error}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
