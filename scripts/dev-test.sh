#!/usr/bin/env bash
# Run the test suite: set up .venv if needed, lint with ruff, type-check with mypy, then
# pytest. The whole suite is the default (real models, real service processes, SIPp
# calls: minutes).
#
# Usage: scripts/dev-test.sh [--fast] [pytest arguments...]
#   --fast   only what needs no model and no service process (pytest -m "not slow and
#            not e2e"; tests/conftest.py marks the rest `slow`), in FAST_WORKERS (4)
#            pytest-xdist workers, as most of it waits on timers: for the edit loop
#   e.g. scripts/dev-test.sh tests/core/media -k rtp -x
#        scripts/dev-test.sh --fast tests/core
#
# Environment: SKIP_LINT=1 skips ruff; SKIP_TYPECHECK=1 skips mypy (configured in
# pyproject.toml); SKIP_SETUP=1 skips the set-up check; FAST_WORKERS=0 runs --fast in one
# process.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

marks=()
workers=()
case "${1:-}" in
  -h|--help) usage_from_header "$0"; exit 0 ;;
  --fast)
    marks=(-m "not slow and not e2e")
    # The parsers' fuzzing: 100 examples here, 600 (its default) in the full suite.
    export FUZZ_EXAMPLES="${FUZZ_EXAMPLES:-100}"
    # Tests go to whichever worker is free: no fast test shares a module-scoped fixture.
    case "${FAST_WORKERS:-4}" in
      0) ;;
      *[!0-9]*|"") die "FAST_WORKERS must be a number of workers (0: none), not: $FAST_WORKERS" ;;
      *) workers=(-n "${FAST_WORKERS:-4}" --dist load) ;;
    esac
    shift ;;
esac

cd "$ROOT"
[ "${SKIP_SETUP:-0}" = 1 ] || "$ROOT/scripts/setup.sh"

if [ "${SKIP_LINT:-0}" != 1 ]; then
  info "ruff check"
  "$VENV/bin/ruff" check .
fi

if [ "${SKIP_TYPECHECK:-0}" != 1 ]; then
  info "mypy"
  "$VENV/bin/mypy"
fi

info "pytest ${marks[*]} ${workers[*]} $*"
set +e
"$VENV/bin/python" -m pytest "${marks[@]}" "${workers[@]}" "$@"
rc=$?
set -e
# pytest's 5 means "no tests collected": a selection that matched nothing is an error here too.
exit "$rc"
