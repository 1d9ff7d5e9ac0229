"""Prometheus metrics of the core (served at /metrics by the HTTP server)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

CALLS = Counter("voice_calls_total", "Calls offered to the core", ["backend", "result"],
                registry=REGISTRY)
ACTIVE_CALLS = Gauge("voice_active_calls", "Calls in progress", registry=REGISTRY)
TURNS = Counter("voice_turns_total", "Bot turns", ["kind", "outcome"], registry=REGISTRY)
BARGE_INS = Counter("voice_barge_ins_total", "Caller interruptions of the bot", registry=REGISTRY)
PREPARED_REPLIES = Counter("voice_prepared_replies_total",
                           "Replies prepared at a caller's pause: used, or discarded",
                           ["outcome"], registry=REGISTRY)
ASR_STREAM_BREAKS = Counter(
    "voice_asr_stream_breaks_total",
    "Broken ASR streams, by what answered the caller: a held reply committed, the "
    "utterance's audio recognised again, or idle (nothing was being said)",
    ["outcome"], registry=REGISTRY)
SERVICE_ERRORS = Counter("voice_service_errors_total", "Failed calls to AI services",
                         ["service", "code"], registry=REGISTRY)
TURN_LATENCY = Histogram(
    "voice_turn_latency_seconds", "End of caller speech to the first reply RTP packet",
    buckets=_LATENCY_BUCKETS, registry=REGISTRY)
STAGE_LATENCY = Histogram(
    "voice_turn_stage_seconds", "Per-stage time from the end of caller speech",
    ["stage"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
CORE_SHARE = Histogram(
    "voice_turn_core_share_seconds", "The core's own part of a turn's latency (no AI compute)",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2), registry=REGISTRY)
RTP_PACKETS = Counter("voice_rtp_packets_total", "RTP packets by direction and fate",
                      ["direction", "fate"], registry=REGISTRY)
DTMF_DIGITS = Counter("voice_dtmf_digits_total", "DTMF digits received", registry=REGISTRY)
SIGNALLING_ERRORS = Counter("voice_signalling_rejects_total", "Calls refused with a SIP code",
                            ["code"], registry=REGISTRY)
DRAINING = Gauge("voice_draining", "1 while the core drains: new calls refused, active ones "
                 "go on", registry=REGISTRY)
DRAIN_ENDED_CALLS = Counter("voice_drain_ended_calls_total",
                            "Calls still going when a drain's time was up, ended by the core",
                            registry=REGISTRY)
TRANSFERS = Counter("voice_transfers_total", "Blind transfers: ok, or the failing SIP code",
                    ["result"], registry=REGISTRY)
OUTBOUND_CALLS = Counter("voice_outbound_calls_total", "Outbound calls placed, by outcome",
                         ["result"], registry=REGISTRY)
# Recordings, transcripts and the post-call webhook (recording/): what was kept, and what
# failed (a full disk, an unwritable directory, a webhook down or slow); a failure never
# touches the call.
POST_CALL_OUTPUTS = Counter("voice_post_call_outputs_total",
                            "Recordings, transcripts and webhook deliveries done", ["kind"],
                            registry=REGISTRY)
POST_CALL_FAILURES = Counter("voice_post_call_failures_total",
                             "Recordings, transcripts and webhook deliveries that failed",
                             ["kind"], registry=REGISTRY)
RECORDING_DROPPED_SAMPLES = Counter(
    "voice_recording_dropped_samples_total",
    "Audio samples left out of a recording past its bound", registry=REGISTRY)
