#!/usr/bin/env python3
"""Benchmark a pool of cores behind a dispatcher proxy: capacity, drain, a killed core.

Starts ASR (pocketsphinx), LLM (demo), TTS (Piper) on 127.0.0.1 and cores in direct-SIP
mode, with Debian's Kamailio as the dispatcher proxy (dev/testkit/src/voice_testkit/kamailio/, the
topology of core/opensips/opensips-dispatcher.cfg; OpenSIPS is not installable here):

(a) carried calls: K simultaneous SIPp calls (answered, greeted, hung up by SIPp after
    P s) to one core alone, then to 3 cores behind the proxy: calls completed,
    greetings completed (the core's greeting turns done: every reply delivered) and
    the answer time (INVITE to 200 at SIPp) p50/p95;
(b) drain: core 0 holds 10 calls (placed on it directly), then POST /drain; 6 new
    calls through the proxy: dropped calls, calls core 0 answered after the drain,
    seconds from the drain to core 0's exit (its last call's end);
(c) killed core: SIGKILL each core in turn, seconds until the proxy marks it inactive,
    with the production timings (OPTIONS every 2 s, no answer within 2 s).
Prints the figures and writes the "dispatcher" section of docs/benchmarks.md.

Usage: .venv/bin/python scripts/bench/dispatcher.py [--calls 12,16] [--pause 20] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from report import write_section

from voice_testkit import kamailio
from voice_testkit.procs import LOOPBACK, Proc
from voice_testkit.stack import (
    Core,
    build_demo_llm,
    core,
    free_rtp_range,
    free_udp_port,
    service,
)

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = ROOT / "tests" / "data" / "sipp" / "proxy_call.xml"
SERVICE_NICE = "10"  # as in the dev stack: the services yield the CPU to the cores' media
GREETINGS = re.compile(r'voice_turns_total\{kind="greeting",outcome="(\w+)"\} (\S+)')
ANSWERED = re.compile(r"Call \S+ from \S+ answered")
DRAINED_CALLS = 10


def greetings(core_: Core) -> dict[str, int]:
    """The core's greeting turns by outcome (done, interrupted, failed)."""
    with urllib.request.urlopen(core_.http + "/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {outcome: int(float(n)) for outcome, n in GREETINGS.findall(text)}


def greetings_done(pool: list[Core]) -> tuple[int, int]:
    """(greetings done, greetings cut short) over the cores."""
    counts = [greetings(c) for c in pool]
    done = sum(c.get("done", 0) for c in counts)
    return done, sum(sum(c.values()) for c in counts) - done


def answered(core_: Core) -> int:
    return len(ANSWERED.findall(core_.proc.log_path.read_text(errors="replace")))


def run_sipp(port: int, workdir: Path, name: str, *, calls: int, rate: int,
             pause_s: float) -> tuple[int, int, list[float]]:
    """SIPp to 127.0.0.1:port: (successful calls, failed calls, answer times in ms)."""
    run = workdir / name
    run.mkdir()
    args = ["sipp", f"{LOOPBACK}:{port}", "-sf", str(SCENARIO), "-m", str(calls),
            "-r", str(rate), "-rp", "1000", "-l", str(calls), "-d", str(int(pause_s * 1000)),
            "-i", LOOPBACK, "-p", str(free_udp_port()), "-mi", LOOPBACK,
            "-mp", str(free_rtp_range(4)[0]), "-timeout", "180", "-timeout_error",
            "-trace_err", "-trace_stat", "-fd", "1", "-trace_rtt", "-rtt_freq", "1",
            "-nostdin"]
    proc = Proc(args, {"PATH": "/usr/bin:/bin"}, run / "sipp.log", cwd=run)
    try:
        proc.wait(300)
    finally:
        proc.stop()
    stats = next(run.glob("*_.csv"), None) or next(
        (p for p in run.glob("*.csv") if "rtt" not in p.name), None)
    ok = failed = 0
    if stats is not None:
        rows = [line.split(";") for line in stats.read_text().splitlines() if line]
        header, last = rows[0], rows[-1]
        ok = int(last[header.index("SuccessfulCall(C)")])
        failed = int(last[header.index("FailedCall(C)")])
    times = []
    for rtt in run.glob("*_rtt.csv"):
        for line in rtt.read_text().splitlines()[1:]:
            fields = line.split(";")
            if len(fields) >= 2:
                with contextlib.suppress(ValueError):
                    times.append(float(fields[1]))
    return ok, failed, times


@contextlib.contextmanager
def cores(logdir: Path, targets: tuple[str, str, str], count: int) -> Iterator[list[Core]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(core(logdir, *targets, CORE_DRAIN_TIMEOUT_S="300",
                                        CORE_LOG_LEVEL="INFO", CORE_ASR_MAX_STREAMS="16"))
               for _ in range(count)]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def carried(logdir: Path, targets: tuple[str, str, str], calls: int, pause_s: float
            ) -> list[dict[str, object]]:
    rows = []
    with cores(logdir, targets, 1) as pool:
        ok, failed, times = run_sipp(pool[0].sip_port, logdir, f"alone-{calls}", calls=calls,
                                     rate=calls, pause_s=pause_s)
        done, cut = greetings_done(pool)
        rows.append({"setup": "1 core, no proxy", "calls": calls, "ok": ok, "failed": failed,
                     "done": done, "cut": cut, "p50": pct(times, 50), "p95": pct(times, 95),
                     "spread": str(answered(pool[0]))})
    with cores(logdir, targets, 3) as pool, \
            kamailio.proxy([c.sip_port for c in pool], logdir) as proxy:
        ok, failed, times = run_sipp(proxy.sip_port, logdir, f"pool-{calls}", calls=calls,
                                     rate=calls, pause_s=pause_s)
        done, cut = greetings_done(pool)
        rows.append({"setup": "3 cores behind the proxy", "calls": calls, "ok": ok,
                     "failed": failed, "done": done, "cut": cut, "p50": pct(times, 50),
                     "p95": pct(times, 95), "spread": "/".join(str(answered(c)) for c in pool)})
    return rows


def drain(logdir: Path, targets: tuple[str, str, str], pause_s: float) -> dict[str, object]:
    with cores(logdir, targets, 3) as pool, \
            kamailio.proxy([c.sip_port for c in pool], logdir) as proxy:
        drained = pool[0]
        hold_s = pause_s + 10
        held = Proc(["sipp", f"{LOOPBACK}:{drained.sip_port}", "-sf", str(SCENARIO),
                     "-m", str(DRAINED_CALLS), "-r", str(DRAINED_CALLS), "-rp", "1000",
                     "-l", str(DRAINED_CALLS), "-d", str(int(hold_s * 1000)), "-i", LOOPBACK,
                     "-p", str(free_udp_port()), "-mi", LOOPBACK,
                     "-mp", str(free_rtp_range(4)[0]), "-timeout", "180", "-timeout_error",
                     "-nostdin"], {"PATH": "/usr/bin:/bin"}, logdir / "held.log", cwd=logdir)
        try:
            deadline = time.monotonic() + 60
            while len(drained.calls()) < DRAINED_CALLS and time.monotonic() < deadline:
                time.sleep(0.1)
            active = len(drained.calls())
            before = answered(drained)
            request = urllib.request.Request(drained.http + "/drain", method="POST")
            urllib.request.urlopen(request, timeout=5).close()
            began = time.monotonic()
            ok, failed, _ = run_sipp(proxy.sip_port, logdir, "after-drain", calls=6, rate=3,
                                     pause_s=2)
            held_code = held.wait(240)
            exit_code = drained.proc.wait(120)
            drained_s = time.monotonic() - began
        finally:
            held.stop()
        log = drained.proc.log_path.read_text(errors="replace")
        return {"active": active, "held_ok": held_code == 0, "new_ok": ok, "new_failed": failed,
                "after_drain": answered(drained) - before, "exit": exit_code,
                "ended_by_core": "Drain time is up" in log, "drain_s": drained_s,
                "hold_s": hold_s}


def kills(logdir: Path, targets: tuple[str, str, str]) -> list[float]:
    """Seconds from SIGKILL to the proxy marking the core inactive, for each core."""
    out = []
    with cores(logdir, targets, 3) as pool, \
            kamailio.proxy([c.sip_port for c in pool], logdir, ping_interval_s=2,
                           no_reply_ms=2000) as proxy:
        while len(proxy.active()) < 3:
            time.sleep(0.1)
        for victim in reversed(pool):
            time.sleep(1.3)  # a different phase of the probe timer each time
            uri = f"sip:{LOOPBACK}:{victim.sip_port}"
            victim.proc.signal(signal.SIGKILL)
            began = time.monotonic()
            while not proxy.states()[uri].startswith("I"):
                if time.monotonic() - began > 30:
                    break
                time.sleep(0.05)
            out.append(time.monotonic() - began)
    return out


def report(rows: list[dict[str, object]], drained: dict[str, object], down: list[float],
           pause_s: float) -> str:
    lines = [
        "Debian's Kamailio 5.6 is the proxy (OpenSIPS is not installable here; the "
        "topology and timings are core/opensips/opensips-dispatcher.cfg's). **The machine "
        "was shared with other engineers' builds and tests while this ran**: the figures "
        "are a floor, not a capacity. Runs were kept short.",
        "",
        f"(a) Simultaneous calls, each answered, greeted and hung up by SIPp after "
        f"{pause_s:.0f} s:",
        "",
        "| setup | calls | completed | failed | calls per core | greetings done | "
        "greetings cut short | answer p50 (ms) | answer p95 (ms) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['setup']} | {row['calls']} | {row['ok']} | {row['failed']} | "
                     f"{row['spread']} | {row['done']} | {row['cut']} | {row['p50']:.0f} | "
                     f"{row['p95']:.0f} |")
    lines += [
        "",
        "Every reply delivered means every completed call's greeting turn done (its whole "
        "text synthesized and queued) before SIPp hung up; a greeting cut short was still "
        "being synthesized then. The answer time is SIPp's (INVITE sent to "
        "200 received, in SIPp's whole milliseconds); on this busy machine its p95 moves from "
        "run to run in both setups (4 to 21 ms seen), the p50 stays within a few ms. "
        "The default pause is 20 s because with SIPp hanging up "
        "after 8 s greetings were cut short in both setups alike on this busy machine (0 to "
        "12 of 12-16 done, varying run to run): every core waits for the one shared TTS "
        "service, so the proxy and the number of cores were not what limited them.",
        "",
        f"(b) Drain: core 0 held {drained['active']} calls (placed on it directly, each "
        f"{drained['hold_s']:.0f} s long) when it got POST /drain; 6 new calls went through "
        f"the proxy. Dropped: **{0 if drained['held_ok'] else 'some'}** of core 0's calls "
        f"(SIPp {'passed' if drained['held_ok'] else 'FAILED'}), new calls completed "
        f"{drained['new_ok']}, failed {drained['new_failed']}, answered by core 0 after "
        f"the drain: {drained['after_drain']}; core 0 exited {drained['exit']} "
        f"{drained['drain_s']:.1f} s after the drain, when its last call ended "
        f"(ended by the drain timeout: {'yes' if drained['ended_by_core'] else 'none'}).",
        "",
        "(c) A killed core (SIGKILL) out of rotation, probing every 2 s with a 2 s answer "
        "timeout: " + ", ".join(f"{s:.1f} s" for s in down)
        + f" (max {max(down):.1f} s; target < 5 s; bound: interval + timeout = 4 s).",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="12,16",
                        help="levels of simultaneous calls, comma-separated")
    parser.add_argument("--pause", type=float, default=20.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if kamailio.binaries() is None:
        print("kamailio/kamcmd not installed (apt-get install kamailio)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-dispatcher-") as tmp:
        logs = Path(tmp)
        build_demo_llm(logs / "llm-cache")
        with (service("asr", logs, ASR_ENGINE="pocketsphinx", ASR_NICE=SERVICE_NICE,
                      ASR_MAX_CONCURRENT_STREAMS="48") as asr,
              service("llm", logs, VOICE_CACHE_DIR=str(logs / "llm-cache"),
                      LLM_MODEL="demo", LLM_NICE=SERVICE_NICE) as llm,
              service("tts", logs, TTS_NICE=SERVICE_NICE) as tts):
            targets = (asr.target, llm.target, tts.target)
            rows = [row for level in args.calls.split(",")
                    for row in carried(logs, targets, int(level), args.pause)]
            for row in rows:
                print(row)
            drained = drain(logs, targets, args.pause)
            print(drained)
            down = kills(logs, targets)
            print("killed core out of rotation after (s):", down,
                  "median", statistics.median(down))
    body = report(rows, drained, down, args.pause)
    print(body)
    if not args.no_write:
        print("wrote", write_section("dispatcher", "Dispatcher: a pool of cores", body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
