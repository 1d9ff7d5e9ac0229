"""Kamailio (Debian's `kamailio` package) as the dispatcher proxy in front of cores.

`proxy(cores, logdir)` writes the dispatcher list, starts `kamailio -DD -E` with
dev/testkit/src/voice_testkit/kamailio/dispatcher.cfg in its own process group (every port a free
loopback one, passed with -A), waits until it answers OPTIONS, and stops the whole
group at the end. `states()` reads the dispatcher's view of each core over the
binrpc control socket with `kamcmd dispatcher.list`.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from voice_testkit.procs import LOOPBACK, Proc, free_port, wait_until

CFG = Path(__file__).with_name("kamailio") / "dispatcher.cfg"
SET_ID = 1


def binaries() -> tuple[str, str] | None:
    """(kamailio, kamcmd), or None when the package is not installed."""
    kamailio = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/sbin")
    kamcmd = shutil.which("kamcmd") or shutil.which("kamcmd", path="/usr/sbin:/sbin")
    return (kamailio, kamcmd) if kamailio and kamcmd else None


@dataclass
class Proxy:
    proc: Proc
    sip_port: int
    ctl: str
    kamcmd: str
    destinations: list[str]

    def states(self) -> dict[str, str]:
        """Each destination URI and its dispatcher flags: "AX" active, "IP" inactive and
        probing, "TX" trying, "DX" disabled (Kamailio 5.6's dispatcher.list)."""
        result = subprocess.run([self.kamcmd, "-s", self.ctl, "dispatcher.list"],
                                capture_output=True, text=True, timeout=10, check=True)
        uris = re.findall(r"URI:\s*(\S+)", result.stdout)
        flags = re.findall(r"FLAGS:\s*(\S+)", result.stdout)
        return dict(zip(uris, flags, strict=True))

    def active(self) -> set[str]:
        return {uri for uri, flags in self.states().items() if flags.startswith("A")}


def _answers_options(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(0.5)
        request = (f"OPTIONS sip:{LOOPBACK}:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {LOOPBACK}:{sock.getsockname()[1]}"
                   ";branch=z9hG4bK-kam-ready;rport\r\n"
                   f"From: <sip:test@{LOOPBACK}>;tag=ready\r\nTo: <sip:{LOOPBACK}:{port}>\r\n"
                   f"Call-ID: ready@{LOOPBACK}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 5\r\n"
                   "Content-Length: 0\r\n\r\n")
        sock.sendto(request.encode(), (LOOPBACK, port))
        try:
            return sock.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            return False


@contextlib.contextmanager
def proxy(cores: Sequence[int], logdir: Path, *, ping_interval_s: int = 1,
          no_reply_ms: int = 1000) -> Iterator[Proxy]:
    """Kamailio dispatching over the direct-SIP cores on these loopback UDP ports."""
    found = binaries()
    if found is None:
        raise RuntimeError("kamailio/kamcmd not installed")
    kamailio, kamcmd = found
    sip_port = free_port(socket.SOCK_DGRAM)
    ctl = f"udp:{LOOPBACK}:{free_port(socket.SOCK_DGRAM)}"
    run_dir = logdir / f"kamailio-{sip_port}"
    run_dir.mkdir()
    destinations = [f"sip:{LOOPBACK}:{port}" for port in cores]
    ds_list = run_dir / "dispatcher.list"
    ds_list.write_text("".join(f"{SET_ID} {uri} 0 0\n" for uri in destinations))
    args = [kamailio, "-DD", "-E", "-f", str(CFG), "-Y", str(run_dir),
            "-A", f"LISTEN=udp:{LOOPBACK}:{sip_port}", "-A", f'DS_LIST="{ds_list}"',
            "-A", f'CTL_SOCKET="{ctl}"', "-A", f"PING_INTERVAL={ping_interval_s}",
            "-A", f"NO_REPLY_MS={no_reply_ms}"]
    proc = Proc(args, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, run_dir / "kamailio.log",
                cwd=run_dir)
    try:
        def ready() -> bool:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"kamailio exited with {proc.popen.returncode}:\n"
                                   f"{proc.output()[-3000:]}")
            return _answers_options(sip_port)

        wait_until(ready, 30, 0.2, "kamailio answering OPTIONS")
        yield Proxy(proc, sip_port, ctl, kamcmd, destinations)
    finally:
        proc.stop()
