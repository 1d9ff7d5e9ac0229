"""RTP media for the core: G.711, resampling, RTP packets, DTMF, the pacer, per-call sessions."""

from opensips_ai_core.media.dtmf import DtmfDetector, DtmfParseError, TelephoneEvent
from opensips_ai_core.media.g711 import (
    Codec,
    alaw_decode,
    alaw_encode,
    codec_by_name,
    ulaw_decode,
    ulaw_encode,
)
from opensips_ai_core.media.pacer import RtpPacer
from opensips_ai_core.media.ports import RtpPortAllocator, RtpPortsExhaustedError
from opensips_ai_core.media.resample import Resampler, resample
from opensips_ai_core.media.rtp import RtpPacket, RtpParseError
from opensips_ai_core.media.session import RtpSession, RtpStats

__all__ = [
    "Codec",
    "DtmfDetector",
    "DtmfParseError",
    "Resampler",
    "RtpPacer",
    "RtpPacket",
    "RtpParseError",
    "RtpPortAllocator",
    "RtpPortsExhaustedError",
    "RtpSession",
    "RtpStats",
    "TelephoneEvent",
    "alaw_decode",
    "alaw_encode",
    "codec_by_name",
    "resample",
    "ulaw_decode",
    "ulaw_encode",
]
