#!/usr/bin/env bash
# Run the test suite: set up .venv if needed, lint with ruff, then pytest.
#
# Usage: scripts/dev-test.sh [pytest arguments...]
#   e.g. scripts/dev-test.sh tests/unit -k rtp -x
#
# Environment: SKIP_LINT=1 skips ruff; SKIP_SETUP=1 skips the set-up check.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

case "${1:-}" in
  -h|--help) usage_from_header "$0"; exit 0 ;;
esac

cd "$ROOT"
[ "${SKIP_SETUP:-0}" = 1 ] || "$ROOT/scripts/setup.sh"

if [ "${SKIP_LINT:-0}" != 1 ]; then
  info "ruff check"
  "$VENV/bin/ruff" check .
fi

info "pytest $*"
set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
# pytest's 5 means "no tests collected": a selection that matched nothing is an error here too.
exit "$rc"
