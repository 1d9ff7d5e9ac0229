"""The offer/answer step (RFC 3264) for G.711: answer an offer, make the core's own offer,
keep a dialog's later answers one session.

`negotiate` refuses with 488 what the core cannot carry: no plain RTP/AVP(F) audio
(SRTP, RTP/SAVP with a=crypto, is not supported), a connection address that is a
hostname (never resolved: a DNS lookup has no place on the media path) or of the
other IP family than the core's RTP address.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, replace

from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.sdp import (
    STATIC_PAYLOAD_TYPES,
    TELEPHONE_EVENT,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
    addr_type,
)

# What the answerer says for each offered direction (RFC 3264 section 6.1).
ANSWER_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}
# The media transports the core speaks: plain RTP (AVPF is AVP plus feedback it may ignore).
PLAIN_RTP = ("RTP/AVP", "RTP/AVPF")
DTMF_PAYLOAD_TYPE = 101  # what the core offers for telephone-event (a late offer)


@dataclass(frozen=True)
class NegotiatedMedia:
    """What the media layer needs after offer/answer."""

    remote_ip: str
    remote_port: int
    codec: str                      # "PCMU" or "PCMA"
    payload_type: int
    dtmf_payload_type: int | None
    direction: str                  # the answer's direction, i.e. ours: recvonly = we only receive
    ptime: int = 20


def _rejected_copy(media: MediaDescription) -> MediaDescription:
    # RFC 3264 6: a declined stream is answered with port 0 and at least one format.
    return MediaDescription(media.media, 0, media.proto, media.formats[:1])


def negotiate(
    offer: SessionDescription,
    local_ip: str,
    local_port: int,
    supported: tuple[str, ...] = ("PCMU", "PCMA"),
    session_version: int = 1,
    *,
    session_id: int | None = None,
    ptime: int = 20,
) -> tuple[SessionDescription, NegotiatedMedia]:
    """Answer an offer: the first supported codec in the offer's order, DTMF echoed.

    Raises SignallingError(488) when there is no usable audio stream (plain RTP:
    RTP/SAVP is refused), no usable address (see the module docstring) or no
    common codec. The first such audio m-line is accepted; any other m-line is
    declined with port 0, as RFC 3264 requires.
    """
    wanted = {name.upper() for name in supported}
    chosen_index: int | None = None
    for index, media in enumerate(offer.media):
        if media.media == "audio" and media.port != 0 and media.proto.upper() in PLAIN_RTP:
            chosen_index = index
            break
    if chosen_index is None:
        secure = any(m.media == "audio" and "SAVP" in m.proto.upper() for m in offer.media)
        raise SignallingError(488, "Not Acceptable Here (SRTP is not supported)" if secure
                              else "Not Acceptable Here")
    audio = offer.media[chosen_index]
    remote_ip = offer.connection_for(audio)
    if not remote_ip or not _same_family_address(remote_ip, local_ip):
        raise SignallingError(488, "Not Acceptable Here (connection address)")

    codec_pt: int | None = None
    codec: RtpMap | None = None
    dtmf_pt: int | None = None
    for pt in audio.payload_types:
        mapping = audio.codec_of(pt)
        if mapping is None:
            continue
        name = mapping.encoding.upper()
        if codec_pt is None and name in wanted and mapping.clock_rate == 8000:
            codec_pt, codec = pt, mapping
        elif (dtmf_pt is None and mapping.encoding.lower() == TELEPHONE_EVENT
              and mapping.clock_rate == 8000):
            dtmf_pt = pt
    if codec_pt is None or codec is None:
        raise SignallingError(488, "Not Acceptable Here")

    direction = ANSWER_DIRECTION[offer.direction_for(audio)]
    formats = [str(codec_pt)] + ([str(dtmf_pt)] if dtmf_pt is not None else [])
    answer_audio = MediaDescription(
        "audio", local_port, audio.proto, formats,
        rtpmap={codec_pt: RtpMap(codec.encoding.upper(), 8000)},
        ptime=ptime, direction=direction,
    )
    if dtmf_pt is not None:
        answer_audio.rtpmap[dtmf_pt] = RtpMap(TELEPHONE_EVENT, 8000)
        answer_audio.fmtp[dtmf_pt] = audio.fmtp.get(dtmf_pt, "0-15")
    answer_media = [answer_audio if i == chosen_index else _rejected_copy(m)
                    for i, m in enumerate(offer.media)]
    answer = SessionDescription(
        origin=Origin("opensips-ai", session_id if session_id is not None else int(time.time()),
                      session_version, "IN", addr_type(local_ip), local_ip),
        session_name="opensips-ai-voice",
        connection=local_ip,
        media=answer_media,
    )
    negotiated = NegotiatedMedia(remote_ip, audio.port, codec.encoding.upper(), codec_pt,
                                 dtmf_pt, direction, ptime)
    return answer, negotiated


def _same_family_address(address: str, local_ip: str) -> bool:
    """An IP literal (not a hostname) of the local address's family."""
    try:
        remote = ipaddress.ip_address(address)
    except ValueError:
        return False
    try:
        return remote.version == ipaddress.ip_address(local_ip).version
    except ValueError:
        return True  # a local hostname cannot be checked: do not refuse for it


def make_offer(local_ip: str, local_port: int, session_version: int = 1,
               supported: tuple[str, ...] = ("PCMU", "PCMA"), *,
               session_id: int | None = None, ptime: int = 20) -> SessionDescription:
    """The core's own offer (for an INVITE without SDP, RFC 3261 13.2.1): G.711 and DTMF."""
    static = {name: pt for pt, (name, _rate) in STATIC_PAYLOAD_TYPES.items()}
    pts = [static[name.upper()] for name in supported]
    audio = MediaDescription(
        "audio", local_port, "RTP/AVP", [*map(str, pts), str(DTMF_PAYLOAD_TYPE)],
        rtpmap={**{pt: RtpMap(STATIC_PAYLOAD_TYPES[pt][0], 8000) for pt in pts},
                DTMF_PAYLOAD_TYPE: RtpMap(TELEPHONE_EVENT, 8000)},
        fmtp={DTMF_PAYLOAD_TYPE: "0-15"}, ptime=ptime, direction="sendrecv")
    return SessionDescription(
        origin=Origin("opensips-ai", session_id if session_id is not None else int(time.time()),
                      session_version, "IN", addr_type(local_ip), local_ip),
        session_name="opensips-ai-voice", connection=local_ip, media=[audio])


def continue_session(previous: SessionDescription | None,
                     answer: SessionDescription) -> SessionDescription:
    """A later answer in the same dialog: keep the first answer's o= user and session id
    and make the version grow (RFC 3264 section 8), whatever the handler put there."""
    if previous is None:
        return answer
    origin = replace(answer.origin, username=previous.origin.username,
                     session_id=previous.origin.session_id,
                     session_version=max(answer.origin.session_version,
                                         previous.origin.session_version + 1))
    return replace(answer, origin=origin)
