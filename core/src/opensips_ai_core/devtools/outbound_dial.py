"""`python -m opensips_ai_core.devtools.outbound_dial sip:bob@127.0.0.1:5090`: one outbound call.

Places the call through the running core's HTTP API (POST /calls), follows its state
(GET /calls/{id}) until it is answered, fails or ends, and hangs up after
`--hangup-after` seconds of conversation (DELETE /calls/{id}). With `--sipp` it first
starts a SIPp UAS on a free 127.0.0.1 port that answers (the callee_answers scenario
of the tests) and dials that. Used by scripts/dev-dial.sh.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SIPP_SCENARIO = (Path(__file__).resolve().parents[4] / "tests" / "data" / "sipp"
                 / "callee_answers.xml")
FINAL_STATES = ("failed", "ended")


class ApiError(Exception):
    pass


def api(method: str, url: str, token: str | None, body: dict[str, Any] | None = None
        ) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace").strip()
        raise ApiError(f"{method} {url}: {error.code} {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        raise ApiError(f"{method} {url}: {error} (is the stack running? "
                       f"scripts/dev-start.sh)") from None


def start_sipp_callee() -> tuple[subprocess.Popen[bytes], str]:
    if shutil.which("sipp") is None:
        raise ApiError("--sipp needs sipp on the PATH")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        ["sipp", "-sf", str(SIPP_SCENARIO), "-m", "1", "-i", "127.0.0.1", "-p", str(port),
         "-timeout", "120s", "-nostdin"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.3)  # let it bind
    return proc, f"sip:bob@127.0.0.1:{port}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def dial(args: argparse.Namespace) -> int:
    base = f"http://{args.api}"
    body: dict[str, Any] = {"to": args.to, "max_ring_s": args.max_ring}
    if args.from_uri:
        body["from"] = args.from_uri
    if args.caller_id:
        body["caller_id"] = args.caller_id
    if args.greeting:
        body["bot"] = {"greeting": args.greeting}
    placed = api("POST", f"{base}/calls", args.token, body)
    call_id = placed["call_id"]
    print(f"placed {call_id} to {args.to}")
    state, answered_at = placed["state"], None
    deadline = time.monotonic() + args.max_ring + args.hangup_after + 30
    while time.monotonic() < deadline:
        record = api("GET", f"{base}/calls/{call_id}", args.token)
        if record["state"] != state:
            state = record["state"]
            print(f"  {state}" + (f" ({record['code']} {record['reason']})"
                                  if record.get("code") else ""))
        if state in FINAL_STATES:
            return 0 if state == "ended" else 1
        if state == "answered":
            answered_at = answered_at or time.monotonic()
            if time.monotonic() - answered_at >= args.hangup_after:
                record = api("DELETE", f"{base}/calls/{call_id}", args.token)
                print(f"  hung up: {record['state']}")
                return 0
        time.sleep(0.2)
    print("  gave up waiting", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dev-dial.sh", description=__doc__)
    parser.add_argument("to", nargs="?", help="the callee's SIP URI (omit with --sipp)")
    parser.add_argument("--sipp", action="store_true",
                        help="start a SIPp UAS that answers and dial it")
    parser.add_argument("--api", default="127.0.0.1:8088", help="the core's HTTP HOST:PORT")
    parser.add_argument("--from", dest="from_uri", help="our From URI")
    parser.add_argument("--caller-id", help="the From display name")
    parser.add_argument("--greeting", help="override the bot's greeting for this call")
    parser.add_argument("--max-ring", type=float, default=30.0, help="seconds before CANCEL")
    parser.add_argument("--hangup-after", type=float, default=10.0,
                        help="seconds of conversation before the hang-up")
    args = parser.parse_args(argv)
    args.token = os.environ.get("CORE_API_TOKEN")
    if not args.to and not args.sipp:
        parser.error("give a SIP URI to dial, or --sipp")
    proc = None
    try:
        if args.sipp:
            proc, args.to = start_sipp_callee()
        return dial(args)
    except ApiError as error:
        print(f"dev-dial: {error}", file=sys.stderr)
        return 1
    finally:
        if proc is not None:
            stop(proc)


if __name__ == "__main__":
    sys.exit(main())
