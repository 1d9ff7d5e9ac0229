"""A bad environment stops the service at once: exit 2 and one line naming the variable."""

from __future__ import annotations

import subprocess

import pytest

from voice_testkit.procs import ROOT, base_env, python_module


@pytest.mark.parametrize(("env", "variable"), [
    ({"LLM_PORT": "abc"}, "LLM_PORT='abc'"),
    ({"LLM_MAX_QUEUE": "-1"}, "LLM_MAX_QUEUE='-1'"),
    ({"LLM_MAX_NEW_TOKENS": "513"}, "LLM_MAX_NEW_TOKENS='513'"),
    ({"LLM_THREADS": "many"}, "LLM_THREADS='many'"),
    ({"TORCH_FORCE_CPU": "maybe"}, "TORCH_FORCE_CPU='maybe'"),
    ({"LLM_MODEL": "/nonexistent/model-dir"}, "model directory does not exist"),
    ({"LLM_TOOL_ROUTE_MIN_SCORE": "1.5"}, "LLM_TOOL_ROUTE_MIN_SCORE='1.5'"),
    ({"LLM_FACT_ANSWER_MIN_SCORE": "sometimes"}, "LLM_FACT_ANSWER_MIN_SCORE='sometimes'"),
    ({"LLM_FACT_ANSWER_MARGIN": "-0.2"}, "LLM_FACT_ANSWER_MARGIN='-0.2'"),
    ({"LLM_SMALL_TALK_MIN_SCORE": "often"}, "LLM_SMALL_TALK_MIN_SCORE='often'"),
    ({"LLM_SMALL_TALK_MIN_SCORE": "1.5"}, "LLM_SMALL_TALK_MIN_SCORE='1.5'"),
    ({"LLM_FACT_QUESTION_MIN_SCORE": "1.5"}, "LLM_FACT_QUESTION_MIN_SCORE='1.5'"),
    ({"LLM_FACT_QUESTION_MIN_SCORE": "often"}, "LLM_FACT_QUESTION_MIN_SCORE='often'"),
    ({"LLM_REPEAT_MIN_SCORE": "2"}, "LLM_REPEAT_MIN_SCORE='2'"),
])
def test_bad_environment_exits_2_with_one_line(env, variable, tmp_path):
    result = subprocess.run(
        python_module("llm_service"), env=base_env(VOICE_CACHE_DIR=str(tmp_path), **env),
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("llm-service: configuration error: ")
    assert variable in lines[0]
