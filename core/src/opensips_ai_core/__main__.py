"""`python -m opensips_ai_core`: run the core (settings from CORE_* and the bot config file)."""

from __future__ import annotations

import asyncio
import sys

from opensips_ai_core.config import (
    DEFAULT_BOT_CONFIG,
    CoreSettings,
    load_bot_config_or_exit,
)
from voice_common.config import load_settings
from voice_common.runtime import apply_nice, setup_logging

GIL_SWITCH_INTERVAL_S = 0.001


def main() -> int:
    settings = load_settings(CoreSettings, "opensips-ai-core")
    path = settings.bot_config or (DEFAULT_BOT_CONFIG if DEFAULT_BOT_CONFIG.exists() else None)
    bot = load_bot_config_or_exit(path)
    setup_logging(settings, "core")
    apply_nice(settings, "opensips-ai-core")
    from opensips_ai_core.app import CoreApp
    from opensips_ai_core.media.clock import MediaClock

    # The RTP clock thread (media/clock.py) waits for the GIL at most this long when the
    # event loop is busy, instead of the default 5 ms.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    MediaClock.realtime_priority = settings.media_clock_rt_priority

    async def run() -> int:
        # gRPC aio channels bind to the running loop: build the app inside it.
        return await CoreApp(settings, bot).run()

    try:
        return asyncio.run(run())
    except OSError as err:
        print(f"opensips-ai-core: cannot start: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
