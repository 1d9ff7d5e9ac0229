"""The bot's knowledge: facts from the config file rendered into the LLM's system prompt."""

from __future__ import annotations

from opensips_ai_core.config import DEFAULT_BOT_CONFIG, BotConfig, load_bot_config


def test_shipped_knowledge_goes_into_the_system_prompt():
    bot = load_bot_config(DEFAULT_BOT_CONFIG, environ={})
    prompt = bot.llm_system_prompt()
    assert prompt.startswith(bot.system_prompt.strip())
    assert "I can't help with that here" in bot.system_prompt
    facts = prompt.split("\n\nFacts:\n", 1)[1]
    assert facts == bot.knowledge.strip()
    # The facts a caller asks for most, and what the bot cannot do.
    assert "9 am to 5 pm" in facts
    assert "please say your account number" in facts  # the balance comes from get_balance
    assert "0800 123 456" in facts


def test_without_knowledge_the_system_prompt_is_unchanged():
    bot = BotConfig(system_prompt="Be brief.")
    assert bot.llm_system_prompt() == "Be brief."


def test_knowledge_from_the_environment():
    bot = load_bot_config(None, environ={"BOT_KNOWLEDGE": "- We sell only bicycles."})
    assert bot.llm_system_prompt().endswith("Facts:\n- We sell only bicycles.")
