"""Each process reads only the settings it uses: the gRPC server's belong to the services."""

from __future__ import annotations

from asr_service.settings import AsrSettings
from llm_service.settings import LlmSettings
from opensips_ai_core.config import CoreSettings
from tts_service.settings import TtsSettings
from voice_common.config import ProcessSettings, ServiceSettings

GRPC_SERVER_FIELDS = {"host", "port", "health_http_port"}


def test_the_core_has_no_grpc_server_settings() -> None:
    assert issubclass(CoreSettings, ProcessSettings)
    assert not issubclass(CoreSettings, ServiceSettings)
    assert not GRPC_SERVER_FIELDS & set(CoreSettings.model_fields)


def test_every_service_has_them_and_nothing_unread() -> None:
    for settings in (AsrSettings, LlmSettings, TtsSettings):
        assert set(settings.model_fields) >= GRPC_SERVER_FIELDS, settings
        # ServiceSettings.max_workers was read by nothing.
        assert "max_workers" not in settings.model_fields, settings


def test_the_core_still_reads_the_shared_process_settings(monkeypatch) -> None:
    monkeypatch.setenv("CORE_GRACE_PERIOD_S", "7")
    monkeypatch.setenv("CORE_NICE", "3")
    settings = CoreSettings()
    assert (settings.grace_period_s, settings.nice) == (7.0, 3)


def test_hot_reload_is_no_setting_but_the_launchers_switch() -> None:
    # Read by voice_common.launch before the service loads (tests/devenv/test_launch.py).
    for settings in (CoreSettings, AsrSettings, LlmSettings, TtsSettings):
        assert "hot_reload" not in settings.model_fields, settings
