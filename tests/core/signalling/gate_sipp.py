"""SIPp at the OpenSIPS gate: one OPTIONS probe or one INVITE, and what it was answered.

The scenarios (tests/data/sipp/gate_options.xml, gate_invite.xml) accept a 200 or a 503
and log the final reply's status line and Retry-After; the caller of `sipp_reply` asserts
on them. Used against the double (sip=True) and against a real OpenSIPS.
"""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

from tests.core.signalling.conftest import SIPP_DIR
from voice_testkit.procs import LOOPBACK, Proc, base_env, free_port

REPLY = re.compile(r"reply: (SIP/2\.0 (\d{3}) [^\r\n]*?) retry-after: (\d*)\s*$", re.M)


async def sipp_reply(scenario: str, port: int, logdir: Path) -> tuple[int, str, str]:
    """Run one SIPp call of `scenario` against 127.0.0.1:`port`; (status, status line,
    Retry-After or "")."""
    name = f"{scenario}-{free_port(socket.SOCK_DGRAM)}"
    log_file, error_file = logdir / f"{name}.log", logdir / f"{name}.errors.log"
    proc = Proc(["sipp", "-sf", str(SIPP_DIR / f"{scenario}.xml"), "-m", "1",
                 "-i", LOOPBACK, "-p", str(free_port(socket.SOCK_DGRAM)),
                 "-mi", LOOPBACK, "-mp", str(free_port(socket.SOCK_DGRAM)),
                 "-timeout", "20s", "-timeout_error", "-recv_timeout", "10000",
                 "-trace_logs", "-log_file", str(log_file),
                 "-trace_err", "-error_file", str(error_file), "-nostdin",
                 f"{LOOPBACK}:{port}"], base_env(), logdir / f"{name}.sipp.log")
    try:
        rc = await asyncio.to_thread(proc.wait, 30)
    finally:
        proc.stop()
    errors = error_file.read_text(errors="replace")[-3000:] if error_file.exists() else ""
    assert rc == 0, (f"sipp {scenario} exited {rc}\n{errors}\n"
                     f"{proc.log_path.read_text(errors='replace')[-2000:]}")
    logged = REPLY.findall(log_file.read_text(errors="replace"))
    assert len(logged) == 1, f"sipp {scenario} logged {logged}"
    line, status, retry_after = logged[0]
    return int(status), line, retry_after
