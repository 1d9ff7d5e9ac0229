"""The bot's config file: TOML or YAML, BOT_* overrides, clear errors."""

from __future__ import annotations

import subprocess

import pytest

from opensips_ai_core.config import DEFAULT_BOT_CONFIG, BotConfigError, load_bot_config
from voice_testkit.procs import base_env, python_module


def test_shipped_bot_config_loads():
    bot = load_bot_config(DEFAULT_BOT_CONFIG, environ={})
    assert bot.greeting.startswith("Hello")
    assert "goodbye" in bot.goodbye_phrases


def test_yaml_file_and_env_overrides(tmp_path):
    path = tmp_path / "bot.yaml"
    path.write_text("greeting: Hi there\nmax_call_duration_s: 42\n")
    bot = load_bot_config(path, environ={"BOT_SILENCE_TIMEOUT_S": "7",
                                         "BOT_GOODBYE_PHRASES": "ciao, see you"})
    assert bot.greeting == "Hi there"
    assert bot.max_call_duration_s == 42
    assert bot.silence_timeout_s == 7
    assert bot.goodbye_phrases == ("ciao", "see you")


@pytest.mark.parametrize(
    ("content", "suffix", "expected"),
    [
        ("greeting = 'unterminated", ".toml", "not valid TOML"),
        ("greeting: [unclosed", ".yaml", "not valid YAML"),
        ("[bot]\nmax_call_duration_s = -1\n", ".toml", "max_call_duration_s"),
        ("[bot]\ngreetng = 'typo'\n", ".toml", "greetng: Extra inputs are not permitted"),
        ("- a list\n", ".yaml", "expected a table"),
    ],
)
def test_bad_file_is_a_clear_error(tmp_path, content, suffix, expected):
    path = tmp_path / f"bot{suffix}"
    path.write_text(content)
    with pytest.raises(BotConfigError) as err:
        load_bot_config(path, environ={})
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_core_refuses_to_start_with_a_bad_bot_file(tmp_path):
    path = tmp_path / "bot.toml"
    path.write_text("[bot]\nbarge_in_min_words = 'many'\n")
    result = subprocess.run(python_module("opensips_ai_core"),
                            env=base_env(CORE_BOT_CONFIG=str(path)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "barge_in_min_words" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_core_refuses_a_missing_bot_file_path():
    result = subprocess.run(python_module("opensips_ai_core"),
                            env=base_env(CORE_BOT_CONFIG="/nonexistent/bot.toml"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "CORE_BOT_CONFIG='/nonexistent/bot.toml': path does not exist" in result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CORE_SIP_PORT": "abc"}, "CORE_SIP_PORT='abc': Input should be a valid integer"),
        ({"CORE_SIGNALLING": "h323"}, "CORE_SIGNALLING='h323'"),
        ({"CORE_RTP_HOST": "0.0.0.0"}, "CORE_PUBLIC_IP must be set"),
        ({"CORE_RTP_PORT_MIN": "40000", "CORE_RTP_PORT_MAX": "39000"},
         "CORE_RTP_PORT_MIN (40000) is above CORE_RTP_PORT_MAX (39000)"),
        ({"OPENSIPS_MI_PORT": "0"}, "OPENSIPS_MI_PORT='0'"),
        ({"CORE_MEDIA_CLOCK_RT_PRIORITY": "100"},
         "CORE_MEDIA_CLOCK_RT_PRIORITY='100': Input should be less than or equal to 99"),
        ({"CORE_NICE": "-1"}, "CORE_NICE='-1'"),
    ],
)
def test_core_bad_environment_is_one_line_exit_2(env, expected):
    result = subprocess.run(python_module("opensips_ai_core"), env=base_env(**env),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opensips-ai-core: configuration error: ")
    assert expected in lines[0], lines[0]
