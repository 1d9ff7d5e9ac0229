#!/usr/bin/env bash
# Restart one process of the development stack (or all of them) and wait until it is
# ready again. Other processes keep running.
#
# Usage: scripts/dev-restart.sh [SERVICE...]     e.g. scripts/dev-restart.sh llm
#   SERVICE  a process name from process-compose.yaml (asr, llm, tts, core, opensips);
#            none: every process
#
# With process-compose on PATH this is `process-compose process restart SERVICE`;
# otherwise the devstack runner's `restart`. Environment: see dev-start.sh.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$ROOT/scripts/devstack/stack.sh"

case "${1:-}" in
  -h|--help) usage_from_header "$0"; exit 0 ;;
esac

case "$(runner)" in
  process-compose)
    names=("$@")
    [ ${#names[@]} -gt 0 ] || mapfile -t names < <(devstack names)
    for name in "${names[@]}"; do pc process restart "$name"; done ;;
  *) devstack restart "$@" ;;
esac
