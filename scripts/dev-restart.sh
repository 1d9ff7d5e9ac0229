#!/usr/bin/env bash
# Restart one process of the development stack (or all of them), whether it runs or
# has exited, and wait until it is ready again. Other processes keep running.
#
# Usage: scripts/dev-restart.sh [--timeout SECONDS] [SERVICE...]   e.g. ... llm
#   SERVICE  a process name from process-compose.yaml (asr, llm, tts, core, opensips);
#            none: every process
#   --timeout SECONDS  how long to wait for readiness (default 600)
#
# With process-compose on PATH this is `process-compose process restart SERVICE`;
# otherwise the devstack runner's `restart`. Environment: see dev-start.sh.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$ROOT/scripts/devstack/stack.sh"

timeout=600
names=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage_from_header "$0"; exit 0 ;;
    --timeout) [ $# -ge 2 ] || die "--timeout needs a value"; timeout="$2"; shift ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) names+=("$1") ;;
  esac
  shift
done

stack_running || die "no running stack (scripts/dev-start.sh starts it)"
case "$DEV_RUNNER" in
  process-compose)
    known="$(devstack names)"
    for name in "${names[@]}"; do
      grep -qx -- "$name" <<<"$known" || die "no process $name (have: $(echo $known))"
    done
    [ ${#names[@]} -gt 0 ] || mapfile -t names <<<"$known"
    # Stops a running process (or none, when it has exited) and starts it again.
    for name in "${names[@]}"; do pc process restart "$name" >/dev/null; done
    await_ready "$timeout" "${names[@]}" || die "${names[*]} not back within ${timeout}s"
    info "restarted ${names[*]}" ;;
  devstack) devstack restart --timeout "$timeout" "${names[@]}" ;;
esac
