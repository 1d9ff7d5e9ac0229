#!/usr/bin/env python3
"""A stand-in for the `process-compose` v1.64.1 *client*, for the dev scripts' tests.

process-compose cannot be installed where these tests run, so this double answers the
client commands the scripts use exactly as the real v1.64.1 client prints them (checked
against its source: src/cmd/list.go, src/types/process.go, src/cmd/restart.go):

- `process list -o json`: a JSON array (json.MarshalIndent with a tab), one object
  per process with the 15 fields of types.ProcessState, in name order; with no server
  listening the real client exits 1 with a log line on stderr, and right after
  `up --detached` it was seen to print nothing at all;
- `process restart NAME`: "Process NAME restarted";
- `up ... --detached`, `down`: accepted and recorded.

What the "server" answers is a script: $FAKE_PC_DIR/scenario.json holds
{"list": [answer, ...], "after_restart": [answer, ...]} where each answer is a list of
process rows, or "" for the empty output, or null for "no server". Each `process list`
call takes the next answer (the last one repeats). Every call is appended to
$FAKE_PC_DIR/calls as one line of its arguments.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

FIELDS = ("name", "namespace", "status", "system_time", "age", "is_ready",
          "has_ready_probe", "restarts", "exit_code", "pid", "is_elevated",
          "password_provided", "mem", "cpu", "is_running")


def main(argv: list[str]) -> int:
    home = Path(os.environ["FAKE_PC_DIR"])
    with open(home / "calls", "a") as calls:
        calls.write(" ".join(argv) + "\n")
    scenario = json.loads((home / "scenario.json").read_text())
    state_file = home / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {
        "up": False, "sequence": "list", "index": 0}
    words = [a for a in argv if not a.startswith("-")]
    if words[:1] == ["up"]:
        state.update(up=True, sequence="list", index=0)
        print("Starting Process Compose in detached mode. Use 'process-compose attach' to "
              "connect to it or 'process-compose down' to stop it")
    elif words[:1] == ["down"]:
        state["up"] = False
    elif words[:2] == ["process", "restart"]:
        if not state["up"]:
            return no_server("failed to restart process " + words[2])
        state.update(sequence="after_restart", index=0)
        print(f"Process {words[2]} restarted")
    elif words[:2] == ["process", "list"]:
        if not state["up"]:
            return no_server("failed to list processes")
        answers = scenario[state["sequence"]]
        answer = answers[min(state["index"], len(answers) - 1)]
        state["index"] += 1
        state_file.write_text(json.dumps(state))
        if answer is None:
            return no_server("failed to list processes")
        if answer != "":
            rows = sorted(answer, key=lambda r: r["name"])
            assert all(tuple(r) == FIELDS for r in rows), "rows must have the real fields"
            sys.stdout.write(json.dumps(rows, indent="\t"))
        return 0
    else:
        print(f"fake process-compose: unsupported {argv}", file=sys.stderr)
        return 2
    state_file.write_text(json.dumps(state))
    return 0


def no_server(what: str) -> int:
    print(f"FTL {what} error=\"Get \\\"http://unix/processes\\\": dial unix: connect: no "
          f"such file or directory\"", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
