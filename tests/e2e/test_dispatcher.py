"""Calls spread over 3 cores behind a dispatcher proxy; one core drained, one killed.

The proxy is Debian's Kamailio (dev/testkit/src/voice_testkit/kamailio/dispatcher.cfg: the topology of
core/opensips/opensips-dispatcher.cfg, which cannot run here because OpenSIPS is not
installable): dispatcher round robin over 3 real core processes in direct-SIP mode on
free loopback ports, OPTIONS probing every second, record-route, failover to the next
core on a 5xx or a timeout. The cores share one set of real AI services (`ai`). SIPp
places the calls through the proxy and hangs each up after a pause; SIPp's exit code
says whether every call was answered and ended by its own BYE (none refused, none
ended by a core).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AiServices
from voice_testkit import kamailio
from voice_testkit.procs import LOOPBACK, ROOT, Proc, running, wait_until
from voice_testkit.stack import Core, core, free_rtp_range, free_udp_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(kamailio.binaries() is None,
                       reason="kamailio/kamcmd not installed (apt-get install kamailio)"),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (sip-tester) not installed"),
]

SCENARIO = ROOT / "tests" / "data" / "sipp" / "proxy_call.xml"
CORES = 3
ANSWERED = re.compile(r"Call (\S+) from \S+ answered")


@contextlib.contextmanager
def pool(ai: AiServices, logdir: Path, ping_interval_s: int = 1, no_reply_ms: int = 5000
         ) -> Iterator[tuple[list[Core], kamailio.Proxy]]:
    """3 cores (drains of up to 120 s) behind Kamailio. A core that has not answered a
    request (OPTIONS probe or INVITE) within `no_reply_ms` is taken for dead: 5 s by
    default, as a live core busy with calls on a loaded machine may take over a second
    (it would leave the rotation, and the calls' spread would be the machine's doing)."""
    with contextlib.ExitStack() as stack:
        cores = [stack.enter_context(core(logdir, ai.asr.target, ai.llm.target, ai.tts.target,
                                          CORE_DRAIN_TIMEOUT_S="120", CORE_LOG_LEVEL="INFO"))
                 for _ in range(CORES)]
        proxy = stack.enter_context(kamailio.proxy([c.sip_port for c in cores], logdir,
                                                   ping_interval_s=ping_interval_s,
                                                   no_reply_ms=no_reply_ms))
        wait_until(lambda: len(proxy.active()) == CORES, 30, 0.2, "every core active")
        yield cores, proxy


def answered(core_: Core) -> list[str]:
    """Call-IDs this core answered, from its log (readable after it exited)."""
    return ANSWERED.findall(core_.proc.log_path.read_text(errors="replace"))


def sipp(target: kamailio.Proxy | Core, tmp_path: Path, *, calls: int, rate: int,
         pause_ms: int, name: str) -> list[str]:
    """SIPp placing `calls` calls at `rate` per second, each hung up after `pause_ms`."""
    media = free_rtp_range(4)[0]
    return ["sipp", f"{LOOPBACK}:{target.sip_port}", "-sf", str(SCENARIO), "-m", str(calls),
            "-r", str(rate), "-rp", "1000", "-l", str(calls), "-d", str(pause_ms),
            "-i", LOOPBACK, "-p", str(free_udp_port()), "-mi", LOOPBACK, "-mp", str(media),
            "-timeout", "120", "-timeout_error", "-trace_err",
            "-error_file", str(tmp_path / f"{name}.err"), "-nostdin"]


def run_sipp(args: list[str], tmp_path: Path, name: str) -> Proc:
    return Proc(args, {"PATH": "/usr/bin:/bin"}, tmp_path / f"{name}.log", cwd=tmp_path)


def sipp_failure(tmp_path: Path, name: str, proc: Proc, cores: list[Core]) -> str:
    errors = tmp_path / f"{name}.err"
    text = errors.read_text(errors="replace")[-3000:] if errors.exists() else ""
    logs = "\n".join(c.proc.log_path.read_text(errors="replace")[-1500:] for c in cores)
    return f"SIPp failed: {text}\n{proc.output()[-2000:]}\n{logs}"


def post_drain(core_: Core) -> int:
    request = urllib.request.Request(core_.http + "/drain", method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        return reply.status


def test_calls_spread_evenly_over_the_cores(ai: AiServices, tmp_path: Path) -> None:
    with pool(ai, tmp_path) as (cores, proxy):
        with running(sipp(proxy, tmp_path, calls=9, rate=3, pause_ms=1500, name="spread"), {"PATH": "/usr/bin:/bin"},
                     tmp_path / "spread.log", cwd=tmp_path) as load:
            code = load.wait(180)
            assert code == 0, sipp_failure(tmp_path, "spread", load, cores)
        counts = [len(answered(c)) for c in cores]
    assert sum(counts) == 9 and max(counts) - min(counts) <= 1, counts


def test_a_core_drained_mid_load_drops_no_call(ai: AiServices, tmp_path: Path) -> None:
    """POST /drain to core 0 while it holds calls: its calls go on to their BYE, new
    calls go to the other cores (a 503 on the way fails over), core 0 exits 0."""
    with pool(ai, tmp_path) as (cores, proxy):
        drained = cores[0]
        load = run_sipp(sipp(proxy, tmp_path, calls=12, rate=2, pause_ms=6000, name="drain"), tmp_path, "drain")
        try:
            wait_until(lambda: len(drained.calls()) >= 2, 60, 0.1, "2 calls on core 0")
            assert post_drain(drained) == 202
            # What core 0 answered is read once its drain is in force: SIPp goes on placing
            # calls, and one answered between a read before the POST and the POST itself
            # would look like a call answered after the drain.
            held = {c["call_id"] for c in drained.calls()}
            before = set(answered(drained))  # after `held`: each held call logged already
            wait_until(lambda: f"sip:{LOOPBACK}:{drained.sip_port}" not in proxy.active(), 30,
                       0.2, "core 0 out of rotation")
            code = load.wait(240)
            assert code == 0, sipp_failure(tmp_path, "drain", load, cores)
        finally:
            load.stop()
        # The drained core ends when its last call has: exit 0, nothing cut short.
        assert drained.proc.wait(120) == 0
        log = drained.proc.log_path.read_text(errors="replace")
        others = [len(answered(c)) for c in cores[1:]]
    assert held and held <= before
    assert set(answered(drained)) == before, "core 0 answered a call after its drain"
    assert len(before) + sum(others) == 12
    assert "Drain time is up" not in log
    assert "draining (POST /drain" in log


def test_a_killed_core_leaves_the_rotation_and_later_calls_succeed(
        ai: AiServices, tmp_path: Path) -> None:
    with pool(ai, tmp_path) as (cores, proxy):
        killed = cores[2]
        killed.proc.signal(signal.SIGKILL)
        killed.proc.wait(10)
        uri = f"sip:{LOOPBACK}:{killed.sip_port}"
        # Marked down by the probing (interval 1 s, no answer within 1 s); bounded wait.
        wait_until(lambda: proxy.states()[uri].startswith("I"), 30, 0.2,
                   "the killed core marked inactive")
        with running(sipp(proxy, tmp_path, calls=6, rate=3, pause_ms=1000,
                          name="after-kill"),
                     {"PATH": "/usr/bin:/bin"}, tmp_path / "after-kill.log",
                     cwd=tmp_path) as load:
            code = load.wait(180)
            assert code == 0, sipp_failure(tmp_path, "after-kill", load, cores)
        counts = [len(answered(c)) for c in cores[:2]]
    assert sum(counts) == 6 and min(counts) >= 2, counts


def test_failover_to_the_next_core_on_503_and_on_timeout(ai: AiServices, tmp_path: Path) -> None:
    """Probing too slow to notice (every 60 s): the INVITE itself finds core 0 draining
    (503: it still holds a call placed on it directly) and core 1 dead (no answer
    within 1 s), and each call goes on to the next core."""
    with pool(ai, tmp_path, ping_interval_s=60, no_reply_ms=1000) as (cores, proxy):
        held = run_sipp(sipp(cores[0], tmp_path, calls=1, rate=1, pause_ms=10000, name="held"),
                        tmp_path, "held")
        try:
            wait_until(cores[0].calls, 60, 0.1, "the call held on core 0")
            assert post_drain(cores[0]) == 202
            cores[1].proc.signal(signal.SIGKILL)
            cores[1].proc.wait(10)
            with running(sipp(proxy, tmp_path, calls=3, rate=1, pause_ms=500, name="failover"),
                         {"PATH": "/usr/bin:/bin"}, tmp_path / "failover.log",
                         cwd=tmp_path) as load:
                code = load.wait(180)
                assert code == 0, sipp_failure(tmp_path, "failover", load, cores)
            # The drained core's own call went on to its BYE.
            assert held.wait(60) == 0, sipp_failure(tmp_path, "held", held, cores)
        finally:
            held.stop()
        log = proxy.proc.log_path.read_text(errors="replace")
        counts = [len(answered(c)) for c in cores]
        states = proxy.states()
    assert counts == [1, 0, 3], counts
    assert re.search(r"503 from the core, next core", log), log[-2000:]
    assert re.search(r"408 from the core, next core", log), log[-2000:]
    # Both failed cores were taken out of rotation by the failures themselves.
    assert [states[d][0] for d in proxy.destinations] == ["I", "I", "A"], states
