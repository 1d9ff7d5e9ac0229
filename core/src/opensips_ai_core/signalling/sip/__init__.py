"""Direct SIP: a small SIP UAS over UDP inside the core (see `backend`)."""

from opensips_ai_core.signalling.sip.backend import DirectSipBackend
from opensips_ai_core.signalling.sip.transactions import SipStats, SipTimers

__all__ = ["DirectSipBackend", "SipStats", "SipTimers"]
