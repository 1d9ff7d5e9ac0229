"""OpenSIPS B2B backend: MI over mi_datagram, E_UA_SESSION events over event_datagram."""

from opensips_ai_core.signalling.opensips.backend import OpenSipsBackend
from opensips_ai_core.signalling.opensips.events import EventListener, UaSessionEvent
from opensips_ai_core.signalling.opensips.mi import MiClient, MiError, MiTimeoutError

__all__ = ["EventListener", "MiClient", "MiError", "MiTimeoutError", "OpenSipsBackend",
           "UaSessionEvent"]
