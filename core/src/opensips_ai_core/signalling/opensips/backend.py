"""`OpenSipsBackend`: calls through OpenSIPS 3.6 `b2b_entities` (the upstream connector's way).

OpenSIPS terminates SIP and raises E_UA_SESSION events (NEW, UPDATED, TERMINATED)
to our UDP listener; we answer with MI `ua_session_reply` and end calls with
`ua_session_terminate`. The wire format is OpenSIPS 3.6.8's, as recorded in
shared/OPENSIPS-WIRE.md:

- `event_subscribe ["E_UA_SESSION", "udp:HOST:PORT", EXPIRE]` is retried with
  backoff until OpenSIPS answers (until then callers only get "100 Giving it a
  try") and renewed before it expires.
- `ua_session_reply` needs `reason`; a CANCEL (TERMINATED, method CANCEL) gets our
  487 because OpenSIPS does not send one; `ua_session_terminate` fails before the
  answer, so an unanswered call is rejected with a reply >= 300 instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from opensips_ai_core.signalling.base import CallHandler, CallInfo, SignallingError
from opensips_ai_core.signalling.opensips.events import EVENT_NAME, EventListener, UaSessionEvent
from opensips_ai_core.signalling.opensips.mi import MiClient, MiError
from opensips_ai_core.signalling.sdp import (
    SdpError,
    SessionDescription,
    continue_session,
    parse_sdp,
)
from opensips_ai_core.signalling.sip.message import header_uri, reason_for
from opensips_ai_core.tasks import TaskSet

log = logging.getLogger("signalling.opensips")

CONTENT_TYPE_SDP = "application/sdp"


@dataclass
class _Session:
    info: CallInfo
    answered: bool = False
    task: asyncio.Task[None] | None = None
    local_sdp: SessionDescription | None = None


class OpenSipsBackend:
    name = "opensips"

    def __init__(self, mi_host: str, mi_port: int, event_host: str, event_port: int,
                 expire: int = 3600, *, event_socket_host: str | None = None,
                 mi_timeout: float = 2.0, retry_initial: float = 0.5,
                 retry_max: float = 10.0, refresh_max: float = 60.0) -> None:
        if expire <= 0:
            raise ValueError(f"expire must be > 0 seconds (0 unsubscribes), got {expire}")
        self.expire = expire
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.refresh_max = refresh_max
        # The address OpenSIPS sends events to: the listener's, unless it binds a wildcard.
        self.event_socket_host = event_socket_host or (
            event_host if event_host not in ("0.0.0.0", "") else "127.0.0.1")
        self.mi = MiClient(mi_host, mi_port, timeout=mi_timeout)
        self.events = EventListener(event_host, event_port, self._on_event)
        self.subscribed = asyncio.Event()
        self.subscriptions = 0           # successful event_subscribe calls (renewals included)
        self._handler: CallHandler | None = None
        self._sessions: dict[str, _Session] = {}
        self._tasks = TaskSet(log, "OpenSIPS event")
        self._subscriber: asyncio.Task[None] | None = None

    @property
    def event_socket(self) -> str:
        return f"udp:{self.event_socket_host}:{self.events.port}"

    async def start(self, handler: CallHandler) -> None:
        self._handler = handler
        await self.events.start()
        await self.mi.start()
        self._subscriber = asyncio.get_running_loop().create_task(self._keep_subscribed())
        log.info("OpenSIPS backend: events on %s, MI udp:%s:%d", self.event_socket,
                 *self.mi.target)

    async def stop(self) -> None:
        if self._subscriber is not None:
            self._subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._subscriber
        if self.subscribed.is_set():
            with contextlib.suppress(MiError):
                await self.mi.call("event_subscribe", [EVENT_NAME, self.event_socket, 0],
                                   timeout=0.5)  # expire 0 unsubscribes
        await self._tasks.cancel_all()
        await self.events.close()
        await self.mi.close()

    def active_calls(self) -> list[str]:
        return list(self._sessions)

    # ---- subscription -------------------------------------------------------------------

    def renew_after(self) -> float:
        """Renew a quarter of the lifetime (at most a minute) before it runs out, and at
        least every `refresh_max` seconds: a restarted OpenSIPS has forgotten every
        subscriber, and re-subscribing the same socket only refreshes its expiry."""
        before_expiry = self.expire - min(60.0, self.expire * 0.25)
        return max(0.5, min(before_expiry, self.refresh_max))

    async def _keep_subscribed(self) -> None:
        delay = self.retry_initial
        failures = 0
        while True:
            try:
                await self.mi.call("event_subscribe",
                                   [EVENT_NAME, self.event_socket, self.expire])
            except MiError as error:
                failures += 1
                level = logging.WARNING if failures in (1, 10) else logging.DEBUG
                log.log(level, "event_subscribe failed (try %d, next in %.1f s): %s",
                        failures, delay, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            if failures or not self.subscribed.is_set():
                log.info("subscribed to %s on %s for %d s", EVENT_NAME, self.event_socket,
                         self.expire)
            failures = 0
            delay = self.retry_initial
            self.subscriptions += 1
            self.subscribed.set()
            await asyncio.sleep(self.renew_after())

    # ---- events -------------------------------------------------------------------------

    def _on_event(self, event: UaSessionEvent) -> None:
        session = self._sessions.get(event.key)
        if event.event_type == "NEW":
            if session is not None:
                log.debug("duplicate NEW for %s ignored", event.key)
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
            if session is not None and session.task is not None and not session.task.done():
                session.task.cancel()  # new_call/update_call is moot now
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
            await self._reject(key, event.method, error.code, error.reason)
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
        if await self._reply(key, "INVITE", 200, body=answer.to_text()):
            session.answered = True
        else:
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
            # OpenSIPS answers the CANCEL itself but leaves the INVITE to us.
            await self._reply(event.key, "INVITE", 487, "Request Terminated")
        if session is not None:
            await self._notify_end(event.key, "cancelled" if event.method == "CANCEL"
                                   else event.method.lower() or "terminated")

    async def _notify_end(self, key: str, reason: str) -> None:
        assert self._handler is not None
        try:
            await self._handler.end_call(key, reason)
        except Exception:
            log.exception("end_call failed for %s", key)

    # ---- MI -----------------------------------------------------------------------------

    async def _reject(self, key: str, method: str, code: int, reason: str | None = None) -> None:
        self._sessions.pop(key, None)
        await self._reply(key, method or "INVITE", code, reason)

    async def _reply(self, key: str, method: str, code: int, reason: str | None = None,
                     body: str | None = None) -> bool:
        params: dict[str, Any] = {"key": key, "method": method, "code": code,
                                  "reason": reason or reason_for(code)}
        if body is not None:
            params["body"] = body
            params["content_type"] = CONTENT_TYPE_SDP
        try:
            await self.mi.call("ua_session_reply", params)
        except MiError as error:
            log.warning("ua_session_reply %d for %s failed: %s", code, key, error)
            return False
        return True

    async def hangup(self, call_id: str) -> None:
        session = self._sessions.pop(call_id, None)
        if session is None:
            log.info("hangup for %s: no such session (already ended)", call_id)
            return
        if not session.answered:
            # ua_session_terminate fails before the answer: reject the INVITE instead.
            if session.task is not None and not session.task.done():
                session.task.cancel()
            await self._reply(call_id, "INVITE", 480, "Temporarily Unavailable")
            return
        try:
            await self.mi.call("ua_session_terminate", {"key": call_id})
        except MiError as error:
            log.warning("ua_session_terminate for %s failed: %s", call_id, error)
