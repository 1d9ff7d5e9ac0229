"""RTP media for the core: G.711, RTP packets, DTMF, the pacer, per-call sessions.

Import from the modules themselves (`opensips_ai_core.media.rtp` ...): this package
re-exports nothing.
"""
