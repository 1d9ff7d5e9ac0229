"""The model and one generation's token loop: load, render the prompt, step one token.

Everything here runs on the scheduler's worker thread (or in `asyncio.to_thread`
for loading and prompt rendering), never on the event loop.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llm_service.detokenize import IncrementalDetokenizer, SentenceLimit, StopStringFilter
from llm_service.settings import LlmSettings

if TYPE_CHECKING:
    from llm_service.fact_answer import FactAnswerer
    from llm_service.knowledge import FactSelector
    from llm_service.off_topic import OffTopicGate
    from llm_service.tool_router import ToolRouter
from voice_common.devlogger import get_development_logger

log = logging.getLogger(__name__)
dlog = get_development_logger(__name__)

_TRUE = {"1", "true", "yes", "on"}
ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}
# Without a chat template the prompt is plain text; the model's next "User:" line
# would be it talking for the caller, so it ends the reply.
PLAIN_STOP = "\nUser:"


def offline() -> bool:
    """TRANSFORMERS_OFFLINE / HF_HUB_OFFLINE: load from local files only."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE
        for name in ("TRANSFORMERS_OFFLINE", "HF_HUB_OFFLINE")
    )


@dataclass(frozen=True)
class ToolCallRecord:
    """A tool call the assistant made earlier in the conversation."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant" | "tool"
    content: str
    tool_call_id: str = ""  # "tool": the call this result answers
    tool_calls: tuple[ToolCallRecord, ...] = ()  # "assistant": the calls it made


def chat_dict(message: Message) -> dict[str, Any]:
    """One message in the transformers chat format (tool calls as OpenAI-style functions)."""
    item: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_call_id:
        item["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        item["tool_calls"] = [
            {"id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
            for call in message.tool_calls
        ]
    return item


def tool_dict(tool: ToolSpec) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": tool.name, "description": tool.description, "parameters": tool.parameters}}


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float  # 0: greedy
    top_p: float  # 0 or 1: no nucleus filtering
    seed: int
    stop: tuple[str, ...]


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    text: str
    stop: tuple[str, ...]  # stops the prompt format itself needs


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    time_to_first_token_ms: float
    tokens_per_second: float
    prompt_tokens: int
    completion_tokens: int
    total_ms: float
    queue_ms: float
    finish_reason: str  # "stop" | "length" | "cancelled"


@dataclass(frozen=True)
class Failed:
    message: str


Event = Delta | Finished | Failed


@dataclass
class GenerationJob:
    """One request's state between token steps."""

    prompt: Prompt
    params: SamplingParams
    emit: Callable[[Event], None]  # thread-safe: hands an event to the RPC's task
    call_id: str = ""
    arrived: float = field(default_factory=time.perf_counter)
    admitted: float | None = None
    first_token_at: float | None = None
    past: Any = None
    next_input: Any = None
    generator: Any = None
    detokenizer: IncrementalDetokenizer | None = None
    stop_filter: StopStringFilter | None = None
    sentence_limit: SentenceLimit | None = None
    generated: list[int] = field(default_factory=list)  # the reply's token ids so far
    completion_tokens: int = 0
    cancelled: bool = False
    cancel_reason: str = ""
    finished: bool = False

    def cancel(self, reason: str) -> None:
        # A plain attribute write is atomic; the worker reads it before every step.
        self.cancel_reason = reason
        self.cancelled = True

    def finish(self, reason: str) -> Finished:
        now = time.perf_counter()
        admitted = self.admitted if self.admitted is not None else now
        first = self.first_token_at
        gen_s = max(now - admitted, 1e-9)
        done = Finished(
            time_to_first_token_ms=(first - self.arrived) * 1000.0 if first else 0.0,
            tokens_per_second=self.completion_tokens / gen_s if self.completion_tokens else 0.0,
            prompt_tokens=len(self.prompt.ids),
            completion_tokens=self.completion_tokens,
            total_ms=(now - self.arrived) * 1000.0,
            queue_ms=(admitted - self.arrived) * 1000.0,
            finish_reason=reason,
        )
        self.finished = True
        self.past = None  # free the KV cache now, not when the RPC object goes
        return done


@dataclass(frozen=True)
class Hygiene:
    """What keeps a small model's reply short and from looping (LLM_REPETITION_PENALTY,
    LLM_NO_REPEAT_NGRAM, LLM_MAX_SENTENCES); off for the demo model, whose replies are exact.

    Both penalties look at the reply's own tokens only, not the prompt's: the model
    must stay free to repeat the facts it was given.
    """

    repetition_penalty: float = 1.0
    no_repeat_ngram: int = 0
    max_sentences: int = 0

    @classmethod
    def for_settings(cls, settings: LlmSettings) -> Hygiene:
        from llm_service.models import uses_demo

        # LLM_IGNORE_EOS measures the raw model (load tests, tokens/s): nothing cuts it short.
        if uses_demo(settings.model) or settings.ignore_eos:
            return cls()
        return cls(settings.repetition_penalty, settings.no_repeat_ngram,
                   settings.max_sentences)

    def apply(self, logits: Any, generated: list[int]) -> Any:
        """The next token's logits with repeats penalised (transformers' own processors)."""
        if not generated or (self.repetition_penalty == 1.0 and self.no_repeat_ngram <= 0):
            return logits
        import torch
        from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

        ids = torch.tensor([generated], device=logits.device)
        scores = logits.unsqueeze(0)
        if self.repetition_penalty != 1.0:
            scores = RepetitionPenaltyLogitsProcessor(self.repetition_penalty)(ids, scores)
        if self.no_repeat_ngram > 0:
            scores = NoRepeatNGramLogitsProcessor(self.no_repeat_ngram)(ids, scores)
        return scores[0]


class PromptPrefixCache:
    """The KV caches of the last prompts the model ran, for a next prompt that starts the
    same way: every turn of a bot repeats its system prompt (instructions, then the facts
    narrowed to the turn) and the conversation so far, so only what differs is run again
    (on the evaluation set: prefill p50 440 ms instead of 890 ms on a busy 2-core
    machine; the replies token for token the same).

    Only the generation worker thread uses it. A request gets a copy of the entry that
    shares most tokens with it, cropped to them (at least `MIN_SHARED`, and never the
    whole prompt: its last token must run to give the first token's logits).
    """

    MIN_SHARED = 16
    # A few prompts: one per fact narrowing a bot's turns go through (~7 MB each for
    # SmolLM2-135M at 150 tokens).
    ENTRIES = 4

    def __init__(self) -> None:
        self._entries: list[tuple[list[int], Any]] = []  # newest last

    def keep(self, ids: list[int], past: Any) -> None:
        import copy

        if not getattr(past, "is_croppable", False):
            return
        self._entries = [e for e in self._entries if e[0] != ids][-(self.ENTRIES - 1):]
        self._entries.append((list(ids), copy.deepcopy(past)))

    def take(self, ids: list[int]) -> tuple[int, Any] | None:
        """(tokens reused, a KV cache holding them), or None when too little is shared."""
        import copy

        best, best_shared = None, 0
        for cached_ids, past in self._entries:
            shared = 0
            for cached, wanted in zip(cached_ids, ids[:-1], strict=False):
                if cached != wanted:
                    break
                shared += 1
            if shared > best_shared:
                best, best_shared = (cached_ids, past), shared
        if best is None or best_shared < self.MIN_SHARED:
            return None
        cached_ids, past = best
        past = copy.deepcopy(past)
        if best_shared < len(cached_ids):
            past.crop(best_shared - len(cached_ids))  # a negative crop drops from the end
        return best_shared, past


class LanguageModel:
    """A transformers causal LM and its tokenizer, with a one-token step function."""

    def __init__(self, settings: LlmSettings) -> None:
        self.settings = settings
        self.model: Any = None
        self.tokenizer: Any = None
        self.device: Any = None
        self.model_path = ""
        self.max_positions: int | None = None
        self.eos_ids: set[int] = set()
        # transformers 5.x names the KV cache argument `cache`; 4.x `past_key_values`.
        self.cache_arg = "past_key_values"
        self.hygiene = Hygiene.for_settings(settings)
        self.facts: FactSelector | None = None  # narrows the system prompt's facts
        self.router: ToolRouter | None = None  # tool calls by meaning (tool_router.py)
        self.answers: FactAnswerer | None = None  # knowledge answers (fact_answer.py)
        self.off_topic: OffTopicGate | None = None  # refusals (off_topic.py)
        self._prefix: PromptPrefixCache | None = None  # set at load (a cache the model can crop)

    def load(self) -> None:
        """Resolve LLM_MODEL (building a packaged model if needed), then from_pretrained."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        started = time.perf_counter()
        from llm_service.knowledge import load_encoder, load_selector
        from llm_service.models import is_packaged, resolve, uses_demo

        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        elif is_packaged(self.settings.model):
            # The packaged models are small (the demo's matrices are 64 wide, SmolLM2's
            # 576): on a busy 2-core machine a second thread mostly waits for the other
            # (measured: demo 10x, SmolLM2 4-5x slower per reply with two threads).
            torch.set_num_threads(1)
        use_cuda = torch.cuda.is_available() and not self.settings.force_cpu
        self.device = torch.device("cuda" if use_cuda else "cpu")
        source = resolve(self.settings.model)
        local_only = offline()
        self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        # Half precision only where it is fast; CPU matmuls want float32.
        dtype = "auto" if use_cuda else torch.float32
        model = AutoModelForCausalLM.from_pretrained(source, local_files_only=local_only,
                                                     dtype=dtype)
        self.model = model.to(self.device).eval()
        if not uses_demo(self.settings.model) and (self.settings.facts_top_k > 0
                                                   or self.settings.tool_route_min_score > 0
                                                   or self.settings.fact_answer_min_score > 0):
            from llm_service.fact_answer import FactAnswerer
            from llm_service.tool_router import ToolRouter

            encoder = load_encoder()  # one all-MiniLM for all three
            self.facts = load_selector(self.settings.facts_top_k, self.settings.facts_min_score,
                                       encoder)
            if encoder is not None and self.settings.tool_route_min_score > 0:
                self.router = ToolRouter(encoder, self.settings.tool_route_min_score)
            if encoder is not None and self.settings.fact_answer_min_score > 0:
                self.answers = FactAnswerer(encoder, self.settings.fact_answer_min_score,
                                            self.settings.fact_answer_margin)
            if encoder is not None and self.answers is not None \
                    and self.settings.small_talk_min_score > 0:
                from llm_service.off_topic import OffTopicGate

                self.off_topic = OffTopicGate(encoder, self.settings.small_talk_min_score,
                                              self.settings.fact_answer_min_score)
        if "cache" in inspect.signature(self.model.forward).parameters:
            self.cache_arg = "cache"
        if not uses_demo(self.settings.model):
            self._prefix = PromptPrefixCache()
        self.model_path = source
        config = self.model.config
        self.max_positions = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None)
        eos = self.model.generation_config.eos_token_id
        eos_list = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {int(i) for i in eos_list if i is not None}
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(int(self.tokenizer.eos_token_id))
        log.info("model %s loaded on %s (%d threads, %.1f M parameters) in %.0f ms",
                 source, self.device, torch.get_num_threads(),
                 sum(p.numel() for p in self.model.parameters()) / 1e6,
                 (time.perf_counter() - started) * 1000)

    def render_prompt(self, messages: list[Message], tools: tuple[ToolSpec, ...] = ()
                      ) -> Prompt:
        """The token ids to feed: the tokenizer's chat template, else a plain dialogue.

        The system message's facts are narrowed to the caller's turn first (knowledge.py).

        Tools go to the template (`tools=`); a template that ignores them renders
        the prompt without them, and the model then simply does not call any.
        """
        tokenizer = self.tokenizer
        if self.facts is not None:
            messages = self.facts.narrow(messages)
        chat = [chat_dict(m) for m in messages]
        if getattr(tokenizer, "chat_template", None):
            extra: dict[str, Any] = {"tools": [tool_dict(t) for t in tools]} if tools else {}
            text = tokenizer.apply_chat_template(chat, tokenize=False,
                                                 add_generation_prompt=True, **extra)
            # The template writes any BOS itself; adding special tokens would double it.
            ids = tokenizer.encode(text, add_special_tokens=False)
            return Prompt(ids=list(ids), text=text, stop=())
        lines = [f"{ROLE_NAMES[m.role]}: {m.content}" for m in messages]
        text = "\n".join([*lines, "Assistant:"])
        ids = tokenizer.encode(text, add_special_tokens=True)
        return Prompt(ids=list(ids), text=text, stop=(PLAIN_STOP,))

    def start(self, job: GenerationJob) -> None:
        import torch

        job.admitted = time.perf_counter()
        reused = self._prefix.take(job.prompt.ids) if self._prefix is not None else None
        if reused is not None:
            count, job.past = reused
            job.next_input = torch.tensor([job.prompt.ids[count:]], device=self.device)
            log.debug("prompt prefix reused (%s): %d of %d tokens", job.call_id or "-", count,
                      len(job.prompt.ids))
        else:
            job.next_input = torch.tensor([job.prompt.ids], device=self.device)
        job.detokenizer = IncrementalDetokenizer(self.tokenizer)
        job.stop_filter = StopStringFilter([*job.params.stop, *job.prompt.stop])
        job.sentence_limit = SentenceLimit(self.hygiene.max_sentences)
        if job.params.temperature > 0:
            job.generator = torch.Generator(device=self.device)
            job.generator.manual_seed(job.params.seed & 0xFFFF_FFFF_FFFF_FFFF)

    def _choose(self, logits: Any, job: GenerationJob) -> int:
        import torch

        params = job.params
        logits = self.hygiene.apply(logits, job.generated)
        if params.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float() / params.temperature, dim=-1)
        if 0 < params.top_p < 1:
            sorted_probs, order = torch.sort(probs, descending=True)
            # Keep the smallest set of tokens whose mass reaches top_p (at least one).
            outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > params.top_p
            sorted_probs[outside] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=job.generator))

    def step(self, job: GenerationJob) -> Finished | None:
        """Produce one token (the first call also runs the prompt); emit text; maybe finish."""
        import torch

        started = time.perf_counter()
        with torch.inference_mode():
            out = self.model(input_ids=job.next_input, use_cache=True,
                             **{self.cache_arg: job.past})
        job.past = out[self.cache_arg]
        if job.first_token_at is None and self._prefix is not None:
            self._prefix.keep(job.prompt.ids, job.past)  # the prompt's KV, before any reply
        token = self._choose(out.logits[0, -1], job)
        job.next_input = torch.tensor([[token]], device=self.device)
        job.generated.append(token)
        job.completion_tokens += 1
        if job.first_token_at is None:
            job.first_token_at = time.perf_counter()
        dlog.debug_performance(f"token {job.completion_tokens} ({job.call_id or '-'})",
                               started, time.perf_counter())
        assert job.detokenizer is not None and job.stop_filter is not None
        if token in self.eos_ids and not self.settings.ignore_eos:
            job.completion_tokens -= 1  # the end marker is not part of the reply
            self._emit_text(job, job.detokenizer.flush(), final=True)
            return job.finish("stop")
        self._emit_text(job, job.detokenizer.push(token))
        if job.stop_filter.stopped or (job.sentence_limit and job.sentence_limit.stopped):
            return job.finish("stop")
        limit = job.params.max_new_tokens
        if self.max_positions:
            limit = min(limit, self.max_positions - len(job.prompt.ids))
        if job.completion_tokens >= limit:
            self._emit_text(job, job.detokenizer.flush(), final=True)
            return job.finish("stop" if job.stop_filter.stopped else "length")
        return None

    def _emit_text(self, job: GenerationJob, text: str, final: bool = False) -> None:
        assert job.stop_filter is not None and job.sentence_limit is not None
        out = job.stop_filter.feed(text)
        if final and not job.stop_filter.stopped:
            out += job.stop_filter.flush()
        out = job.sentence_limit.feed(out)
        if out:
            job.emit(Delta(out))
