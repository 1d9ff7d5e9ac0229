"""Direct SIP: a small SIP UAS over UDP inside the core (see `backend`)."""

from opensips_ai_core.signalling.sip.transactions import SipStats, SipTimers
from opensips_ai_core.signalling.sip.uas import DirectSipBackend

__all__ = ["DirectSipBackend", "SipStats", "SipTimers"]
