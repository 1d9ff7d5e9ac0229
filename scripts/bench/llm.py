"""LLM service: time to first token and tokens/s, over real gRPC on 127.0.0.1.

Starts `python -m llm_service` (the embedded demo model unless --model names
another) and measures, as the core would see it:

- time to first token: from sending Generate (system prompt + history + a demo
  question) to the first delta, median and p90 over --runs requests, one at a time;
- tokens/s: --tokens tokens per request (LLM_IGNORE_EOS=1 so every reply has that
  length), median over --long-runs requests, one at a time; and the aggregate rate
  with --concurrency requests at once (round-robin interleaved).

    .venv/bin/python scripts/bench/llm.py [--runs 50] [--tokens 256] [--long-runs 5]
        [--concurrency 4] [--model DIR_OR_HUB_ID] [--no-write]
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.bench.report import write_section  # noqa: E402
from tests.support.procs import (  # noqa: E402
    base_env,
    free_port,
    python_module,
    running,
    wait_serving,
)
from voiceai.llm.v1 import llm_pb2, llm_pb2_grpc  # noqa: E402

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


def run(args: argparse.Namespace) -> str:
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = base_env(LLM_PORT=str(port), LLM_IGNORE_EOS="1", LLM_MAX_ACTIVE=str(args.concurrency),
                   LLM_MAX_QUEUE="64", LLM_MODEL=args.model)
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

    model = args.model or "embedded demo model (2-layer GPT-2, 64 wide)"
    thread_note = "torch's default threads" if args.model else "one torch thread (the demo default)"
    ttft_median = statistics.median(client_ttft)
    verdict = "meets" if ttft_median <= TARGET_TTFT_MS else "misses"
    return "\n".join([
        f"Model: {model}; CPU, {thread_note}; each request carries a system prompt "
        f"and one earlier turn.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| time to first token, client (median / p90 of {args.runs}) | "
        f"{ttft_median:.1f} / {percentile(client_ttft, 0.9):.1f} ms |",
        f"| time to first token, server-reported (median) | "
        f"{statistics.median(server_ttft):.1f} ms |",
        f"| tokens/s, one request of {args.tokens} tokens (median of {args.long_runs}) | "
        f"{statistics.median(rates):.0f} |",
        f"| tokens/s in all, {args.concurrency} requests at once (round-robin) | "
        f"{aggregate:.0f} |",
        "",
        f"Target: first token <= {TARGET_TTFT_MS:.0f} ms: the median {verdict} it.",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--long-runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--model", default="", help="LLM_MODEL (default: the demo model)")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    body = run(args)
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('llm', 'LLM', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
