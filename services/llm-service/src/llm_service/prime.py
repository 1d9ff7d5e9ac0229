"""A prime (GenerateRequest.prime): a bot's first caller does not pay its cold costs.

The service's own warm-up (warm.py) cannot know a bot's prompt, and much of a turn's
first-use cost is keyed on it: the sentence encoder's vectors of the knowledge lines
and their questions (knowledge.py, fact_answer.py), of the refusal line's clauses and
the small-talk and tool phrasings (off_topic.py, tool_router.py), all cached after
their first use, and the model's KV cache of the prompt's shared prefix (engine.py's
PromptPrefixCache). On SmolLM2 the first knowledge answer after a start took about a
second, later ones 15 ms (docs/architecture.md). The core sends a prime shaped like
its bot's first turn when it sees the service ready (at its start, after a restart).

A turn's reply stops at the first gate that answers it; a prime runs every gate,
each past its own early answer, drops their verdicts, then runs the model over the
prompt for one token (which fills the prefix cache) and drops that token too.
"""

from __future__ import annotations

from llm_service.engine import LanguageModel, Message, SamplingParams, ToolSpec

FINISH_REASON = "primed"
CALL_ID = "prime"  # in the logs, for a prime that names no call


def run_gates(model: LanguageModel, messages: list[Message], tools: tuple[ToolSpec, ...],
              route_tools: bool) -> None:
    """Every gate over `messages`, as a turn would meet them, the verdicts dropped:
    what they encode stays cached. `route_tools`: the router would be asked (a model
    whose chat template ignores tools, servicer.py)."""
    if route_tools and model.router is not None and tools:
        model.router.route(messages, tools)
    if model.answers is not None:
        model.answers.answer(messages)
    if model.off_topic is not None:
        model.off_topic.repeat(messages)
        model.off_topic.check(messages, tools, every_step=True)


# The model's part of a prime: one greedy token over the prompt, whatever was asked.
PREFILL = SamplingParams(max_new_tokens=1, temperature=0.0, top_p=0.0, seed=0, stop=())
