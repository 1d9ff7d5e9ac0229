"""The embedded demo LLM: a tiny causal LM trained from a bundled dialogue file.

No package registry carries language-model weights, so the service builds its
default model itself: a byte-level BPE tokenizer trained on the dialogue file
(``tokenizers``), wrapped in ``PreTrainedTokenizerFast`` with a chat template,
and a two-layer GPT-2 trained until its greedy reply to every demo question is
exactly the intent's answer (checked by logit margin). Seeded, deterministic,
single-threaded, seconds on a CPU. The result is a normal ``save_pretrained``
directory, loaded by the same ``from_pretrained`` code as any hub model.

    python -m llm_service.demo_model build [--out DIR]    # prints the directory

The directory is ``cache_dir()/llm-demo-<hash of data + this file>``, so a
changed dialogue or trainer builds a new model and an unchanged one is reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_service.model_cache import build_once
from voice_common.paths import cache_dir

log = logging.getLogger(__name__)

DATA_FILE = Path(__file__).with_name("demo") / "bank_dialogue.json"
SEED = 1234
MAX_STEPS = 3000
CHECK_EVERY = 10
# Logit lead of each answer token over the runner-up before training stops.
MARGIN = 2.0
LEARNING_RATE = 3e-3

USER, ASSISTANT, END, PAD = "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"

# The demo answers one question at a time, like a front-desk FAQ: its template
# renders only the caller's last turn, lowercased and without punctuation (what a
# speech recogniser produces anyway). So a system prompt and earlier turns, which
# the core always sends, cannot change its replies. The service itself stays
# generic: it calls apply_chat_template like for any model with a template.
CHAT_TEMPLATE = (
    "{%- for message in messages if message['role'] == 'user' -%}"
    "{%- if loop.last -%}"
    + USER
    + "{{ message['content'] | lower | replace('?', '') | replace('!', '') | replace('.', '')"
    " | replace(',', '') | replace(\"'\", '') | trim }}"
    + ASSISTANT
    + "{%- endif -%}"
    "{%- endfor -%}"
)


@dataclass(frozen=True)
class Intent:
    name: str
    answer: str
    questions: tuple[str, ...]


def load_intents(path: Path = DATA_FILE) -> list[Intent]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [
        Intent(item["name"], item["answer"], tuple(item["questions"])) for item in data["intents"]
    ]


def build_hash(data_path: Path = DATA_FILE) -> str:
    """Identifies one build: the dialogue file and the trainer that reads it."""
    digest = hashlib.sha256()
    digest.update(data_path.read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def default_dir() -> Path:
    return cache_dir() / f"llm-demo-{build_hash()}"


def weights_hash(model_dir: Path) -> str:
    """SHA-256 over the saved tensors (names, dtypes, shapes, bytes): equal iff equal weights."""
    from safetensors import safe_open

    digest = hashlib.sha256()
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as handle:
        for name in sorted(handle.keys()):
            tensor = handle.get_tensor(name).contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _train_tokenizer(intents: list[Intent]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # Byte level: any caller text is encodable and decoding reproduces the answers exactly.
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=[PAD, USER, ASSISTANT, END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [intent.answer for intent in intents]
    corpus += [q.lower() for intent in intents for q in intent.questions]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=END,
        pad_token=PAD,
        additional_special_tokens=[USER, ASSISTANT],
    )
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.model_max_length = 1024
    return wrapped


def _examples(tokenizer: Any, intents: list[Intent]) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per question, rendered through the chat template."""
    examples = []
    end_id = tokenizer.convert_tokens_to_ids(END)
    for intent in intents:
        answer_ids = tokenizer.encode(intent.answer, add_special_tokens=False)
        for question in intent.questions:
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False,
                add_generation_prompt=True,
            )
            prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
            examples.append(([*prompt_ids, *answer_ids, end_id], len(prompt_ids)))
    return examples


def _answers_are_greedy(model: Any, inputs: Any, mask: Any, labels: Any) -> bool:
    """True when, at every answer position, the right token beats every other by MARGIN.

    Greedy decoding follows the teacher-forced path token by token, so this is
    exactly "each greedy reply is its answer" (then the end token), checked in one
    batched forward instead of a decoding loop. The margin keeps it true under the
    float noise of another machine, thread count or KV-cache path.
    """
    import torch

    model.eval()
    try:
        with torch.no_grad():
            logits = model(input_ids=inputs, attention_mask=mask).logits[:, :-1].float()
    finally:
        model.train()
    targets = labels[:, 1:]
    scored = targets != -100
    index = targets.clamp(min=0).unsqueeze(-1)
    right = logits.gather(-1, index).squeeze(-1)
    best_other = logits.scatter(-1, index, float("-inf")).amax(-1)
    return bool(((right - best_other >= MARGIN) | ~scored).all())


def train(out_dir: Path, data_path: Path = DATA_FILE) -> Path:
    """Train the demo model and tokenizer and save both into `out_dir`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    intents = load_intents(data_path)
    previous_threads = torch.get_num_threads()
    # One thread and deterministic kernels: the same bytes on every run (for one torch
    # version; another version may round differently, the answers stay exact).
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    try:
        tokenizer = _train_tokenizer(intents)
        examples = _examples(tokenizer, intents)
        config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=1024, n_embd=64, n_layer=2, n_head=4,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = GPT2LMHeadModel(config)
        width = max(len(ids) for ids, _ in examples)
        inputs = torch.full((len(examples), width), tokenizer.pad_token_id)
        labels = torch.full((len(examples), width), -100)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, (ids, prompt_len) in enumerate(examples):
            inputs[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
            # Learn the answers only: the questions are the caller's, not the model's.
            labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
        model.train()
        steps = 0
        while True:
            for _ in range(CHECK_EVERY):
                loss = model(input_ids=inputs, attention_mask=mask, labels=labels).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps += 1
            if _answers_are_greedy(model, inputs, mask, labels):
                break
            if steps >= MAX_STEPS:
                raise RuntimeError(f"demo model did not learn its answers in {steps} steps")
        model.eval()
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        log.info("demo LLM trained: %d examples, %d steps, loss %.4f, %.1f s -> %s",
                 len(examples), steps, float(loss.detach()), time.perf_counter() - started, out_dir)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(previous_threads)
    return out_dir


def ensure_built(out_dir: Path | None = None) -> Path:
    """The demo model's directory, trained first if it is not there yet."""
    target = out_dir or default_dir()
    return build_once(target, train)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_service.demo_model",
                                     description="Build the embedded demo LLM.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="train the demo model (skipped when already built)")
    build.add_argument("--out", type=Path, default=None,
                       help="output directory (default: the cache directory)")
    sub.add_parser("path", help="print the default directory")
    args = parser.parse_args(argv)
    if args.command == "path":
        print(default_dir())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    target = ensure_built(args.out)
    print(target)
    print(f"weights sha256 {weights_hash(target)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
