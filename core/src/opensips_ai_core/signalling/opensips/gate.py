"""The script's gate: whether OpenSIPS hands a new caller to the core or refuses it itself.

core/opensips/opensips.cfg answers a new INVITE with `503 Service Unavailable (no
core)` (`(draining)` while `$shv(ai_core)` is 2) and `Retry-After:
$shv(ai_retry_after)` while `$shv(ai_core)` is not 1, instead
of starting a B2B session that no core takes (the caller would hear only 100 Trying);
an OPTIONS probe gets the same 503 then, and 200 while the gate is open.
The shared variables start closed (0, 5 s, lease 0) with each OpenSIPS run; the core sets them
over MI `shv_set` (cfgutils):

- open just before each `event_subscribe` (the first, each renewal, and after an
  OpenSIPS restart, whose gate starts closed again); a caller who comes between the
  two raises a NEW nobody gets, and the orphan sweep after the subscription refuses it;
- closed when the core starts to drain (2), with Retry-After the drain's time left
  (the core is gone by then), and when it stops (0), before it unsubscribes.

The gate is a lease: before opening it the core writes `$shv(ai_lease)` (seconds,
`CORE_OPENSIPS_GATE_LEASE_S`) and renews it at every poll (every second) while it takes
calls or drains; the script's `timer_route[ai_gate_lease, 1]` takes a second off it
each second and, when it has run out, closes the gate itself (`ai_core` 0,
Retry-After 5). So a core that dies without closing it (SIGKILL, a hang, cut off from
MI) has its callers answered `503 (no core)` about the lease and two seconds on, not
handed to nobody; a restarted core opens it again.

While it believes the gate open the core reads it back at each poll (`shv_get`): a
closed one means a new OpenSIPS run that `uptime` could not tell apart (two starts
within one second print the same "Up since"), or a lease that ran out while the core
could not renew it: its event loop stalled (a long GC pause, a blocking call, the
process stopped) or MI did not answer. The core tells the two apart on its own
monotonic clock (`unrenewed`): a lease can only have run out if, since the gate was
last read open, `lease_s - 1` seconds or more passed between two of its confirmed lease
writes (or since the last one): the script's timer takes the first second off within a
second of a write. (Since the last read, not the last write: a renewal that comes after
the lapse is confirmed but reopens nothing.) Then the core says so, opens the gate
again, renews its subscription and checks its calls, without counting an OpenSIPS
restart; otherwise it is a restart (it opens the gate, re-subscribes and releases the
calls the new run does not hold).

The gate records which core opened it last (`$shv(ai_owner)`, a random id per core
process). A core closes it (drain, stop) only when it is its own or nobody's, and a
core that finds it closed by another (that core drained or stopped) opens it again
without taking that for a restart. B2B mode is still built for one core per OpenSIPS
(every subscriber gets every event; docs/opensips.md): this only keeps a core that
goes away from shutting the gate of one that stays.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import NamedTuple

from opensips_ai_core.signalling.opensips.mi import MiClient, MiError

log = logging.getLogger("signalling.opensips")

OPEN_VAR = "ai_core"                # $shv(ai_core): 1 open; 2 draining, 0 no core: closed
OPEN, DRAINING, NO_CORE = 1, 2, 0
RETRY_AFTER_VAR = "ai_retry_after"  # $shv(ai_retry_after): the 503's Retry-After (s)
# Retry-After once the core has stopped: its replacement is expected soon (the script's
# initial value too).
STOPPED_RETRY_AFTER_S = 5


OWNER_VAR = "ai_owner"              # $shv(ai_owner): the core that opened it last; 0: none
LEASE_VAR = "ai_lease"              # $shv(ai_lease): seconds left before the script closes
# The script's timer takes a second off the lease each second by read-modify-write, so a
# renewal written in between can be lost: the lease must outlast a few renewals.
MIN_LEASE_S = 3


class Unrenewed(NamedTuple):
    """The longest time no lease write of this core was confirmed, and when it began
    (both on the gate's monotonic clock)."""
    seconds: float
    since: float


class CallGate:
    def __init__(self, mi: MiClient, lease_s: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if lease_s < MIN_LEASE_S:
            raise ValueError(f"the gate's lease must be >= {MIN_LEASE_S} s, got {lease_s}")
        self.mi = mi
        self.lease_s = lease_s
        self.owner_id = secrets.randbelow(2**31 - 2) + 1  # this core, in $shv(ai_owner)
        self.renewals = 0    # lease renewals confirmed by OpenSIPS
        self._clock = clock
        self.renewed_at: float | None = None  # `clock` at the last confirmed lease write
        # The longest gap between confirmed lease writes since the gate was read open.
        self._longest_gap = Unrenewed(0.0, 0.0)
        self.seen_open = 0   # reads of the gate (shv_get) that found it open
        self.is_open: bool | None = None  # what OpenSIPS was last told; None: not known
        self.retry_after: int | None = None
        self.writes = 0      # confirmed by OpenSIPS
        self.tried = False   # written at least once (perhaps unconfirmed: it may be open)
        self._failing = False

    def unrenewed(self) -> Unrenewed | None:
        """The longest time since the gate was last read open that no lease write of
        this core was confirmed, when it was long enough for the script to close the gate
        (`lease_s - 1` s or more); else None."""
        if self.renewed_at is None:
            return None
        current = Unrenewed(self._clock() - self.renewed_at, self.renewed_at)
        longest = max(self._longest_gap, current)
        return longest if longest.seconds >= self.lease_s - 1 else None

    def _renewed(self) -> None:
        now = self._clock()
        if self.renewed_at is not None:
            self._longest_gap = max(self._longest_gap,
                                    Unrenewed(now - self.renewed_at, self.renewed_at))
        self.renewed_at = now

    def forget(self) -> None:
        """OpenSIPS restarted (or the lease lapsed): its gate is closed, whatever we wrote
        before."""
        self.is_open = None
        self._longest_gap = Unrenewed(0.0, 0.0)

    async def forgotten(self, timeout: float | None = None) -> bool:
        """True when OpenSIPS says the gate we opened is not open (a new run); False
        when it is, or when it does not say (no answer: nothing is concluded)."""
        try:
            result = await self.mi.call("shv_get", {"name": OPEN_VAR}, timeout=timeout)
        except MiError as error:
            if error.code != 404:  # 404: the variable is unknown, so not open
                return False
            result = None
        value = result.get("VAR", {}).get("value") if isinstance(result, dict) else None
        if value == OPEN:
            self._longest_gap = Unrenewed(0.0, 0.0)
            self.seen_open += 1
            return False
        self.is_open = None
        owner = await self._owner(timeout)
        if self._another_cores(owner):
            log.warning("OpenSIPS gate closed by another core (%s), which drains or has "
                        "stopped: opening it again", owner)
            return False
        return True

    async def _owner(self, timeout: float | None) -> int | None:
        """Who opened the gate last, None when OpenSIPS does not say."""
        try:
            result = await self.mi.call("shv_get", {"name": OWNER_VAR}, timeout=timeout)
        except MiError:
            return None
        value = result.get("VAR", {}).get("value") if isinstance(result, dict) else None
        return value if isinstance(value, int) else None

    def _another_cores(self, owner: int | None) -> bool:
        return owner is not None and owner not in (0, self.owner_id)

    async def renew(self, timeout: float | None = None) -> bool:
        """Renew the lease (every poll while the gate is open or draining): without it
        the script closes the gate `lease_s` seconds on."""
        try:
            await self.mi.call("shv_set", {"name": LEASE_VAR, "type": "int",
                                           "value": self.lease_s}, timeout=timeout)
        except MiError as error:
            log.debug("renewing the gate's lease failed (%s); trying again", error)
            return False
        self.renewals += 1
        self._renewed()
        return True

    async def open(self, timeout: float | None = None) -> bool:
        return await self._write(True, None, timeout)

    async def close(self, retry_after: int, *, draining: bool = False,
                    timeout: float | None = None) -> bool:
        """Closed: OpenSIPS answers 503 "(draining)" or "(no core)" with Retry-After;
        left as it is when another core opened it last (it takes the calls now)."""
        owner = await self._owner(timeout)
        if self._another_cores(owner):
            if self.is_open is not False:
                log.info("OpenSIPS gate left open: core %s opened it last and takes the "
                         "calls", owner)
            self.is_open = False
            return True
        return await self._write(False, retry_after, timeout,
                                 DRAINING if draining else NO_CORE)

    async def _write(self, is_open: bool, retry_after: int | None, timeout: float | None,
                     closed_as: int = NO_CORE) -> bool:
        self.tried = True
        try:
            if is_open or closed_as == DRAINING:
                # The lease first: the script closes a gate whose lease has run out.
                await self.mi.call("shv_set", {"name": LEASE_VAR, "type": "int",
                                               "value": self.lease_s}, timeout=timeout)
            if is_open:
                await self.mi.call("shv_set", {"name": OWNER_VAR, "type": "int",
                                               "value": self.owner_id}, timeout=timeout)
            if retry_after is not None:
                await self.mi.call("shv_set", {"name": RETRY_AFTER_VAR, "type": "int",
                                               "value": retry_after}, timeout=timeout)
            await self.mi.call("shv_set", {"name": OPEN_VAR, "type": "int",
                                           "value": OPEN if is_open else closed_as},
                               timeout=timeout)
        except MiError as error:
            if not self._failing:
                log.warning("shv_set %s=%d failed (%s): the script's gate is unknown; "
                            "trying again", OPEN_VAR, OPEN if is_open else closed_as, error)
            self._failing = True
            self.is_open = None
            return False
        if self._failing or self.is_open != is_open:
            log.info("OpenSIPS gate %s%s", "open: new callers come to this core" if is_open
                     else "closed: OpenSIPS answers new callers 503",
                     "" if retry_after is None else f" (Retry-After {retry_after})")
        self._failing = False
        if is_open or closed_as == DRAINING:
            self._renewed()
        self.is_open = is_open
        if retry_after is not None:
            self.retry_after = retry_after
        self.writes += 1
        return True
