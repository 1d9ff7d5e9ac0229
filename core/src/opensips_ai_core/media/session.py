"""One call's RTP: a UDP endpoint on an allocated port, the outbound pacer, inbound handling.

    session = await RtpSession.open("127.0.0.1", ports, on_audio=asr_feed, on_dtmf=on_digit)
    session.configure(remote_ip, remote_port, "PCMU", payload_type=0, dtmf_payload_type=101)
    session.enqueue(greeting_pcm16_8k)
    await session.wait_idle()
    await session.close()

Inbound packets go through latching, which prefers the SDP address: RTP from
the address the SDP named is always accepted and latched to (replies go there).
Behind NAT the caller's packets come from another address (symmetric RTP); such
a source is latched to only while the SDP address has sent nothing, and only
after it proved itself: NAT_PROBATION_PACKETS packets in sequence, of one SSRC,
with a negotiated payload type. Once latched, packets from any other address are
dropped (a re-INVITE with a new address starts over). A stranger's few packets
cannot take the call's audio. Nothing a peer sends can raise out of the protocol:
malformed packets, strangers, unknown payload types and late duplicates are
counted in `stats` and logged once per call.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from opensips_ai_core.media.dtmf import DtmfDetector, DtmfParseError
from opensips_ai_core.media.g711 import Codec, codec_by_name
from opensips_ai_core.media.pacer import RtpPacer
from opensips_ai_core.media.ports import RtpPortAllocator
from opensips_ai_core.media.rtp import RtpPacket, RtpParseError, seq_diff

log = logging.getLogger(__name__)

Address = tuple[str, int]
# A packet this far behind the newest one is a late duplicate; further back is a restart.
_LATE_WINDOW = 100
# In-sequence packets of one SSRC a source other than the SDP address must send before
# the call latches to it (80 ms of audio at 20 ms packets, lost to ASR once per NAT call).
NAT_PROBATION_PACKETS = 4
# Sources on probation at once; more (a spray of strangers) start the count afresh.
_MAX_CANDIDATES = 8


@dataclass
class RtpStats:
    packets_in: int = 0            # accepted packets (audio + DTMF) from the latched address
    packets_out: int = 0
    bytes_in: int = 0              # bytes of the accepted packets
    bytes_out: int = 0
    dropped_strangers: int = 0     # valid RTP from an address other than the latched one
    malformed: int = 0             # not RTP at all, or truncated
    wrong_payload_type: int = 0    # a payload type that was not negotiated
    late: int = 0                  # duplicates or packets behind the newest one
    dtmf_events: int = 0           # digits reported (each key press once)
    latched_address: Address | None = None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, session: RtpSession) -> None:
        self._session = session

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            self._session._on_datagram(data, (addr[0], addr[1]))
        except Exception:  # never let a peer's packet kill the endpoint (nor flood the log)
            self._session._log_once_exc("inbound", "RTP inbound handling failed")

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the far end is not listening (yet). Not fatal.
        self._session._note_socket_error(exc)


class RtpSession:
    """RTP for one call. Create with `await RtpSession.open(...)`."""

    def __init__(
        self,
        ports: RtpPortAllocator,
        sock: socket.socket,
        on_audio: Callable[[npt.NDArray[np.int16]], None],
        on_dtmf: Callable[[str], None] | None,
        on_talkspurt_start: Callable[[], None] | None,
    ) -> None:
        self._ports = ports
        self._sock = sock
        self.local_ip, self.local_port = sock.getsockname()[:2]
        self._on_audio = on_audio
        self._on_dtmf = on_dtmf
        self._transport: asyncio.DatagramTransport | None = None
        self.stats = RtpStats()
        self.codec: Codec | None = None
        self.payload_type: int | None = None
        self.dtmf_payload_type: int | None = None
        self.remote: Address | None = None
        self._dtmf = DtmfDetector()
        self._last_seq: int | None = None
        self._last_ssrc: int | None = None
        # Sources on NAT probation: address → (SSRC, last sequence number, packets in a row).
        self._candidates: dict[Address, tuple[int, int, int]] = {}
        self._logged: set[str] = set()
        self._closed = False
        # The call's recording (recording/audio.py): each decoded caller frame, with its
        # RTP timestamp and SSRC.
        self.inbound_tap: Callable[[int, int, npt.NDArray[np.int16]], None] | None = None
        # The pacer's codec is replaced by configure(); until then it only queues.
        self.pacer = RtpPacer(codec_by_name("PCMU"), self._send,
                              on_talkspurt_start=on_talkspurt_start)

    @classmethod
    async def open(
        cls,
        local_ip: str,
        ports: RtpPortAllocator,
        on_audio: Callable[[npt.NDArray[np.int16]], None],
        on_dtmf: Callable[[str], None] | None = None,
        on_talkspurt_start: Callable[[], None] | None = None,
    ) -> RtpSession:
        sock = ports.allocate(local_ip)
        session = cls(ports, sock, on_audio, on_dtmf, on_talkspurt_start)
        try:
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Protocol(session), sock=sock
            )
        except BaseException:
            sock.close()
            ports.release(session.local_port)
            raise
        session._transport = transport
        return session

    # --- configuration from SDP ----------------------------------------------------------

    def configure(self, remote_ip: str, remote_port: int, codec: str, payload_type: int,
                  dtmf_payload_type: int | None = None) -> None:
        """Apply the negotiated SDP; the first call starts the pacer. Re-INVITEs call it again.

        A new remote address (re-INVITE) lifts the latch so the new address can latch.
        """
        if self._closed:
            raise RuntimeError("RtpSession is closed")
        if not 0 < remote_port < 65536:
            raise ValueError(f"remote_port must be 1..65535, got {remote_port}")
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload_type must be 0..127, got {payload_type}")
        if dtmf_payload_type is not None and not 0 <= dtmf_payload_type <= 127:
            raise ValueError(f"dtmf_payload_type must be 0..127, got {dtmf_payload_type}")
        codec_obj = codec_by_name(codec)
        remote = (remote_ip, remote_port)
        if remote != self.remote:
            self.stats.latched_address = None
            self._last_seq = None
            self._candidates.clear()
        self.remote = remote
        self.codec = codec_obj
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self.pacer.set_codec(codec_obj, payload_type)
        self.pacer.start()

    # --- outbound ------------------------------------------------------------------------

    def enqueue(self, pcm16_8k: npt.ArrayLike | bytes) -> None:
        self.pacer.enqueue(pcm16_8k)

    def clear(self) -> None:
        self.pacer.clear()

    @property
    def is_speaking(self) -> bool:
        return self.pacer.is_speaking

    @property
    def queued_samples(self) -> int:
        return self.pacer.queued_samples

    async def wait_idle(self) -> None:
        await self.pacer.wait_idle()

    def set_sending(self, sending: bool) -> None:
        """Hold (False) stops sending packets entirely; resume (True) sends again."""
        self.pacer.set_sending(sending)

    def _send(self, datagram: bytes) -> None:
        """The pacer's send, on the media clock's thread: the socket itself, not the
        transport (asyncio transports are not thread-safe; this is one non-blocking
        sendto, which the kernel serialises)."""
        target = self.stats.latched_address or self.remote
        if self._transport is None or target is None or self._transport.is_closing():
            return
        self._sock.sendto(datagram, target)
        self.stats.packets_out += 1
        self.stats.bytes_out += len(datagram)

    # --- inbound -------------------------------------------------------------------------

    def _log_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(message + " (logged once per call)", *args)

    def _log_once_exc(self, key: str, message: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.exception(message + " (logged once per call)")

    def _note_socket_error(self, exc: Exception) -> None:
        self._log_once("socket-error", "RTP socket error on port %d: %s", self.local_port, exc)

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError as exc:
            self.stats.malformed += 1
            self._log_once("malformed", "Dropping malformed RTP from %s:%d: %s",
                           addr[0], addr[1], exc)
            return
        pt = packet.payload_type
        if self.codec is None or pt not in (self.payload_type, self.dtmf_payload_type):
            # Before configure() nothing is negotiated; unknown types must not latch.
            self.stats.wrong_payload_type += 1
            self._log_once("payload-type", "Dropping RTP with payload type %d from %s:%d "
                           "(negotiated %s, DTMF %s)", pt, addr[0], addr[1],
                           self.payload_type, self.dtmf_payload_type)
            return
        if not self._accept_source(packet, addr):
            self.stats.dropped_strangers += 1
            latched = self.stats.latched_address
            self._log_once("stranger", "Dropping RTP from %s:%d: %s", addr[0], addr[1],
                           f"latched to {latched[0]}:{latched[1]}" if latched
                           else "not the SDP address (on NAT probation)")
            return
        if self._is_late(packet):
            self.stats.late += 1
            return
        if pt == self.payload_type:
            self._count_in(data)
            if not packet.payload:  # a keep-alive or an empty packet: nothing to hear
                return
            pcm = self.codec.decode(packet.payload)
            if self.inbound_tap is not None:
                try:
                    self.inbound_tap(packet.timestamp, packet.ssrc, pcm)
                except Exception:  # the recording stops, the call goes on
                    self.inbound_tap = None
                    self._log_once_exc("inbound-tap", "The call's recording failed and stops")
            try:
                self._on_audio(pcm)
            except Exception:
                self._log_once_exc("on-audio", "on_audio callback failed")
        else:
            self._handle_dtmf(packet, data)

    def _accept_source(self, packet: RtpPacket, addr: Address) -> bool:
        """Latching (see the module docstring): may this source's packet be used?"""
        latched = self.stats.latched_address
        if addr == latched:
            return True
        if addr == self.remote:
            self.stats.latched_address = addr
            self._candidates.clear()
            if latched is not None:
                log.info("RTP re-latched to the SDP address %s:%d (was %s:%d)",
                         addr[0], addr[1], latched[0], latched[1])
            return True
        if latched is not None:
            return False
        previous = self._candidates.get(addr)
        in_row = 1
        if previous is not None:
            ssrc, last_seq, count = previous
            if packet.ssrc == ssrc and seq_diff(packet.sequence_number, last_seq) == 1:
                in_row = count + 1
        elif len(self._candidates) >= _MAX_CANDIDATES:
            self._candidates.clear()
        if in_row < NAT_PROBATION_PACKETS:
            self._candidates[addr] = (packet.ssrc, packet.sequence_number, in_row)
            return False
        self._candidates.clear()
        self.stats.latched_address = addr
        log.info("RTP latched to %s:%d behind NAT after %d packets in sequence (SDP said %s)",
                 addr[0], addr[1], in_row, self.remote)
        return True

    def _count_in(self, data: bytes) -> None:
        self.stats.packets_in += 1
        self.stats.bytes_in += len(data)

    def _is_late(self, packet: RtpPacket) -> bool:
        """Duplicates and reordered stragglers are dropped; a new SSRC starts afresh."""
        if packet.ssrc != self._last_ssrc or self._last_seq is None:
            self._last_ssrc = packet.ssrc
            self._last_seq = packet.sequence_number
            return False
        distance = seq_diff(packet.sequence_number, self._last_seq)
        if -_LATE_WINDOW <= distance <= 0:
            return True
        self._last_seq = packet.sequence_number
        return False

    def _handle_dtmf(self, packet: RtpPacket, data: bytes) -> None:
        try:
            digits = self._dtmf.feed(packet.timestamp, packet.payload)
        except DtmfParseError as exc:
            self.stats.malformed += 1
            self._log_once("dtmf", "Dropping malformed telephone-event: %s", exc)
            return
        self._count_in(data)
        for digit in digits:
            self.stats.dtmf_events += 1
            if self._on_dtmf is not None:
                try:
                    self._on_dtmf(digit)
                except Exception:
                    self._log_once_exc("on-dtmf", "on_dtmf callback failed")

    # --- teardown ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Stop the pacer, close the socket and give the port back. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self.pacer.stop()
        if self._transport is not None:
            self._transport.close()
        else:
            self._sock.close()
        self._ports.release(self.local_port)
