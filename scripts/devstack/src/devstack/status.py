"""dev-status's view of a stack, whichever runner runs it: per process its state (with
"Waiting" for a service that waits for a fixed source file), PID, health (its readiness
probe run now, else its liveness probe), the ports its process group really has bound,
uptime and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from pathlib import Path

from devstack import config, probes, ps
from devstack.supervisor import group_pids

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# voice_common.launch's lines for a service that does not import and waits for a change.
_CANNOT_START = re.compile(r"Hot-reload: \S+ cannot start: (?P<why>.*)")
_RELOADING = re.compile(r"Hot-reload: .*(changed; restarting|waiting for a change)")
_TAIL_BYTES = 32_768


def waiting_for_fix(log: Path) -> str | None:
    """Why the process waits for a source change (a syntax error...), from its log; None
    when its last run did not stop at an import error."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - _TAIL_BYTES))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for raw in reversed(lines):
        line = _ANSI.sub("", raw)
        found = _CANNOT_START.search(line)
        if found:
            return found.group("why").strip()
        if _RELOADING.search(line) and "waiting for a change" not in line:
            return None
        if "SERVING" in line:
            return None
    return None


def bound_ports(pgid: int) -> list[str]:
    """TCP ports listening and UDP ports bound by any process of the group."""
    inodes: set[str] = set()
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found: set[tuple[int, str]] = set()
    for kind in ("tcp", "tcp6", "udp", "udp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{kind}").read_text().splitlines()[1:]:
                cols = line.split()
                listening = cols[3] == "0A" if kind.startswith("tcp") else True
                if listening and cols[9] in inodes:
                    found.add((int(cols[1].rsplit(":", 1)[1], 16), kind.rstrip("6")))
    return [f"{port}/{proto}" for port, proto in sorted(found)]


def declared_ports(spec: config.Process | None) -> set[int]:
    if spec is None:
        return set()
    return {int(v) for k, _, v in (item.partition("=") for item in spec.environment)
            if k.endswith("_PORT") and v.isdigit()}


async def health(project: config.Project, path: Path, names: list[str]
                 ) -> dict[str, tuple[bool, str]]:
    """Per process: whether its health probe succeeds now, and what it said."""
    async def one(name: str) -> tuple[bool, str]:
        spec = project.processes[name]
        _kind, probe = config.health_probe(spec)
        if probe is None:
            return True, "-"
        ok, detail = await probes.check(probe, config.working_dir(spec, path),
                                        config.process_env(project, spec, os.environ))
        return ok, detail if ok or detail else "failing"

    results = await asyncio.gather(*(one(n) for n in names))
    return dict(zip(names, results, strict=True))


def rows(project: config.Project, path: Path, listed: list[ps.Row], runtime_dir: Path
         ) -> list[dict[str, object]]:
    running = [r["name"] for r in listed if r["status"] == "Running" and r["name"]
               in project.processes]
    probed = asyncio.run(health(project, path, running)) if running else {}
    out = []
    for row in listed:
        name = row["name"]
        spec = project.processes.get(name)
        state, note = row["status"], row.get("message", "")
        answers, said = probed.get(name, (True, "-"))
        # Not ready, or ready by its log line once and not answering now (a hot reload
        # that stopped at a syntax error keeps a log-line readiness).
        if state == "Running" and spec is not None and (row.get("is_ready") != "Ready"
                                                        or not answers):
            log = config.log_path(spec, path, runtime_dir)
            why = waiting_for_fix(Path(row.get("log") or log))
            if why:
                state, note = "Waiting", f"for a fixed source file: {why}"
        # The service's own ports (not every RTP port of a call) that are really bound.
        bound = bound_ports(row["pid"]) if row.get("pid") else []
        mine = declared_ports(spec)
        ports = [p for p in bound if int(p.split("/")[0]) in mine] or bound[:4]
        out.append({
            "name": name, "state": state, "pid": row.get("pid") or None,
            "ready": row.get("is_ready") == "Ready", "health": said,
            "ports": " ".join(ports), "uptime": row.get("system_time", "-")
            if row["status"] == "Running" else "-",
            "restarts": row.get("restarts", 0), "exit_code": row.get("exit_code", 0),
            "message": note,
        })
    return out


def table(out: list[dict[str, object]]) -> str:
    head = ["NAME", "STATE", "PID", "HEALTH", "PORTS", "UPTIME", "RESTARTS", "NOTE"]
    cells = [[str(r["name"]), str(r["state"]), str(r["pid"] or "-"), str(r["health"]),
              str(r["ports"] or "-"), str(r["uptime"]), str(r["restarts"]),
              str(r["message"] or "")] for r in out]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(head)]
    lines = ["  ".join(f"{v:<{w}}" for v, w in zip(line, widths, strict=True)).rstrip()
             for line in (head, *cells)]
    return "\n".join(lines)
