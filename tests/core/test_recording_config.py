"""The recording settings: the bot's `record_audio`, `save_transcript`,
`post_call_webhook` (file or BOT_* variables) and the core's CORE_RECORDINGS_DIR and
CORE_WEBHOOK_*: read as the core reads them, a bad value one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from opensips_ai_core.config import BotConfigError, CoreSettings, load_bot_config


def test_off_by_default_and_on_from_the_file_or_the_environment(tmp_path: Path) -> None:
    default = load_bot_config(None, environ={})
    assert (default.record_audio, default.save_transcript, default.post_call_webhook) \
        == (False, False, "")
    path = tmp_path / "bot.toml"
    path.write_text('[bot]\nrecord_audio = true\npost_call_webhook = "https://crm.test/x"\n')
    bot = load_bot_config(path, environ={"BOT_SAVE_TRANSCRIPT": "1"})
    assert (bot.record_audio, bot.save_transcript, bot.post_call_webhook) \
        == (True, True, "https://crm.test/x")


def test_a_webhook_that_is_not_an_http_url_is_refused_in_one_line() -> None:
    with pytest.raises(BotConfigError, match=r"BOT_POST_CALL_WEBHOOK='ftp://x' \(environment\)"):
        load_bot_config(None, environ={"BOT_POST_CALL_WEBHOOK": "ftp://x"})


def test_core_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORE_RECORDINGS_DIR", "/var/lib/calls")
    monkeypatch.setenv("CORE_WEBHOOK_URL", "http://127.0.0.1:9/ended")
    settings = CoreSettings()
    assert settings.recordings_dir == Path("/var/lib/calls")
    assert settings.webhook_url == "http://127.0.0.1:9/ended"
    assert (settings.webhook_attempts, settings.webhook_timeout_s) == (5, 10.0)
    monkeypatch.setenv("CORE_WEBHOOK_URL", "not a url")
    with pytest.raises(ValidationError):
        CoreSettings()
