"""dev-call keys digits in (`--dtmf`, RFC 4733 telephone-events over real RTP): the demo's
balance flow from the command line, against a real core and the real services.

The services are the session's (`ai`: pocketsphinx, the demo LLM, which calls the bank
tools, Piper, with the dev stack's settings); the core is a subprocess on free loopback
ports whose tools go to the mock bank (`voice_testkit.bank`, a subprocess); dev-call runs
as scripts/dev-call.sh runs it and dials the core's direct SIP port.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from opensips_ai_core.devtools.dial import main
from tests.conftest import AiServices
from voice_testkit.bank import mock_bank
from voice_testkit.procs import LOOPBACK, base_env, python_module
from voice_testkit.stack import core

pytestmark = [pytest.mark.timeout(400)]

# core/bot.toml's demo bank flow; account 12345678 of devtools/mock_bank.py.
ASK_ACCOUNT = "Please tell me your account number, or key it in and press hash."
BALANCE = "One moment, please. Your balance is 1,250.40 dollars."


def test_dev_call_keys_the_account_number_in_after_the_first_turn(
        ai: AiServices, tmp_path: Path) -> None:
    with mock_bank(tmp_path) as bank, \
            core(tmp_path, ai.asr.target, ai.llm.target, ai.tts.target,
                 BOT_TOOLS_BASE_URL=bank) as running:
        result = subprocess.run(
            python_module("opensips_ai_core.devtools.dial", "--sip",
                          f"{LOOPBACK}:{running.sip_port}", "--http",
                          f"{LOOPBACK}:{running.http_port}", "--asr", ai.asr.target,
                          "--tts", ai.tts.target, "--dtmf", "12345678#", "--dtmf-after", "1",
                          "what is my balance"),
            env=base_env(), capture_output=True, text=True, timeout=300, check=False)
    out = result.stdout
    print(out)  # shown with -s, or when the test fails
    assert result.returncode == 0, out + result.stderr
    # Said, answered, keyed in (after that reply), answered from the bank, hung up.
    asked = out.index("caller says: what is my balance\n")
    question = out.index(f"bot: {ASK_ACCOUNT}\n")
    keyed = out.index("caller keys in: 12345678# (RFC 4733)\n")
    received = out.index("  core received DTMF: 12345678#\n")
    answer = out.index(f"bot: {BALANCE}\n")
    assert asked < question < keyed < received < answer < out.index("hung up\n")
    assert out.count("  turn latency: ") == 2


@pytest.mark.parametrize(("options", "complaint"), [
    (["--dtmf", "12x4"], "DTMF keys are 0123456789*#ABCD, not X"),
    (["--dtmf", "1", "--dtmf-after", "2"], "--dtmf-after 2: there are 1 utterances"),
])
def test_bad_dtmf_options_are_usage_errors(options: list[str], complaint: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*options, "hello"])
    assert exited.value.code == 2
    assert complaint in capsys.readouterr().err
