"""Which of the core's calls OpenSIPS no longer holds, asked call by call (docs/opensips.md).

Some ends raise no event: when `ua_default_timeout` expires, OpenSIPS 3.6.8 sends the
caller a BYE and deletes the session without telling the engine (seen on the wire), and
events are UDP datagrams, which can be lost. So the backend asks now and then, for each
answered call, `ua_session_list {key}`: a 404, a session of another key (keys are looked
up by slot) or a terminated one (state 7) means the call is over. One small MI call per
call rather than one listing of all: a listing of ~120 sessions outgrows a datagram.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from opensips_ai_core.signalling.opensips.mi import MiClient, MiError, MiTimeoutError
from opensips_ai_core.signalling.opensips.orphans import TERMINATED_FROM, ListedSession

log = logging.getLogger("signalling.opensips.audit")


async def sessions_gone(mi: MiClient, keys: Iterable[str]) -> list[str]:
    """The keys OpenSIPS no longer holds a live session for. Stops at an MI timeout
    (OpenSIPS silent: nothing can be told, the next audit asks again)."""
    gone = []
    for key in keys:
        try:
            entry = await mi.call("ua_session_list", {"key": key})
        except MiTimeoutError:
            break
        except MiError as error:
            if error.code in (400, 404):  # a key it cannot parse, or no such entity
                gone.append(key)
            else:
                log.debug("ua_session_list %s: %s", key, error)
            continue
        session = ListedSession.from_entry(entry)
        if session is None or session.key != key or session.state >= TERMINATED_FROM:
            gone.append(key)
    return gone
