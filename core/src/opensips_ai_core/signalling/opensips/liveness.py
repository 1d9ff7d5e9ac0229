"""Which OpenSIPS process answers MI: the run identity from `uptime` (docs/opensips.md).

OpenSIPS 3.x answers the core MI command `uptime` with
`{"Now": CTIME, "Up since": CTIME, "Up time": "N [sec]"}`. "Up since" is the
process's start time, the same for every answer of one run and new after a
restart; "Up time" going backwards also means a new run (two starts within the
same second print the same "Up since").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

UP_TIME = re.compile(r"^\s*(\d+)")
# "Up time" may lag or lead the local clock by a second at each end of the interval.
SLACK_S = 2.0


@dataclass(frozen=True)
class OpenSipsRun:
    """One answer to `uptime`: the run's start and its age, seen at local `seen_at`."""

    up_since: str
    up_time_s: int | None
    seen_at: float

    @classmethod
    def from_uptime(cls, result: Any, seen_at: float) -> OpenSipsRun | None:
        """Parse an `uptime` result; None when it carries no "Up since"."""
        if not isinstance(result, dict) or not isinstance(result.get("Up since"), str):
            return None
        match = UP_TIME.match(str(result.get("Up time", "")))
        return cls(result["Up since"], int(match.group(1)) if match else None, seen_at)

    def is_new_run_since(self, previous: OpenSipsRun) -> bool:
        if self.up_since != previous.up_since:
            return True
        if self.up_time_s is None or previous.up_time_s is None:
            return False
        expected = previous.up_time_s + (self.seen_at - previous.seen_at)
        return self.up_time_s < expected - SLACK_S
