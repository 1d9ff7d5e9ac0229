"""Which bot replies transfer the caller, and to which configured target."""

from __future__ import annotations

from pathlib import Path

from opensips_ai_core.config import BotConfig, load_bot_config
from opensips_ai_core.pipeline.transfer import strip_transfer_marker, transfer_target

ROOT = Path(__file__).resolve().parents[3]
TARGETS = {"advisers": "sip:advisers@10.0.0.1", "billing": "sip:billing@10.0.0.2"}


def bot(**fields: object) -> BotConfig:
    return BotConfig.model_validate({"transfer_to": TARGETS, **fields})


def test_the_demo_reply_transfers_to_the_advisers() -> None:
    demo = load_bot_config(ROOT / "core" / "bot.toml", {})
    reply = "Of course. Please stay on the line while I transfer you to one of our advisers."
    assert transfer_target(demo, reply) == demo.transfer_to["advisers"]
    assert transfer_target(demo, "Our branches open at nine.") is None


def test_marker_names_the_target_and_is_not_spoken() -> None:
    config = bot()
    assert transfer_target(config, "One moment. [transfer:billing]") == TARGETS["billing"]
    assert transfer_target(config, "One moment. [Transfer]") == TARGETS["advisers"]
    assert strip_transfer_marker(config, "One moment. [transfer:billing]") == "One moment."


def test_a_phrase_picks_the_target_the_reply_mentions() -> None:
    config = bot(transfer_phrases=("put you through",))
    assert transfer_target(config, "I'll put you through to billing.") == TARGETS["billing"]
    assert transfer_target(config, "I'll put you through.") == TARGETS["advisers"]


def test_no_targets_no_transfer_and_a_string_is_the_default_target() -> None:
    assert transfer_target(BotConfig(), "[transfer]") is None
    config = BotConfig.model_validate({"transfer_to": "sip:desk@example.com"})
    assert transfer_target(config, "[transfer]") == "sip:desk@example.com"
