"""Probes as process-compose runs them: an exec command (exit 0 = success) or an HTTP GET."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from devstack.config import Probe


async def run_exec(command: str, cwd: Path, env: Mapping[str, str], limit_s: float
                   ) -> tuple[bool, str]:
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", command, cwd=cwd, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit_s)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        return False, f"timed out after {limit_s:.0f} s"
    text = out.decode(errors="replace").strip().splitlines()
    return proc.returncode == 0, text[-1] if text else f"exit {proc.returncode}"


async def run_http(probe: Probe, limit_s: float) -> tuple[bool, str]:
    spec = probe.http_get
    assert spec is not None
    url = f"{spec.scheme}://{spec.host}:{spec.port_number()}{spec.path}"
    try:
        limits = aiohttp.ClientTimeout(total=limit_s)
        async with aiohttp.ClientSession(timeout=limits) as session, session.get(url) as reply:
            # process-compose v1.64.1's HTTP checker (go-health) wants exactly 200.
            ok = reply.status == (spec.status_code or 200)
            said = await _said(reply)
            return ok, f"HTTP {reply.status} {said}" if said else f"HTTP {reply.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        return False, f"{url}: {type(err).__name__}"


async def _said(reply: aiohttp.ClientResponse) -> str:
    """What a health body says, for dev-status: a short text body's first line (a gRPC
    service's `SERVING` / `NOT_SERVING`) or a JSON body's "status" (the core's); else ""."""
    if reply.content_type == "text/plain":
        lines = (await reply.text(errors="replace")).strip().splitlines()
        return lines[0][:40] if lines else ""
    if reply.content_type == "application/json":
        try:
            body = await reply.json()
        except ValueError:
            return ""
        return str(body.get("status", ""))[:40] if isinstance(body, dict) else ""
    return ""


async def check(probe: Probe, cwd: Path, env: Mapping[str, str]) -> tuple[bool, str]:
    """One probe attempt: (success, short description)."""
    if probe.exec is not None:
        where = cwd / probe.exec.working_dir if probe.exec.working_dir else cwd
        return await run_exec(probe.exec.command, where, env, probe.timeout_seconds)
    if probe.http_get is not None:
        return await run_http(probe, probe.timeout_seconds)
    return True, "no probe"
