#!/usr/bin/env python3
"""Measure the memory (RSS, process group summed) of each service idle and under load,
and memory and CPU per call: the figures docs/scaling.md plans capacity with.

Starts ASR (pocketsphinx; Vosk with the packaged model when present), LLM (demo), TTS
(Piper) and a core on 127.0.0.1 (free ports), reads /proc for each process group
(a service and its worker processes), then places N calls at once (greeting heard, one
turn each, all calls held until the last is done) and reads the core and services
again, with the CPU time each process group used from the first INVITE to that point.
Prints a Markdown table; writes nothing.

Usage: .venv/bin/python scripts/bench/memory.py [--calls 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from asr_service.engines.vosk_engine import packaged_korean_model
from opensips_ai_core.devtools.sip_uac import SipCaller, make_sdp, parse_media_address
from opensips_ai_core.devtools.softphone import RtpPeer, speak_and_listen, synthesize
from voice_testkit.stack import build_demo_llm, core, service

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
TICKS = os.sysconf("SC_CLK_TCK")


def group_usage(pgid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds) of every live process in the group (shared pages counted
    per process: an upper bound, as a container's limit also sees it)."""
    total_kb = 0
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 of stat: the process group
                total_kb += int((entry / "statm").read_text().split()[1]) * PAGE_KB
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return total_kb / 1024, ticks / TICKS


async def hold_calls(sip_port: int, pcm, calls: int, measure) -> dict[str, float]:
    async def one() -> tuple[SipCaller, RtpPeer]:
        rtp = await RtpPeer().open()
        sip = await SipCaller(("127.0.0.1", sip_port)).open()
        answer = await sip.invite(make_sdp("127.0.0.1", rtp.local_port))
        ip, port, _ = parse_media_address(answer.body)
        rtp.start((ip, port))
        first = await rtp.wait_for_speech(time.monotonic() - 1, 60)
        if first is not None:
            await rtp.wait_for_silence(first, 0.8, 60)
        await speak_and_listen(rtp, pcm, reply_timeout=60)
        return sip, rtp

    before = measure()
    started = time.monotonic()
    legs = await asyncio.gather(*(one() for _ in range(calls)))
    figures = measure()  # every call still up, ASR streams open
    figures["_wall_s"] = (time.monotonic() - started, 0.0)
    figures["_before"] = before
    for sip, rtp in legs:
        await sip.bye()
        await rtp.close()
        sip.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        logdir = Path(tmp)
        build_demo_llm(logdir / "cache")
        nice = {"ASR_NICE": "10"}
        svcs = {
            "asr (pocketsphinx)": stack.enter_context(
                service("asr", logdir, ASR_ENGINE="pocketsphinx", **nice)),
            "llm (demo model)": stack.enter_context(
                service("llm", logdir, VOICE_CACHE_DIR=str(logdir / "cache"), LLM_MODEL="demo",
                        LLM_NICE="10")),
            "tts (piper)": stack.enter_context(service("tts", logdir, TTS_NICE="10")),
        }
        vosk_model = os.environ.get("VOSK_MODEL_PATH") or packaged_korean_model()
        if vosk_model:
            svcs["asr (vosk, packaged small model)"] = stack.enter_context(
                service("asr", logdir, ASR_ENGINE="vosk", VOSK_MODEL_PATH=str(vosk_model)))
        names = list(svcs)
        asr, llm, tts = (svcs[n] for n in names[:3])
        running = stack.enter_context(core(logdir, asr.target, llm.target, tts.target,
                                           CORE_LOG_LEVEL="INFO", DEVELOPMENT_MODE="0"))

        def measure() -> dict:
            out = {name: group_usage(svc.proc.pid) for name, svc in svcs.items()}
            out["core"] = group_usage(running.proc.pid)
            return out

        idle = measure()
        pcm = asyncio.run(synthesize(tts.target, "what is my balance"))
        loaded = asyncio.run(hold_calls(running.sip_port, pcm, args.calls, measure))
    wall = loaded.pop("_wall_s")[0]
    before = loaded.pop("_before")
    print(f"{args.calls} calls at once, {wall:.1f} s from the first INVITE to the last reply.\n")
    print(f"| process | RSS idle (MB) | RSS with {args.calls} calls (MB) | RSS per call (MB) "
          "| CPU s in the window | CPU per call (% of a core) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in idle:
        extra = loaded[name][0] - idle[name][0]
        cpu = loaded[name][1] - before[name][1]
        print(f"| {name} | {idle[name][0]:.0f} | {loaded[name][0]:.0f} "
              f"| {extra / args.calls:.1f} | {cpu:.1f} | {100 * cpu / wall / args.calls:.1f} |")
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
