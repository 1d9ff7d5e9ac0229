#!/usr/bin/env bash
# Debug one service: a shell or a command in that service's environment (variables and
# working directory from process-compose.yaml), or the running process's Python stacks.
#
# Usage: scripts/dev-debug.sh SERVICE [COMMAND [ARGS...]]
#        scripts/dev-debug.sh SERVICE --stacks
#   (no COMMAND)  an interactive shell ($SHELL) with the service's environment
#   python ...    the project's Python (.venv) where the service's modules import;
#                 `python` alone is a REPL
#   --stacks      dump the running process's Python thread stacks (py-spy dump; needs
#                 permission to ptrace it: same user, and ptrace allowed)
#
# Environment: DEV_STACK_FILE, RUNTIME_DIR (see dev-start.sh).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$ROOT/scripts/devstack/stack.sh"

case "${1:-}" in
  -h|--help|"") usage_from_header "$0"; [ -n "${1:-}" ] && exit 0; exit 2 ;;
esac
service="$1"; shift

if [ "${1:-}" = "--stacks" ]; then
  pid="$(devstack status --json | "$ROOT/scripts/devstack/pyrun" -c '
import json, sys
rows = {r["name"]: r for r in json.load(sys.stdin)["processes"]}
row = rows.get(sys.argv[1])
print(row["pid"] if row and row["pid"] else "")' "$service")" || true
  [ -n "$pid" ] || die "$service is not running (scripts/dev-status.sh)"
  spy="$VENV/bin/py-spy"
  [ -x "$spy" ] || spy="$(command -v py-spy)" || die "py-spy not found: scripts/setup.sh installs it"
  # The command may be a wrapper (bash, pyrun): dump every Python process in its process
  # group (the supervisor's session holds the whole stack).
  status=0
  members="$(ps -e -o pid= -o pgid= | awk -v g="$pid" '$2 == g { print $1 }')"
  for p in ${members:-$pid}; do
    if ps -o comm= -p "$p" | grep -qi python; then
      echo "== $service: PID $p"
      "$spy" dump --pid "$p" || status=$?
    fi
  done
  exit "$status"
fi

if [ "${1:-}" = "python" ]; then
  shift
  set -- "$ROOT/scripts/devstack/pyrun" "$@"
fi
devstack exec "$service" -- "$@"
