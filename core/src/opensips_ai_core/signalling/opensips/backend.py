# Over 400 lines: one B2B session state machine; transfers and outbound calls are in
# control.py, orphaned sessions in orphans.py, the silent-end audit in audit.py, the
# script's gate in gate.py.
"""`OpenSipsBackend`: calls through OpenSIPS 3.6 `b2b_entities` (the upstream connector's way).

OpenSIPS terminates SIP and raises E_UA_SESSION events (NEW, UPDATED, TERMINATED)
to our UDP listener; we answer with MI `ua_session_reply` and end calls with
`ua_session_terminate`. The wire facts this relies on are in docs/opensips.md:

- One supervisor task asks MI `uptime` every `poll_interval` s. "Up since" tells
  one OpenSIPS run from the next: a restart forgets every subscription and
  session, so on a new run we re-subscribe at once and release locally the calls
  the new run's `ua_session_list` does not hold (no MI terminate: an old key may
  name a new run's session). `event_subscribe` is also renewed before it expires.
  `ready` is False (and /health 503) until OpenSIPS holds our subscription.
- The script refuses new callers itself (503, Retry-After) while no core takes calls:
  the core opens its gate before subscribing, closes it when it drains (`drain_refusal`,
  set by the app) or stops, and renews its lease at every poll so that the script
  closes it for a core that died (gate.py).
- `ua_session_reply` needs `reason`, and a body goes without `content_type`:
  OpenSIPS copies that parameter as a raw header line and adds
  `Content-Type: application/sdp` itself when it is absent.
- A CANCEL (TERMINATED, method CANCEL) gets our 487 because OpenSIPS does not send
  one, unless our 200 OK crossed it: then OpenSIPS has ended the session itself (no
  BYE can be sent; the caller hangs up) and we release the call and delete what is
  left. `ua_session_terminate` fails before the answer, so an
  unanswered call is rejected with a reply >= 300 instead; after a final reply
  >= 300 the terminated (state 7) session is deleted with `ua_session_terminate`
  rather than left in OpenSIPS until `ua_default_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opensips_ai_core.signalling.base import CallHandler, CallInfo, OutboundRequest, TransferResult
from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.headers import header_uri, reason_for
from opensips_ai_core.signalling.offer_answer import continue_session
from opensips_ai_core.signalling.opensips import metrics
from opensips_ai_core.signalling.opensips.audit import sessions_gone
from opensips_ai_core.signalling.opensips.control import OpenSipsCallControl, Progress
from opensips_ai_core.signalling.opensips.events import EVENT_NAME, EventListener, UaSessionEvent
from opensips_ai_core.signalling.opensips.gate import (
    STOPPED_RETRY_AFTER_S,
    CallGate,
    Unrenewed,
)
from opensips_ai_core.signalling.opensips.liveness import OpenSipsRun
from opensips_ai_core.signalling.opensips.mi import MiClient, MiError, MiTimeoutError
from opensips_ai_core.signalling.opensips.orphans import OrphanSweeper, listed_sessions
from opensips_ai_core.signalling.sdp import SdpError, SessionDescription, parse_sdp
from opensips_ai_core.tasks import TaskSet

log = logging.getLogger("signalling.opensips")

# b2b_entities dialog states (ua_session_list "state"): 4 confirmed (200 sent),
# 5 established (ACKed), 7 terminated (rejected, cancelled or ended).
ANSWERED_STATES = (4, 5)
# Keys whose TERMINATED was seen lately: a NEW arriving after it is stale.
RECENTLY_TERMINATED = 1024


def _retry_after(refusal: SignallingError | None) -> int:
    """The gate's Retry-After: the drain's (its time left), else the stopped core's."""
    if refusal is None or refusal.retry_after is None:
        return STOPPED_RETRY_AFTER_S
    return refusal.retry_after


@dataclass
class _Session:
    info: CallInfo
    answered: bool = False
    task: asyncio.Task[None] | None = None
    # The ua_session_reply 200 in flight: True once OpenSIPS accepted it. A CANCEL or a
    # hang-up waits for it, since OpenSIPS may have sent the 200 whatever we cancel.
    answering: asyncio.Task[bool] | None = None
    local_sdp: SessionDescription | None = None


class OpenSipsBackend:
    name = "opensips"

    def __init__(self, mi_host: str, mi_port: int, event_host: str, event_port: int,
                 expire: int = 3600, *, event_socket_host: str | None = None,
                 mi_timeout: float = 2.0, poll_interval: float = 1.0,
                 missed_polls: int = 3, refresh_max: float = 60.0,
                 outbound_socket: str | None = None, orphan_grace: float | None = None,
                 audit_interval: float = 10.0, gate_lease: int = 10) -> None:
        if expire <= 0:
            raise ValueError(f"expire must be > 0 seconds (0 unsubscribes), got {expire}")
        if poll_interval <= 0 or missed_polls < 1:
            raise ValueError("poll_interval must be > 0 and missed_polls >= 1")
        self.expire = expire
        self.poll_interval = poll_interval
        self.missed_polls = missed_polls
        self.refresh_max = refresh_max
        # The address OpenSIPS sends events to: the listener's, unless it binds a wildcard.
        self.event_socket_host = event_socket_host or (
            event_host if event_host not in ("0.0.0.0", "") else "127.0.0.1")
        self.mi = MiClient(mi_host, mi_port, timeout=mi_timeout)
        self.events = EventListener(event_host, event_port, self._on_event)
        # The script's gate (gate.py); closed while `drain_refusal()` says the core drains.
        self.gate = CallGate(self.mi, gate_lease)
        self.drain_refusal: Callable[[], SignallingError | None] | None = None
        self.subscribed = asyncio.Event()
        self.subscriptions = 0           # successful event_subscribe calls (renewals included)
        self.restarts = 0                # new OpenSIPS runs noticed
        self.lapses = 0                  # gate leases that ran out while this core stalled
        # The longest this core's polls stalled since the gate was last read open: the
        # gap between two polls' starts, or the current poll's time so far.
        self._stall = 0.0
        self._poll_began = 0.0
        self.run: OpenSipsRun | None = None
        self._state = "not subscribed yet: OpenSIPS MI has not answered"
        self._handler: CallHandler | None = None
        self._sessions: dict[str, _Session] = {}
        self._tasks = TaskSet(log, "OpenSIPS event")
        self._supervisor: asyncio.Task[None] | None = None
        self._reconcile: set[str] | None = None  # calls to check against a new run
        self._terminated: OrderedDict[str, None] = OrderedDict()  # keys ended lately
        # Every `audit_interval` s: release the answered calls OpenSIPS ended without an
        # event (ua_default_timeout, a lost datagram), asked call by call (audit.py).
        self.audit_interval = audit_interval
        self._audit_at = 0.0
        self._auditing: asyncio.Task[None] | None = None
        self._set_subscribed(False, self._state)
        # Transfer (REFER) and outbound calls (ua_session_client_start): control.py.
        # `outbound_socket` ("udp:IP:PORT", OpenSIPS' SIP socket) builds the Contact of
        # outbound INVITEs where the script sets no b2b_entities advertised_contact.
        self.outbound_socket = outbound_socket
        self.control = OpenSipsCallControl(self)
        # After each (re)subscription: end the sessions OpenSIPS holds for no call of
        # ours (a previous core's; callers who came while nobody was subscribed). The
        # grace outlasts an MI answer, so a dial's key is known by then.
        self.orphans = OrphanSweeper(self.mi, self._known_keys,
                                     max(1.0, mi_timeout) if orphan_grace is None
                                     else orphan_grace)

    @property
    def event_socket(self) -> str:
        return f"udp:{self.event_socket_host}:{self.events.port}"

    async def start(self, handler: CallHandler) -> None:
        self._handler = handler
        await self.events.start()
        await self.mi.start()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        log.info("OpenSIPS backend: events on %s, MI udp:%s:%d", self.event_socket,
                 *self.mi.target)

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self.orphans.stop()
        if self._auditing is not None:
            self._auditing.cancel()
            await asyncio.gather(self._auditing, return_exceptions=True)
        # New callers get OpenSIPS' 503 from now on, not a session nobody takes; retry
        # soon, for whatever replaces this core (a drain's Retry-After was until now).
        if self.gate.tried:
            await self.gate.close(STOPPED_RETRY_AFTER_S, timeout=0.5)
        if self.subscribed.is_set():
            with contextlib.suppress(MiError):
                await self.mi.call("event_subscribe", [EVENT_NAME, self.event_socket, 0],
                                   timeout=0.5)  # expire 0 unsubscribes
        self._set_subscribed(False, "stopped")
        await self._tasks.cancel_all()
        await self.events.close()
        await self.mi.close()

    def active_calls(self) -> list[str]:
        return list(self._sessions) + self.control.active()

    def _known_keys(self) -> set[str]:
        """The B2B keys of every session this core handles (callers' and outbound)."""
        return set(self._sessions) | self.control.keys()

    # ---- transfer and outbound calls (control.py) ---------------------------------------

    async def transfer(self, call_id: str, target: str, *,
                       timeout_s: float = 30.0) -> TransferResult:
        """Blind transfer by REFER (ua_session_update); on success the call is ended."""
        return await self.control.transfer(call_id, target, timeout_s)

    async def dial(self, call_id: str, request: OutboundRequest,
                   progress: Progress | None = None) -> int:
        """Place a call with ua_session_client_start; 2xx when answered."""
        return await self.control.dial(call_id, request, progress)

    def cancel_dial(self, call_id: str) -> bool:
        return self.control.cancel(call_id)

    # ---- readiness ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True while the running OpenSIPS holds our E_UA_SESSION subscription."""
        return self.subscribed.is_set()

    def readiness(self) -> tuple[bool, str]:
        """(ready, why): what /health reports for the signalling path."""
        return self.ready, self._state

    def _set_subscribed(self, subscribed: bool, state: str) -> None:
        if subscribed:
            self.subscribed.set()
        else:
            self.subscribed.clear()
        self._state = state
        metrics.SUBSCRIBED.set(1 if subscribed else 0)

    # ---- supervision: liveness, restarts, subscription -----------------------------------

    def renew_after(self) -> float:
        """Renew a quarter of the lifetime (at most a minute) before it runs out, and at
        least every `refresh_max` seconds (a safety net: restarts are noticed by `uptime`)."""
        before_expiry = self.expire - min(60.0, self.expire * 0.25)
        return max(0.5, min(before_expiry, self.refresh_max))

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        misses = 0
        renew_at = 0.0
        previous: float | None = None
        while True:
            began = self._poll_began = loop.time()
            if previous is not None:  # a long gap: the event loop stalled (_lapsed)
                self._stall = max(self._stall, began - previous)
            previous = began
            seen_open = self.gate.seen_open
            try:
                renew_at, misses = await self._supervise_once(renew_at, misses)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("OpenSIPS supervision failed; trying again")
            if self.gate.seen_open > seen_open:
                self._stall = 0.0
            await asyncio.sleep(max(0.0, self.poll_interval - (loop.time() - began)))

    async def _supervise_once(self, renew_at: float, misses: int) -> tuple[float, int]:
        """One poll: notice a silent MI or a new run, (re)subscribe, reconcile.
        Returns when to renew the subscription and how many polls went unanswered."""
        loop = asyncio.get_running_loop()
        run = await self._poll()
        if run is False:
            misses += 1
            if misses == self.missed_polls:
                log.warning("OpenSIPS MI udp:%s:%d does not answer (%d polls): not ready",
                            *self.mi.target, misses)
            if misses >= self.missed_polls and self.subscribed.is_set():
                self._set_subscribed(False, f"OpenSIPS MI udp:{self.mi.target[0]}:"
                                            f"{self.mi.target[1]} does not answer")
            return renew_at, misses
        if isinstance(run, OpenSipsRun):
            self._note_run(run)
        refusal = self._draining()
        wait = min(self.mi.timeout, self.poll_interval)
        if refusal is None and self.gate.is_open and self.subscribed.is_set() \
                and await self.gate.forgotten(wait):
            unrenewed = self.gate.unrenewed()
            if unrenewed is None:
                self._restarted("the gate it opened is closed and this core renewed its "
                                "lease in time: a new run started within the same second, "
                                "which uptime cannot tell")
            else:
                self._lapsed(unrenewed)
                renew_at = 0.0  # subscribe again at this poll: a restart may hide in it
        was_subscribed = self.subscribed.is_set()
        due = not was_subscribed or loop.time() >= renew_at
        if refusal is not None and self.gate.is_open is not False:
            # The drain began: OpenSIPS refuses new callers for us, until we are gone.
            await self.gate.close(_retry_after(refusal), draining=True, timeout=wait)
        elif refusal is None and (due or self.gate.is_open is not True):
            # Before subscribing: once subscribed, calls come.
            await self.gate.open(timeout=wait)
        elif self.gate.tried:
            # Open or draining, written before: renew the lease (gate.py), else the
            # script closes the gate as it does for a core that died.
            await self.gate.renew(timeout=wait)
        if due and await self._subscribe():
            renew_at = loop.time() + self.renew_after()
        if self._reconcile is not None:
            await self._reconcile_calls()
        if self.subscribed.is_set() and not was_subscribed:
            self.orphans.start()
        if self.subscribed.is_set() and loop.time() >= self._audit_at and (
                self._auditing is None or self._auditing.done()):
            self._audit_at = loop.time() + self.audit_interval
            self._auditing = loop.create_task(self._audit_calls())
        return renew_at, 0

    def _draining(self) -> SignallingError | None:
        return self.drain_refusal() if self.drain_refusal is not None else None

    async def _poll(self) -> OpenSipsRun | bool:
        """Ask `uptime`: the run that answered, True for an answer without one, False
        for no answer within the poll interval."""
        loop = asyncio.get_running_loop()
        try:
            result = await self.mi.call("uptime", timeout=min(self.mi.timeout,
                                                              self.poll_interval))
        except MiTimeoutError:
            return False
        except MiError as error:
            log.debug("uptime refused (%s): OpenSIPS is up, its run unknown", error)
            return True
        return OpenSipsRun.from_uptime(result, loop.time()) or True

    def _note_run(self, run: OpenSipsRun) -> None:
        previous, self.run = self.run, run
        if previous is None or not run.is_new_run_since(previous):
            return
        self._restarted(f"up since {run.up_since}, was {previous.up_since}")

    def _restarted(self, how: str) -> None:
        """A new OpenSIPS run: it forgot our subscription, its sessions and the gate."""
        self.restarts += 1
        metrics.RESTARTS.inc()
        log.warning("OpenSIPS restarted (%s): it forgot our subscription and its sessions; "
                    "re-subscribing, checking %d call(s)", how, len(self._sessions))
        self._set_subscribed(False, "OpenSIPS restarted: re-subscribing")
        self.gate.forget()
        self._reconcile = (self._reconcile or set()) | self._known_keys()

    def _lapsed(self, unrenewed: Unrenewed) -> None:
        """The gate's lease ran out because this core renewed it too late: OpenSIPS did
        not restart. The gate opens again at this poll; the subscription is renewed and
        the answered calls audited at once, which is right whichever it was (a restart
        within the lapse that uptime cannot tell would have forgotten both)."""
        self.lapses += 1
        metrics.GATE_LAPSES.inc()
        ago = time.monotonic() - unrenewed.since
        since = time.strftime("%H:%M:%S", time.localtime(time.time() - ago))
        stall = max(self._stall, asyncio.get_running_loop().time() - self._poll_began)
        self._stall = 0.0
        why = (f"this core stalled {stall:.1f} s" if stall >= self.gate.lease_s - 1
               else "OpenSIPS MI did not confirm its renewals")
        log.warning("the gate lapsed: %s (no lease renewal for %.1f s, since %s; lease "
                    "%d s); OpenSIPS did not restart: opening the gate again, renewing the "
                    "subscription, checking %d call(s)", why, unrenewed.seconds, since,
                    self.gate.lease_s, len(self._sessions))
        self.gate.forget()
        self._audit_at = 0.0

    async def _subscribe(self) -> bool:
        try:
            await self.mi.call("event_subscribe", [EVENT_NAME, self.event_socket, self.expire])
        except MiError as error:
            if self.subscribed.is_set() or "failed" not in self._state:
                log.warning("event_subscribe failed: %s", error)
            self._set_subscribed(False, f"event_subscribe failed: {error}")
            return False
        if not self.subscribed.is_set():
            log.info("subscribed to %s on %s for %d s", EVENT_NAME, self.event_socket,
                     self.expire)
        self.subscriptions += 1
        self._set_subscribed(True, f"subscribed to {EVENT_NAME} on {self.event_socket}")
        return True

    async def _reconcile_calls(self) -> None:
        """Release the calls a new OpenSIPS run does not hold (compared by full key)."""
        try:
            listing = await self.mi.call("ua_session_list", {})
        except MiError as error:
            log.warning("ua_session_list failed (%s): calls checked at the next poll", error)
            return
        sessions = listed_sessions(listing)
        if sessions is None:
            log.warning("ua_session_list answered %r, not a list: calls checked at the next "
                        "poll", type(listing).__name__)
            return
        known, self._reconcile = self._reconcile or set(), None
        # A UAS session's key is its To-tag, a UAC session's its Call-ID (orphans.py).
        alive = {session.key for session in sessions}
        released = [key for key in sorted(known - alive)
                    if await self._release(key, "opensips restarted")]
        if released:
            log.warning("released %d call(s) the restarted OpenSIPS no longer knows: %s",
                        len(released), ", ".join(released))

    async def _audit_calls(self) -> None:
        """Release the answered calls OpenSIPS ended without an event (audit.py)."""
        answered = [key for key, session in self._sessions.items() if session.answered]
        try:
            gone = await sessions_gone(self.mi, answered + self.control.answered_keys())
        except Exception:
            log.exception("auditing the calls against OpenSIPS failed")
            return
        released = [key for key in gone if await self._release(key, "opensips ended it")]
        if released:
            log.warning("released %d call(s) OpenSIPS ended without an event (its "
                        "ua_default_timeout, or a lost datagram): %s", len(released),
                        ", ".join(released))

    async def _release(self, key: str, reason: str) -> bool:
        """End a call locally whose session OpenSIPS no longer holds (no MI for it)."""
        if self.control.release(key, reason):
            metrics.RECONCILED_CALLS.inc()
            return True
        session = self._sessions.pop(key, None)
        if session is None:
            return False  # ended meanwhile
        if session.task is not None and not session.task.done():
            session.task.cancel()
        metrics.RECONCILED_CALLS.inc()
        await self._notify_end(key, reason)
        return True

    # ---- events -------------------------------------------------------------------------

    def _on_event(self, event: UaSessionEvent) -> None:
        if self.control.on_event(event):
            return  # a transfer's or an outbound call's
        session = self._sessions.get(event.key)
        if event.event_type == "NEW":
            if session is not None:
                log.debug("duplicate NEW for %s ignored", event.key)
                return
            if event.key in self._terminated:
                # Its TERMINATED (a CANCEL right behind the INVITE) overtook it: events
                # come from several OpenSIPS workers. The session is answered and gone.
                log.info("NEW for %s came after its end: ignored", event.key)
                return
            info = CallInfo(
                call_id=event.key, caller=header_uri(event.header("From") or ""),
                callee=header_uri(event.header("To") or ""), backend=self.name,
                sip_call_id=event.header("Call-ID") or "")
            session = _Session(info)
            self._sessions[event.key] = session
            session.task = self._tasks.spawn(self._on_new(session, event))
        elif event.event_type == "UPDATED":
            if session is None:
                self._tasks.spawn(self._reply(event.key, event.method, 481))
            elif session.task is not None and not session.task.done():
                self._tasks.spawn(self._reply(event.key, event.method, 491))
            else:
                session.task = self._tasks.spawn(self._on_updated(session, event))
        elif event.event_type == "TERMINATED":
            self._sessions.pop(event.key, None)
            self._terminated[event.key] = None
            while len(self._terminated) > RECENTLY_TERMINATED:
                self._terminated.popitem(last=False)
            if session is not None and session.task is not None and not session.task.done():
                # new_call/update_call is moot now; a 200 already in flight is its own task.
                session.task.cancel()
            self._tasks.spawn(self._on_terminated(session, event))
        else:
            log.debug("%s event for %s (%s %s) ignored", event.event_type, event.key,
                      event.status, event.method)

    async def _on_new(self, session: _Session, event: UaSessionEvent) -> None:
        assert self._handler is not None
        key = event.key
        if event.method != "INVITE":
            await self._reject(key, event.method, 405)
            return
        offer = await self._offer_or_reject(key, event)
        if offer is None:
            return
        try:
            answer = await self._handler.new_call(session.info, offer)
        except SignallingError as error:
            # A drain or a full core: 503 with Retry-After, as in direct-SIP mode.
            await self._reject(key, event.method, error.code, error.reason,
                               retry_after=error.retry_after)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("new_call failed for %s", key)
            await self._reject(key, event.method, 500, reason_for(500))
            return
        if self._sessions.get(key) is not session:
            return  # terminated meanwhile
        session.local_sdp = answer
        session.answering = self._tasks.spawn(self._answer(key, answer.to_text()))
        if await asyncio.shield(session.answering):
            session.answered = True
        elif self._sessions.get(key) is session:
            self._sessions.pop(key, None)
            await self._notify_end(key, "reply failed")

    async def _offer_or_reject(self, key: str, event: UaSessionEvent
                               ) -> SessionDescription | None:
        if not event.body.strip():
            await self._reject(key, event.method, 415)
            return None
        try:
            return parse_sdp(event.body)
        except SdpError as error:
            log.warning("bad SDP for %s: %s", key, error)
            await self._reject(key, event.method, 400, "Bad Request (malformed SDP)")
            return None

    async def _on_updated(self, session: _Session, event: UaSessionEvent) -> None:
        assert self._handler is not None
        key = event.key
        if event.method != "INVITE":
            await self._reply(key, event.method, 405)
            return
        if not event.body.strip():
            # An offerless re-INVITE: offer the current session again.
            if session.local_sdp is None:
                await self._reply(key, event.method, 488)
                return
            answer = session.local_sdp
        else:
            try:
                offer = parse_sdp(event.body)
            except SdpError as error:
                log.warning("bad SDP in re-INVITE for %s: %s", key, error)
                await self._reply(key, event.method, 400, "Bad Request (malformed SDP)")
                return
            try:
                answer = await self._handler.update_call(key, offer)
            except SignallingError as error:
                await self._reply(key, event.method, error.code, error.reason)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("update_call failed for %s", key)
                await self._reply(key, event.method, 500, reason_for(500))
                return
            answer = continue_session(session.local_sdp, answer)
        session.local_sdp = answer
        await self._reply(key, "INVITE", 200, body=answer.to_text())

    async def _on_terminated(self, session: _Session | None, event: UaSessionEvent) -> None:
        if event.method == "CANCEL":
            await self._on_cancel(session, event.key)
        if session is not None:
            await self._notify_end(event.key, "cancelled" if event.method == "CANCEL"
                                   else event.method.lower() or "terminated")

    async def _on_cancel(self, session: _Session | None, key: str) -> None:
        """OpenSIPS answered the CANCEL itself and left the INVITE to us."""
        answered = session is not None and (
            session.answered or (session.answering is not None
                                 and await asyncio.shield(session.answering)))
        if not answered:
            try:
                await self._send_reply(key, "INVITE", 487, "Request Terminated")
            except MiError as error:
                # 500: the INVITE already has its final reply, so our 200 went out after
                # all (its MI answer was lost); anything else: nothing more to do.
                log.warning("ua_session_reply 487 for %s failed: %s", key, error)
                answered = (session is not None and session.answering is not None
                            and error.code == 500)
            else:
                await self._delete_terminated(key)
                return
        if not answered:
            return
        # The CANCEL crossed our 200 OK: the INVITE has its final reply (a 487 fails with
        # MI error 500). OpenSIPS 3.6.8 has nevertheless ended the session on the CANCEL:
        # a terminate sends no BYE (seen on the wire), it only deletes what is left. The
        # caller, holding a 200 for a cancelled INVITE, has to ACK and hang up; OpenSIPS
        # answers that BYE 200. The call is released here.
        metrics.CANCEL_AFTER_ANSWER.inc()
        log.info("CANCEL for %s crossed our 200 OK: OpenSIPS ended the session; released",
                 key)
        await self._delete_terminated(key)

    async def _notify_end(self, key: str, reason: str) -> None:
        assert self._handler is not None
        try:
            await self._handler.end_call(key, reason)
        except Exception:
            log.exception("end_call failed for %s", key)

    # ---- MI -----------------------------------------------------------------------------

    async def _reject(self, key: str, method: str, code: int, reason: str | None = None, *,
                      retry_after: int | None = None) -> None:
        self._sessions.pop(key, None)
        headers = f"Retry-After: {retry_after}\r\n" if retry_after is not None else None
        if await self._reply(key, method or "INVITE", code, reason,
                             extra_headers=headers) and method == "INVITE":
            await self._delete_terminated(key)

    async def _send_reply(self, key: str, method: str, code: int, reason: str | None = None,
                          body: str | None = None, *, extra_headers: str | None = None) -> None:
        params: dict[str, Any] = {"key": key, "method": method, "code": code,
                                  "reason": reason or reason_for(code)}
        if extra_headers is not None:
            # Raw header lines, each ending in CRLF (b2b_entities copies them as they are).
            params["extra_headers"] = extra_headers
            if body is None:
                # OpenSIPS 3.6.8 copies extra_headers only when a body is given: without
                # one the reply carries as many uninitialised bytes instead (seen on the
                # wire). An empty body and an empty content_type copy exactly our lines.
                params["body"] = ""
                params["content_type"] = ""
        if body is not None:
            # No content_type: OpenSIPS copies it verbatim as a header line, and adds
            # "Content-Type: application/sdp" itself for a body without one.
            params["body"] = body
        await self.mi.call("ua_session_reply", params)

    async def _reply(self, key: str, method: str, code: int, reason: str | None = None,
                     body: str | None = None, *, extra_headers: str | None = None) -> bool:
        try:
            await self._send_reply(key, method, code, reason, body, extra_headers=extra_headers)
        except MiError as error:
            log.warning("ua_session_reply %d for %s failed: %s", code, key, error)
            return False
        return True

    async def _answer(self, key: str, body: str) -> bool:
        """Send the 200 OK; True when OpenSIPS sent it (the caller will ACK)."""
        try:
            await self._send_reply(key, "INVITE", 200, body=body)
        except MiTimeoutError as error:
            # The request or its answer was lost: OpenSIPS may have sent the 200 anyway.
            state = await self._session_state(key)
            log.warning("ua_session_reply 200 for %s: %s; OpenSIPS lists it in state %s",
                        key, error, state)
            return state in ANSWERED_STATES
        except MiError as error:
            log.warning("ua_session_reply 200 for %s failed: %s", key, error)
            return False
        return True

    async def _session_state(self, key: str) -> int | None:
        """The b2b_entities state of this very session, None when it is not listed."""
        try:
            entry = await self.mi.call("ua_session_list", {"key": key})
        except MiError:
            return None
        if not isinstance(entry, dict) or entry.get("to_tag") not in (None, key):
            return None
        state = entry.get("state")
        return state if isinstance(state, int) else None

    async def _delete_terminated(self, key: str) -> None:
        """Delete a rejected or cancelled session (state 7) from OpenSIPS now.

        b2b_entities would keep it listed until `ua_default_timeout`; in the terminated
        state `ua_session_terminate` sends no BYE and deletes the entity.
        """
        try:
            await self.mi.call("ua_session_terminate", {"key": key})
        except MiError as error:
            log.debug("deleting terminated session %s failed: %s", key, error)

    async def _terminate(self, key: str) -> None:
        try:
            await self.mi.call("ua_session_terminate", {"key": key})
        except MiError as error:
            log.warning("ua_session_terminate for %s failed: %s", key, error)

    async def _held_by_this_run(self, key: str) -> bool:
        """Does the running OpenSIPS hold this very session? b2b_entities finds a key by
        its hash and local index only, so after a restart an old key can name another
        caller's session; its To-tag (the full key) tells."""
        try:
            entry = await self.mi.call("ua_session_list", {"key": key})
        except MiTimeoutError:
            return True  # cannot tell: let ua_session_terminate try
        except MiError:
            return False  # 404 Entity not found (or a key it cannot parse)
        return not isinstance(entry, dict) or entry.get("to_tag") in (None, key)

    async def hangup(self, call_id: str) -> None:
        if call_id not in self._sessions and await self.control.hangup(call_id):
            return  # an outbound call
        session = self._sessions.pop(call_id, None)
        if session is None:
            log.info("hangup for %s: no such session (already ended)", call_id)
            return
        if session.task is not None and not session.task.done():
            session.task.cancel()
        answered = session.answered or (session.answering is not None
                                        and await asyncio.shield(session.answering))
        if not answered:
            # ua_session_terminate fails before the answer: reject the INVITE instead.
            if await self._reply(call_id, "INVITE", 480, "Temporarily Unavailable"):
                await self._delete_terminated(call_id)
            return
        if not await self._held_by_this_run(call_id):
            log.warning("hangup for %s: OpenSIPS no longer holds this session (restarted?): "
                        "released locally", call_id)
            return
        await self._terminate(call_id)
