"""Outbound RTP pacing jitter for N concurrent calls (one media clock thread, clock.py).

Opens N RtpSessions on 127.0.0.1, each playing a tone to one receiver that runs
in a separate process (so receiving costs the pacers nothing), and reports the
inter-packet gap error |gap - 20 ms| per call (p50, p99, max), the packets each
call delivered against the expected count, and the pacers' CPU use.

    .venv/bin/python scripts/bench/rtp_pacer.py [--sessions 1,10,50,100] [--seconds 5]
        [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import time
from collections import defaultdict

import numpy as np
from report import write_section

from opensips_ai_core.media.ports import RtpPortAllocator
from opensips_ai_core.media.session import RtpSession

LOOPBACK = "127.0.0.1"
FRAME_S = 0.020


def receive(port_queue: mp.Queue, result_queue: mp.Queue, seconds: float) -> None:
    """In a child process: timestamp every datagram by SSRC, then report the gaps."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((LOOPBACK, 0))
    sock.settimeout(0.5)
    port_queue.put(sock.getsockname()[1])
    arrivals: dict[int, list[float]] = defaultdict(list)
    start = None
    while start is None or time.monotonic() - start < seconds:
        try:
            data = sock.recv(2048)
        except TimeoutError:
            if start is not None:
                break
            continue
        now = time.monotonic()
        if start is None:
            start = now
        arrivals[int.from_bytes(data[8:12], "big")].append(now)
    sock.close()
    gaps_ms = [np.abs(np.diff(times) - FRAME_S) * 1000 for times in arrivals.values()]
    counts = [len(times) for times in arrivals.values()]
    result_queue.put((np.concatenate(gaps_ms) if gaps_ms else np.zeros(0), counts))


async def run_sessions(count: int, port: int, seconds: float) -> tuple[float, int]:
    ports = RtpPortAllocator(45000, 46999)
    sessions = [await RtpSession.open(LOOPBACK, ports, lambda pcm: None) for _ in range(count)]
    t = np.arange(int(8000 * (seconds + 2))) / 8000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    cpu0, wall0 = time.process_time(), time.monotonic()
    for session in sessions:
        session.configure(LOOPBACK, port, "PCMU", 0, None)
        session.enqueue(tone)
    await asyncio.sleep(seconds + 1.0)
    cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    resyncs = sum(s.pacer.resyncs for s in sessions)
    for session in sessions:
        await session.close()
    return cpu, resyncs


def measure(count: int, seconds: float) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    port_queue: mp.Queue = ctx.Queue()
    result_queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=receive, args=(port_queue, result_queue, seconds), daemon=True)
    proc.start()
    try:
        port = port_queue.get(timeout=30)
        cpu, resyncs = asyncio.run(run_sessions(count, port, seconds))
        gaps, counts = result_queue.get(timeout=30)
    finally:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
    expected = seconds / FRAME_S
    return {
        "sessions": count,
        "p50": float(np.percentile(gaps, 50)),
        "p99": float(np.percentile(gaps, 99)),
        "max": float(gaps.max()),
        "delivered": float(np.mean(counts)) / expected * 100 if counts else 0.0,
        "cpu": cpu * 100,
        "resyncs": resyncs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,10,50,100",
                        help="comma-separated numbers of concurrent calls")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = [measure(int(n), args.seconds) for n in args.sessions.split(",")]
    load = f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    header = ("| calls | gap error p50 (ms) | p99 (ms) | max (ms) | packets delivered "
              "| core CPU (% of one core) | resyncs |\n|---|---|---|---|---|---|---|")
    lines = [header] + [
        f"| {r['sessions']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.1f} "
        f"| {r['delivered']:.1f}% | {r['cpu']:.1f} | {r['resyncs']} |" for r in rows
    ]
    table = "\n".join(lines)
    print(table)
    print(load)
    if not args.no_write:
        body = (
            f"Each call plays a tone paced at 20 ms for {args.seconds:g} s to a receiver in a "
            "separate process on 127.0.0.1. Gap error is |arrival gap - 20 ms| over all "
            "packets of all calls; packets delivered is against the ideal 50 per second; CPU "
            "is the core process (every pacer on the media clock thread, which hands idle "
            f"and talkspurt events to the event loop). {load}.\n\n" + table
        )
        print(f"wrote {write_section('rtp_pacer', 'RTP pacer jitter', body)}")


if __name__ == "__main__":
    main()
