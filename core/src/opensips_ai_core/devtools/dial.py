"""`python -m opensips_ai_core.devtools.dial "what is my balance"`: one real test call.

Speaks the text as the caller (made by the TTS service), records the bot's reply,
prints its transcript (by the ASR service) and the turn latency. Used by
scripts/dev-call.sh against the running stack.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import grpc

from opensips_ai_core.devtools.sip_uac import SipCaller, make_sdp, parse_media_address
from opensips_ai_core.devtools.softphone import (
    RtpPeer,
    speak_and_listen,
    synthesize,
    transcribe,
)


def _target(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


async def place_call(args: argparse.Namespace) -> int:
    utterances = []
    for text in args.text:
        pcm = await synthesize(args.tts, text)
        utterances.append((text, pcm))
    rtp = await RtpPeer(codec=args.codec, payload_type=0 if args.codec == "PCMU" else 8).open()
    sip = await SipCaller(_target(args.sip)).open()
    try:
        started = time.monotonic()
        answer = await sip.invite(make_sdp("127.0.0.1", rtp.local_port, codecs=(args.codec,)))
        if answer.status != 200:
            print(f"call refused: {answer.status} {answer.reason}", file=sys.stderr)
            return 1
        ip, port, _ = parse_media_address(answer.body)
        rtp.start((ip, port))
        print(f"answered in {(time.monotonic() - started) * 1000:.0f} ms ({args.sip})")
        first = await rtp.wait_for_speech(started, args.timeout)
        if first is None:
            print("no greeting heard", file=sys.stderr)
            return 1
        last = await rtp.wait_for_silence(first, 0.8, args.timeout)
        greeting = await transcribe(args.asr, rtp.audio_between(first, last))
        print(f"bot (greeting): {greeting}")
        for text, pcm in utterances:
            print(f"caller: {text}")
            turn = await speak_and_listen(rtp, pcm, reply_timeout=args.timeout)
            if turn.latency_s is None:
                print("bot: (no reply)", file=sys.stderr)
                return 1
            reply = await transcribe(args.asr, turn.reply)
            print(f"bot: {reply}")
            print(f"turn latency: {turn.latency_s * 1000:.0f} ms "
                  "(end of caller speech -> first reply audio)")
            if sip.bye_received.is_set():
                print("the bot hung up")
                return 0
        await asyncio.sleep(0.5)
        if sip.bye_received.is_set():
            print("the bot hung up")
        else:
            await sip.bye()
            print("hung up")
        return 0
    finally:
        await rtp.close()
        sip.close()


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="dev-call.sh", description="Place a real test call against the running stack.")
    parser.add_argument("text", nargs="+", help="what the caller says (several: several turns)")
    parser.add_argument("--sip", default=f"127.0.0.1:{env.get('CORE_SIP_PORT', '5080')}",
                        help="the core's direct SIP address (default %(default)s)")
    parser.add_argument("--asr", default=env.get("CORE_ASR_TARGET", "127.0.0.1:50051"))
    parser.add_argument("--tts", default=env.get("CORE_TTS_TARGET", "127.0.0.1:50053"))
    parser.add_argument("--codec", choices=("PCMU", "PCMA"), default="PCMU")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per wait")
    args = parser.parse_args(argv)
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
