"""Prometheus metrics of the OpenSIPS backend (on the core's registry, served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from opensips_ai_core.metrics import REGISTRY

SUBSCRIBED = Gauge(
    "voice_opensips_subscribed",
    "1 while the running OpenSIPS holds the core's E_UA_SESSION subscription, else 0",
    registry=REGISTRY)
RESTARTS = Counter(
    "voice_opensips_restarts_total",
    "OpenSIPS restarts noticed (MI uptime answered with a new 'Up since')",
    registry=REGISTRY)
GATE_LAPSES = Counter(
    "voice_opensips_gate_lapses_total",
    "Times the script closed the gate because this core renewed its lease too late (its "
    "event loop stalled, or MI did not answer); not OpenSIPS restarts",
    registry=REGISTRY)
RECONCILED_CALLS = Counter(
    "voice_opensips_reconciled_calls_total",
    "Calls released locally because OpenSIPS no longer holds their session (a restart, "
    "its ua_default_timeout, a lost event)",
    registry=REGISTRY)
CANCEL_AFTER_ANSWER = Counter(
    "voice_opensips_cancel_after_answer_total",
    "CANCELs that crossed the core's 200 OK: the call was ended with a BYE",
    registry=REGISTRY)
ORPHANS_ENDED = Counter(
    "voice_opensips_orphaned_sessions_ended_total",
    "Sessions OpenSIPS held for no call of this core (a previous core's, or a caller "
    "nobody was subscribed for), ended after a (re)subscription",
    registry=REGISTRY)
