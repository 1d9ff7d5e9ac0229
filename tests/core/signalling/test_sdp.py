"""SDP parsing, serialization and offer/answer with real-world offers."""

from __future__ import annotations

import pytest

from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.offer_answer import continue_session, make_offer, negotiate
from opensips_ai_core.signalling.sdp import SdpError, parse_sdp

# The offer in docs/opensips.md's events (SIPp through OpenSIPS 3.6.8).
OPENSIPS_OFFER = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\n"
)
# SIPp's built-in uac_pcap offer: PCMA and telephone-event only.
SIPP_PCAP_OFFER = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\n"
)
# A softphone (Linphone-like): Opus first, static PTs without rtpmap, video, media-level c=.
SOFTPHONE_OFFER = (
    "v=0\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\ns=Talk\nc=IN IP4 192.0.2.10\n"
    "t=0 0\na=ice-lite\nm=audio 7078 RTP/AVP 96 0 8 101\nc=IN IP4 192.0.2.20\n"
    "b=AS:64\na=rtpmap:96 opus/48000/2\na=fmtp:96 useinbandfec=1\n"
    "a=rtpmap:101 telephone-event/8000\na=ptime:20\na=rtcp-fb:* trr-int 1000\n"
    "m=video 9078 RTP/AVP 97\na=rtpmap:97 VP8/90000\n"
)


def test_parse_opensips_offer() -> None:
    sdp = parse_sdp(OPENSIPS_OFFER)
    assert sdp.origin.session_id == 53655765 and sdp.origin.address == "127.0.0.1"
    assert sdp.connection == "127.0.0.1"
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 6000, "RTP/AVP")
    assert audio.payload_types == [0, 8, 101]
    assert audio.rtpmap[101].encoding == "telephone-event" and audio.fmtp[101] == "0-11,16"
    assert sdp.direction_for(audio) == "sendrecv"


def test_round_trip_keeps_every_line() -> None:
    sdp = parse_sdp(SOFTPHONE_OFFER)
    text = sdp.to_text()
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    again = parse_sdp(text)
    assert again == sdp
    assert "a=ice-lite" in text and "b=AS:64" in text and "a=rtcp-fb:* trr-int 1000" in text


def test_negotiate_picks_first_supported_in_offer_order() -> None:
    answer, media = negotiate(parse_sdp(OPENSIPS_OFFER), "127.0.0.1", 35000)
    assert (media.codec, media.payload_type, media.dtmf_payload_type) == ("PCMU", 0, 101)
    assert (media.remote_ip, media.remote_port, media.direction) == ("127.0.0.1", 6000,
                                                                      "sendrecv")
    (audio,) = answer.media
    assert audio.port == 35000 and audio.formats == ["0", "101"]
    assert audio.fmtp[101] == "0-11,16" and answer.connection == "127.0.0.1"
    text = answer.to_text()
    assert "m=audio 35000 RTP/AVP 0 101\r\n" in text and "a=rtpmap:0 PCMU/8000" in text


def test_negotiate_pcma_only_offer() -> None:
    _, media = negotiate(parse_sdp(SIPP_PCAP_OFFER), "127.0.0.1", 35002)
    assert (media.codec, media.payload_type) == ("PCMA", 8)


def test_softphone_static_pts_media_connection_and_declined_video() -> None:
    answer, media = negotiate(parse_sdp(SOFTPHONE_OFFER), "198.51.100.1", 35004,
                              session_version=3, session_id=77)
    # Opus is skipped; PT 0 has no rtpmap (static); the media-level c= wins.
    assert (media.codec, media.payload_type, media.remote_ip) == ("PCMU", 0, "192.0.2.20")
    assert media.dtmf_payload_type == 101
    audio, video = answer.media
    assert video.port == 0 and video.media == "video"  # declined, m-line count kept
    assert audio.fmtp[101] == "0-15"  # offered without fmtp: the RFC 4733 default
    assert (answer.origin.session_id, answer.origin.session_version) == (77, 3)


def test_negotiate_supported_order_is_the_offers() -> None:
    _, media = negotiate(parse_sdp(OPENSIPS_OFFER), "127.0.0.1", 35000, supported=("PCMA",))
    assert media.codec == "PCMA"


@pytest.mark.parametrize(("offered", "answered"), [
    ("sendonly", "recvonly"), ("recvonly", "sendonly"), ("inactive", "inactive"),
    ("sendrecv", "sendrecv"),
])
def test_answer_direction_mirrors_offer(offered: str, answered: str) -> None:
    answer, media = negotiate(parse_sdp(OPENSIPS_OFFER + f"a={offered}\r\n"), "127.0.0.1", 1)
    assert media.direction == answered and answer.media[0].direction == answered


def test_session_level_direction_applies() -> None:
    text = OPENSIPS_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n")
    _, media = negotiate(parse_sdp(text), "127.0.0.1", 1)
    assert media.direction == "recvonly"


@pytest.mark.parametrize("offer", [
    OPENSIPS_OFFER.replace("m=audio 6000", "m=audio 0"),                     # port 0
    OPENSIPS_OFFER.replace("m=audio", "m=video"),                            # no audio
    OPENSIPS_OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 18 101"),             # no common codec
    OPENSIPS_OFFER.replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU/16000")
    .replace("RTP/AVP 0 8 101", "RTP/AVP 0 101"),                            # wrong clock rate
    OPENSIPS_OFFER.replace("c=IN IP4 127.0.0.1\r\n", ""),                    # no address
])
def test_unacceptable_offers_are_488(offer: str) -> None:
    with pytest.raises(SignallingError) as error:
        negotiate(parse_sdp(offer), "127.0.0.1", 1)
    assert error.value.code == 488


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "empty"),
    ("o=x 1 1 IN IP4 1.2.3.4\r\n", "v=0"),
    ("v=0\r\n", "missing o="),
    ("v=0\r\no=x 1 IN IP4 1.2.3.4\r\n", "o= line"),
    ("v=0\r\no=x 1 1 IN IP4 h\r\nc=IN IP4\r\n", "c= line"),
    ("v=0\r\no=x 1 1 IN IP4 h\r\nm=audio abc RTP/AVP 0\r\n", "media port"),
    ("v=0\r\no=x 1 1 IN IP4 h\r\nm=audio 70000 RTP/AVP 0\r\n", "out of range"),
    ("v=0\r\no=x 1 1 IN IP4 h\r\nm=audio 1 RTP/AVP\r\n", "m= line"),
    ("v=0\r\no=x 1 1 IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n", "rtpmap"),
    ("v=0\r\no=x 1 1 IN IP4 h\r\ngarbage\r\n", "line 3"),
    ("v=0\r\n" + "a=x\r\n" * 5000, "limit"),
])
def test_malformed_sdp_raises_clear_error(text: str, fragment: str) -> None:
    with pytest.raises(SdpError, match=fragment):
        parse_sdp(text)


def test_continue_session_keeps_origin_and_bumps_version() -> None:
    first, _ = negotiate(parse_sdp(OPENSIPS_OFFER), "127.0.0.1", 1, session_id=10)
    later, _ = negotiate(parse_sdp(OPENSIPS_OFFER), "127.0.0.1", 1, session_id=99)
    followed = continue_session(first, later)
    assert (followed.origin.session_id, followed.origin.session_version) == (10, 2)
    assert continue_session(None, later) is later
    assert later.origin.session_id == 99  # the handler's object is not modified


# ---- issue 16: inputs that broke the parser or got a wrong answer -------------------------

@pytest.mark.parametrize("bad_line", [
    "m=audio 6000 RTP/AVP 300",                          # payload types are 7 bits
    "m=audio 6000 RTP/AVP 0\r\na=rtpmap:300 PCMU/8000",
    "m=audio 6000 RTP/AVP 0\r\na=rtpmap:\u00b2 PCMU/8000",  # isdigit() but not int()
    "m=audio 6000 RTP/AVP \u00b2",
    "m=audio 6000 RTP/AVP 0\r\na=fmtp:200 0-15",
    "m=audio \u0661\u0662 RTP/AVP 0",                     # Arabic-Indic digits: int() takes them
    "m=audio 6000 RTP/AVP 0\r\na=ptime:" + "9" * 5000,   # over int()'s 4300 digits
    "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/" + "8" * 5000,
])
def test_bad_numbers_are_sdp_errors(bad_line: str) -> None:
    text = OPENSIPS_OFFER.split("m=audio", maxsplit=1)[0] + bad_line + "\r\n"
    with pytest.raises(SdpError):
        parse_sdp(text)


def test_origin_with_5000_digits_is_an_sdp_error() -> None:
    with pytest.raises(SdpError, match="session id"):
        parse_sdp(OPENSIPS_OFFER.replace("53655765", "1" * 5000))


@pytest.mark.parametrize(("change", "reason"), [
    (("RTP/AVP", "RTP/SAVP"), "SRTP"),
    (("c=IN IP4 127.0.0.1", "c=IN IP6 ::1"), "connection address"),
    (("c=IN IP4 127.0.0.1", "c=IN IP4 media.example.com"), "connection address"),
])
def test_offers_the_core_cannot_carry_get_488(change: tuple[str, str], reason: str) -> None:
    offer = parse_sdp(OPENSIPS_OFFER.replace(*change)
                      + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abcd\r\n")
    with pytest.raises(SignallingError) as refused:
        negotiate(offer, "127.0.0.1", 35000)
    assert refused.value.code == 488 and reason in refused.value.reason


def test_plain_rtp_beside_srtp_is_taken() -> None:
    text = OPENSIPS_OFFER + "m=audio 6002 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 x\r\n"
    answer, media = negotiate(parse_sdp(text), "127.0.0.1", 35000)
    assert media.remote_port == 6000 and [m.port for m in answer.media] == [35000, 0]


def test_make_offer_is_answerable_by_negotiate() -> None:
    offer = make_offer("127.0.0.1", 35002, session_id=7)
    again = parse_sdp(offer.to_text())
    assert again.media[0].formats == ["0", "8", "101"] and again.media[0].port == 35002
    _answer, media = negotiate(again, "127.0.0.1", 6000)
    assert (media.codec, media.dtmf_payload_type, media.remote_port) == ("PCMU", 101, 35002)
