"""UA sessions OpenSIPS holds that this core does not know: found and ended (docs/opensips.md).

OpenSIPS keeps its sessions when the core goes away (a crash, a deploy, a hot reload):
an answered caller then hears silence until `ua_default_timeout`, and a caller whose
INVITE arrived while no core was subscribed but the script's gate was open (a crashed
core's, or just before our subscription: gate.py) got only `100 Giving it a try` (its
NEW event went to nobody). So after every (re)subscription the backend lists OpenSIPS'
sessions, waits `grace` seconds for the events already on their way, and ends each
session it still does not know, by its state: a caller still waiting for an answer
gets 503 (then the session is deleted), a ringing outbound call is cancelled, an
answered one gets a BYE, a terminated one is deleted. One OpenSIPS serves one core in
B2B mode, so a session no core knows belongs to nobody.

How a `ua_session_list` entry names its key (seen on OpenSIPS 3.6.8): a UAS session's
key is its `to_tag`, a UAC session's (`ua_session_client_start`) its `callid`; either
way the key's local index (`B2B.<hash>.<local>.<time>.<random>`) is the entry's `dlg`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from opensips_ai_core.signalling.opensips import metrics
from opensips_ai_core.signalling.opensips.mi import MiClient, MiError

log = logging.getLogger("signalling.opensips.orphans")

KEY = re.compile(r"^B2B\.(\d+)\.(\d+)\.")
ANSWERED_FROM = 4      # b2b_entities states: 1-3 not answered yet, 4-6 answered,
TERMINATED_FROM = 7    # 7 terminated (rejected or cancelled, kept until the timeout)


@dataclass(frozen=True)
class ListedSession:
    """One `ua_session_list` entry: its key, which side OpenSIPS plays, its state."""

    key: str
    entity: str     # "UAS" (a caller's session) or "UAC" (ua_session_client_start)
    state: int

    @classmethod
    def from_entry(cls, entry: Any) -> ListedSession | None:
        if not isinstance(entry, dict) or not isinstance(entry.get("state"), int):
            return None
        for field, entity in (("to_tag", "UAS"), ("callid", "UAC")):
            value = entry.get(field)
            if not isinstance(value, str):
                continue
            match = KEY.match(value)
            if match and int(match.group(2)) == entry.get("dlg"):
                return cls(value, entity, entry["state"])
        return None


def listed_sessions(listing: Any) -> list[ListedSession] | None:
    """The sessions of a `ua_session_list` answer; None when it is not a list."""
    if not isinstance(listing, list):
        return None
    return [s for s in map(ListedSession.from_entry, listing) if s is not None]


class OrphanSweeper:
    """Ends the sessions OpenSIPS holds and `known()` does not name."""

    def __init__(self, mi: MiClient, known: Callable[[], Collection[str]],
                 grace: float = 1.0) -> None:
        self.mi = mi
        self.known = known
        self.grace = grace
        self.ended = 0
        self._running: asyncio.Task[int] | None = None

    def start(self) -> asyncio.Task[int] | None:
        """Sweep in the background, unless a sweep is already under way."""
        if self._running is not None and not self._running.done():
            return None
        self._running = asyncio.get_running_loop().create_task(self.sweep())
        return self._running

    async def stop(self) -> None:
        if self._running is not None:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)

    async def sweep(self) -> int:
        """List, wait out the events in flight, end what is still unknown; how many."""
        try:
            listing = listed_sessions(await self.mi.call("ua_session_list", {}))
        except MiError as error:
            log.warning("ua_session_list failed (%s): sessions not checked", error)
            return 0
        if not listing:
            return 0
        suspects = [s for s in listing if s.key not in self.known()]
        if not suspects:
            return 0
        await asyncio.sleep(self.grace)
        ended = 0
        for suspect in suspects:
            if suspect.key in self.known():
                continue  # its event arrived meanwhile
            session = await self._current(suspect.key)
            if session is not None and session.key not in self.known():
                ended += await self._end(session)
        if ended:
            log.warning("ended %d session(s) OpenSIPS held for no call of this core "
                        "(a previous core's, or a caller nobody was subscribed for)", ended)
        return ended

    async def _current(self, key: str) -> ListedSession | None:
        """This very session as OpenSIPS lists it now (keys are looked up by slot)."""
        try:
            entry = await self.mi.call("ua_session_list", {"key": key})
        except MiError:
            return None  # ended meanwhile (404)
        session = ListedSession.from_entry(entry)
        return session if session is not None and session.key == key else None

    async def _end(self, session: ListedSession) -> int:
        key = session.key
        try:
            if session.entity == "UAS" and session.state < ANSWERED_FROM:
                # The caller still waits for a final reply: refuse, then delete (state 7).
                await self.mi.call("ua_session_reply", {
                    "key": key, "method": "INVITE", "code": 503,
                    "reason": "Service Unavailable"})
            # A BYE when answered, a CANCEL for a ringing UAC session, and no message
            # at all (only the deletion) in the terminated state.
            await self.mi.call("ua_session_terminate", {"key": key})
        except MiError as error:
            log.warning("ending orphaned %s session %s (state %d) failed: %s",
                        session.entity, key, session.state, error)
            return 0
        log.info("ended orphaned %s session %s (state %d)", session.entity, key, session.state)
        metrics.ORPHANS_ENDED.inc()
        self.ended += 1
        return 1
