"""`python -m opensips_ai_core.devtools.dial "what is my balance"`: one real test call.

Speaks the text as the caller (made by the TTS service) and prints, per turn, what
the core's recognizer heard and the reply the bot actually spoke, as the core itself
recorded them (its `GET /calls/{Call-ID}/transcript`, the call's SIP Call-ID being
the core's key), then the latency: the core's (end of speech to its first reply
packet) and the caller's ("turn latency": end of its audio to the first reply audio).
`--check-audio` also transcribes the bot's audio with the ASR service, to check
what the caller really heard. Used by scripts/dev-call.sh against the running stack.

The caller is a phone that supports blind transfer (RFC 3515): when the bot REFERs it
(the demo's "I want to talk to a person"), it answers 202, follows the REFER
(`devtools.transferee`: NOTIFY 100 Trying, INVITE to the Refer-To target, the final
NOTIFY) and prints each step, the bot's BYE, and what the transfer target said (always
transcribed by the ASR service: the target keeps no transcript for the core to show).
`--refuse-transfer` answers the REFER 405 instead, as a phone without transfer does:
the bot then says it could not put the caller through, and the call goes on.

`--dtmf DIGITS` keys digits in on the keypad (RFC 4733 telephone-events, the test
caller's `RtpPeer.key_in`) after the greeting, or after the reply to the caller's
N-th utterance with `--dtmf-after N`: the demo's balance flow is
`--dtmf 12345678# --dtmf-after 1 "what is my balance"`. The core's transcript shows
the digits it received and the bot's reply, as for a spoken turn.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import urllib.parse
from typing import Any

import aiohttp
import grpc
import numpy as np

from opensips_ai_core.devtools.sip_uac import (
    ReferRequest,
    SipCaller,
    make_sdp,
    parse_media_address,
)
from opensips_ai_core.devtools.softphone import (
    RtpPeer,
    TurnResult,
    key_and_listen,
    speak_and_listen,
    synthesize,
    transcribe,
)
from opensips_ai_core.devtools.transferee import BlindTransfer, TransferOutcome
from opensips_ai_core.media.dtmf import DTMF_EVENTS


def _target(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


class CoreTranscript:
    """The call's transcript from the core's HTTP API; each turn printed once."""

    def __init__(self, http: str, call_id: str, token: str | None) -> None:
        quoted = urllib.parse.quote(call_id, safe="@")
        self.url = f"http://{http}/calls/{quoted}/transcript"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.shown = 0
        self.problem: str | None = None

    async def fetch(self) -> dict[str, Any] | None:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client, \
                    client.get(self.url, headers=self.headers) as response:
                if response.status != 200:
                    body = await response.text()
                    self.problem = f"{self.url} answered {response.status}: {body.strip()}"
                    return None
                data: dict[str, Any] = await response.json()
                return data
        except (aiohttp.ClientError, TimeoutError) as err:
            self.problem = f"{self.url}: {err or type(err).__name__}"
            return None

    async def new_turns(self, want_reply: bool, wait_s: float = 3.0,
                        kind: str = "reply") -> list[dict[str, Any]]:
        """Turns not printed yet; with `want_reply`, waits a while for a `kind` turn and
        returns those up to it (what follows it is for the next call)."""
        deadline = time.monotonic() + wait_s
        while True:
            data = await self.fetch()
            turns = data["turns"][self.shown:] if data is not None else []
            wanted = next((i for i, t in enumerate(turns) if t["kind"] == kind), None)
            if data is None or not want_reply or wanted is not None \
                    or time.monotonic() >= deadline:
                if want_reply and wanted is not None:
                    turns = turns[:wanted + 1]
                self.shown += len(turns)
                return turns
            await asyncio.sleep(0.2)


def print_turn(turn: dict[str, Any]) -> None:
    if turn.get("dtmf"):
        print(f"  core received DTMF: {turn['dtmf']}")
    elif turn.get("heard"):
        print(f"  recognizer heard: {turn['heard']}")
    cut = " [interrupted]" if turn.get("interrupted") else ""
    label = "bot" if turn["kind"] == "reply" else f"bot ({turn['kind']})"
    print(f"{label}: {turn['said']}{cut}")
    if turn.get("latency_ms") is not None:
        stages = " ".join(f"{k}={v}" for k, v in turn.get("stages_ms", {}).items())
        print(f"  core latency: {turn['latency_ms']} ms (end of speech -> first reply packet;"
              f" {stages})")


async def show_turns(transcript: CoreTranscript, want_reply: bool, kind: str = "reply",
                     wait_s: float = 3.0) -> None:
    turns = await transcript.new_turns(want_reply, wait_s, kind=kind)
    if transcript.problem is not None and not turns:
        print(f"  (no transcript from the core: {transcript.problem})", file=sys.stderr)
    for turn in turns:
        print_turn(turn)


async def show_ending(transcript: CoreTranscript) -> None:
    """Turns not shown yet (a goodbye) and how the core says the call ended."""
    for _ in range(25):  # the core archives the call once it has closed: up to 5 s
        data = await transcript.fetch()
        if data is not None and data.get("ended"):
            break
        await asyncio.sleep(0.2)
    if data is None:
        return
    for turn in data["turns"][transcript.shown:]:
        print_turn(turn)
    print(f"call ended: {data.get('ended')} after {data.get('duration_s')} s")


async def next_refer(sip: SipCaller, refers: asyncio.Queue[ReferRequest], shown: int,
                     rtp: RtpPeer, quiet_s: float = 0.6) -> ReferRequest | None:
    """A REFER not handled yet (accepted: from the queue; refused: from `sip.refers`).

    The bot sends it once its reply has played: while the bot is still talking (a
    reply's second sentence may come after a pause), keep waiting for it."""
    while True:
        try:
            return await asyncio.wait_for(refers.get(), quiet_s)
        except TimeoutError:
            pass
        if sip.on_refer is None and len(sip.refers) > shown:  # refused: never queued
            return sip.refers[shown]
        if sip.bye_received.is_set() or not rtp.speech_frames_after(time.monotonic() - quiet_s):
            return None


async def listen(rtp: RtpPeer, since: float, timeout: float,
                 quiet_s: float = 1.2) -> tuple[float, float] | None:
    """(first, last) time of the next thing said on `rtp` after `since`, or None."""
    first = await rtp.wait_for_speech(since, timeout)
    if first is None:
        return None
    return first, await rtp.wait_for_silence(first, quiet_s, timeout)


async def after_failed_transfer(args: argparse.Namespace, rtp: RtpPeer,
                                transcript: CoreTranscript) -> None:
    """The bot says it could not put the caller through (its `transfer_failed` prompt,
    which may have started already): show it, and let it finish before the next turn."""
    turns = await transcript.new_turns(want_reply=True, wait_s=args.timeout, kind="prompt")
    for turn in turns:
        print_turn(turn)
    if not turns:
        print("  (the bot said nothing after the failed transfer)", file=sys.stderr)
    await rtp.wait_for_silence(time.monotonic() - 0.5, 0.8, args.timeout)


async def refused_transfer(args: argparse.Namespace, refer: ReferRequest, rtp: RtpPeer,
                           transcript: CoreTranscript) -> None:
    print(f"bot asked to transfer to {refer.refer_to} (REFER, Referred-By: "
          f"{refer.referred_by or '-'})")
    print("  caller: 405 Method Not Allowed (--refuse-transfer)")
    await after_failed_transfer(args, rtp, transcript)


async def followed_transfer(args: argparse.Namespace, sip: SipCaller, refer: ReferRequest,
                            rtp: RtpPeer, transcript: CoreTranscript) -> TransferOutcome:
    """Follow an accepted REFER and print it; the bot's call is over when it succeeded."""
    print(f"bot asked to transfer to {refer.refer_to} (REFER, Referred-By: "
          f"{refer.referred_by or '-'})")
    print("  caller: 202 Accepted")
    outcome = await BlindTransfer(sip, refer, codec=args.codec,
                                  ring_timeout_s=args.ring_timeout).run()
    for index, notified in enumerate(outcome.notified):
        answered = "no answer" if notified.answered is None else \
            f"the bot answered {notified.answered}"
        print(f"  caller -> bot: NOTIFY {notified.sipfrag} ({answered})")
        if index == 0 and len(outcome.notified) > 1:
            print(f"  caller -> {refer.refer_to}: INVITE, {outcome.status} {outcome.reason}")
    if not outcome.ok:
        await after_failed_transfer(args, rtp, transcript)
        return outcome
    try:
        await asyncio.wait_for(sip.bye_received.wait(), args.timeout)
        print("the bot hung up (BYE): the caller is with the transfer target now")
    except TimeoutError:
        print(f"  (no BYE from the bot within {args.timeout:g} s)", file=sys.stderr)
    rtp.sending = False
    assert outcome.rtp is not None and outcome.leg is not None
    heard = await listen(outcome.rtp, 0.0, args.timeout)
    if heard is None:
        print(f"{refer.refer_to}: (nothing heard)", file=sys.stderr)
    else:
        said = await transcribe(args.asr, outcome.rtp.audio_between(*heard))
        print(f"{refer.refer_to} said (by ASR): {said}")
    try:
        await asyncio.wait_for(outcome.leg.bye_received.wait(), 5.0)
        print(f"{refer.refer_to} hung up")
    except TimeoutError:
        await outcome.leg.bye()
        print(f"hung up on {refer.refer_to}")
    return outcome


async def show_reply(args: argparse.Namespace, rtp: RtpPeer, transcript: CoreTranscript,
                     turn: TurnResult) -> bool:
    """Print the core's record of the bot's reply to the caller's input; False: none came."""
    if turn.latency_s is None:
        await show_turns(transcript, want_reply=False)
        print("bot: (no reply)", file=sys.stderr)
        return False
    await show_turns(transcript, want_reply=True)
    if args.check_audio:
        reply = await transcribe(args.asr, turn.reply)
        print(f"  (the caller heard, by ASR: {reply})")
    print(f"  turn latency: {turn.latency_s * 1000:.0f} ms "
          "(as the caller heard it: end of its input -> first reply audio)")
    return True


async def place_call(args: argparse.Namespace) -> int:
    utterances = []
    for text in args.text:
        pcm = await synthesize(args.tts, text)
        utterances.append((text, pcm))
    rtp = await RtpPeer(codec=args.codec, payload_type=0 if args.codec == "PCMU" else 8).open()
    refers: asyncio.Queue[ReferRequest] = asyncio.Queue()
    sip = await SipCaller(_target(args.sip), on_refer=None if args.refuse_transfer
                          else refers.put_nowait).open()
    transfers: list[TransferOutcome] = []
    try:
        started = time.monotonic()
        answer = await sip.invite(make_sdp("127.0.0.1", rtp.local_port, codecs=(args.codec,)))
        if answer.status != 200:
            print(f"call refused: {answer.status} {answer.reason}", file=sys.stderr)
            return 1
        ip, port, _ = parse_media_address(answer.body)
        rtp.start((ip, port))
        print(f"answered in {(time.monotonic() - started) * 1000:.0f} ms ({args.sip}, "
              f"Call-ID {sip.call_id})")
        transcript = CoreTranscript(args.http, sip.call_id, args.token)
        first = await rtp.wait_for_speech(started, args.timeout)
        if first is None:
            print("no greeting heard", file=sys.stderr)
            return 1
        # The greeting is over once the core's transcript has its turn (all of it queued
        # to play) and it has been heard out: on a busy machine its second sentence may
        # come after a longer pause than any quiet spell taken for its end.
        await show_turns(transcript, want_reply=True, kind="greeting", wait_s=args.timeout)
        last = await rtp.wait_for_silence(first, 0.8, args.timeout)
        if args.check_audio:
            greeting = await transcribe(args.asr, rtp.audio_between(first, last))
            print(f"  (the caller heard, by ASR: {greeting})")
        steps: list[tuple[str, np.ndarray | None]] = list(utterances)
        if args.dtmf:
            steps.insert(args.dtmf_after, (args.dtmf, None))
        for text, audio in steps:
            if audio is None:
                print(f"caller keys in: {text} (RFC 4733)")
                turn = await key_and_listen(rtp, text, reply_timeout=args.timeout)
            else:
                print(f"caller says: {text}")
                turn = await speak_and_listen(rtp, audio, reply_timeout=args.timeout)
            if not await show_reply(args, rtp, transcript, turn):
                return 1
            # A transfer's REFER follows the reply that announced it, once it has played.
            refer = await next_refer(sip, refers, len(transfers), rtp)
            if refer is not None and args.refuse_transfer:
                transfers.append(TransferOutcome(refer, 405, "Method Not Allowed"))
                await refused_transfer(args, refer, rtp, transcript)
            elif refer is not None:
                transfers.append(await followed_transfer(args, sip, refer, rtp, transcript))
            if sip.bye_received.is_set():
                break
        if not sip.bye_received.is_set():
            await sip.bye()
            print("hung up")
        elif not any(t.ok for t in transfers):
            print("the bot hung up")
        await show_ending(transcript)
        return 0
    finally:
        for outcome in transfers:
            if outcome.rtp is not None:
                await outcome.rtp.close()
            if outcome.leg is not None:
                outcome.leg.close()
        await rtp.close()
        sip.close()


def dtmf_digits(value: str) -> str:
    """An argparse type: keypad keys only (0-9 * # A-D)."""
    unknown = sorted(set(value.upper()) - set(DTMF_EVENTS))
    if not value or unknown:
        raise argparse.ArgumentTypeError(
            f"{value!r}: DTMF keys are {DTMF_EVENTS}" + (f", not {''.join(unknown)}"
                                                         if unknown else ""))
    return value.upper()


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="dev-call.sh", description="Place a real test call against the running stack.")
    parser.add_argument("text", nargs="+", help="what the caller says (several: several turns)")
    parser.add_argument("--sip", default=f"127.0.0.1:{env.get('CORE_SIP_PORT', '5080')}",
                        help="the core's direct SIP address (default %(default)s)")
    parser.add_argument("--asr", default=env.get("CORE_ASR_TARGET", "127.0.0.1:50051"))
    parser.add_argument("--tts", default=env.get("CORE_TTS_TARGET", "127.0.0.1:50053"))
    parser.add_argument("--http", default=f"127.0.0.1:{env.get('CORE_HTTP_PORT', '8088')}",
                        help="the core's HTTP API, for the call's transcript "
                             "(default %(default)s)")
    parser.add_argument("--token", default=env.get("CORE_API_TOKEN"),
                        help="the core's API token, if it has one (default: CORE_API_TOKEN)")
    parser.add_argument("--check-audio", action="store_true",
                        help="also transcribe the bot's audio with the ASR service")
    parser.add_argument("--refuse-transfer", action="store_true",
                        help="answer the bot's REFER 405 (a phone without transfer) instead "
                             "of following it")
    parser.add_argument("--ring-timeout", type=float, default=20.0,
                        help="seconds the transfer target may take to answer before the "
                             "caller reports 408 to the bot (default %(default)s)")
    parser.add_argument("--dtmf", type=dtmf_digits, metavar="DIGITS",
                        help="key these digits in (RFC 4733 telephone-events), e.g. 12345678#")
    parser.add_argument("--dtmf-after", type=int, default=0, metavar="N",
                        help="key them in after the reply to the caller's N-th utterance "
                             "(default 0: after the greeting)")
    parser.add_argument("--codec", choices=("PCMU", "PCMA"), default="PCMU")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per wait")
    args = parser.parse_args(argv)
    if not 0 <= args.dtmf_after <= len(args.text):
        parser.error(f"--dtmf-after {args.dtmf_after}: there are {len(args.text)} utterances "
                     f"(0 keys in after the greeting)")
    try:
        return asyncio.run(place_call(args))
    except (OSError, TimeoutError) as err:
        print(f"dev-call: {err or type(err).__name__} (is the stack running? "
              "./scripts/dev-status.sh)", file=sys.stderr)
        return 1
    except grpc.aio.AioRpcError as err:  # one line, not the error's repr
        print(f"dev-call: the TTS or ASR service ({args.tts}, {args.asr}) answered "
              f"{err.code().name}: {err.details()} (is the stack running? "
              "./scripts/dev-status.sh)", file=sys.stderr)
        return 1
    except Exception as err:  # a gRPC error from TTS/ASR: say which, briefly
        print(f"dev-call: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
