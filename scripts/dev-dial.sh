#!/usr/bin/env bash
# Place an outbound call from the running core (its HTTP API, POST /calls), follow it
# until it is answered or fails, and hang up after a while.
#
# Usage: scripts/dev-dial.sh [options] sip:USER@HOST:PORT
#        scripts/dev-dial.sh --sipp          (a SIPp UAS that answers, on a free port)
# Options: --api HOST:PORT (the core's HTTP, default 127.0.0.1:8088), --from URI,
#          --caller-id NAME, --greeting TEXT, --max-ring SECONDS (then CANCEL),
#          --hangup-after SECONDS. CORE_API_TOKEN is sent as the bearer token if set.
# Start the stack first: scripts/dev-start.sh.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

case "${1:-}" in
  -h|--help|"") usage_from_header "$0"; [ -n "${1:-}" ] && exit 0 || exit 2 ;;
esac
exec "$ROOT/scripts/devstack/pyrun" -m opensips_ai_core.devtools.outbound_dial "$@"
