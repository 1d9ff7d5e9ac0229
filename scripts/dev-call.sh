#!/usr/bin/env bash
# Place a real test call against the running stack: speak the text as the caller
# (made by the TTS service); print per turn what the core's recognizer heard and the
# reply the bot spoke (the core's transcript), then the turn latency.
#
# The caller's phone supports blind transfer (REFER): asked for a person, the bot
# transfers the call to the dev stack's mock adviser (sip:advisers@127.0.0.1:5090), and
# this prints the REFER, the 202, the NOTIFYs, the new INVITE, the bot's BYE and what
# the adviser said (transcribed by ASR). The demo model answers "talk to a person" with
# its transfer line; for SmolLM2, the default, the LLM service calls `transfer` by meaning.
#
# Usage: scripts/dev-call.sh [options] "text" ["more text" ...]
#   e.g. scripts/dev-call.sh "what is my balance" "thank you goodbye"
#        scripts/dev-call.sh "i want to talk to a person"        # a transfer
#        scripts/dev-call.sh --dtmf 12345678# --dtmf-after 1 "what is my balance"
# Options: --sip HOST:PORT (the core's direct SIP, default 127.0.0.1:5080),
#          --asr / --tts HOST:PORT, --http HOST:PORT (the core's HTTP API, default
#          127.0.0.1:8088), --check-audio (also transcribe the bot's audio by ASR),
#          --refuse-transfer (answer the bot's REFER 405, as a phone without transfer),
#          --ring-timeout SECONDS (how long the transfer target may ring, default 20),
#          --dtmf DIGITS (key them in, RFC 4733, e.g. 12345678#) and --dtmf-after N
#          (after the reply to the N-th text; default 0, after the greeting),
#          --codec PCMU|PCMA, --timeout SECONDS.
# Start the stack first: scripts/dev-start.sh.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

case "${1:-}" in
  -h|--help|"") usage_from_header "$0"; [ -n "${1:-}" ] && exit 0 || exit 2 ;;
esac
exec "$ROOT/scripts/devstack/pyrun" -m opensips_ai_core.devtools.dial "$@"
