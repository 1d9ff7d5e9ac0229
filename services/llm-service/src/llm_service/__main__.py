"""Run the LLM service: python -m llm_service (settings from LLM_* variables)."""

from __future__ import annotations

import asyncio
import logging
import sys

import grpc

from llm_service import warm
from llm_service.engine import LanguageModel
from llm_service.knowledge import knowledge_settings
from llm_service.scheduler import RoundRobinScheduler
from llm_service.servicer import SERVICE_FULL_NAME, LanguageModelServicer
from llm_service.settings import SERVICE_NAME, LlmSettings
from voice_common.config import load_settings
from voice_common.runtime import ServiceDefinition, run_service
from voiceai.llm.v1 import llm_pb2_grpc

log = logging.getLogger("llm_service")


def _queue_warm_generation(model: LanguageModel, scheduler: RoundRobinScheduler) -> None:
    """Queue one short generation, not waited for: it runs on the scheduler after SERVING.

    It spares the first caller cold kernels, which for SmolLM2 is about 30 ms of CPU on
    the first token while the generation itself costs some 450 ms (measured): not worth
    holding SERVING back for. The first request of a call comes seconds after the
    service serves (a greeting and the caller's first sentence come first), and one that
    came sooner would share the round-robin scheduler with it for a few tokens.
    """
    scheduler.submit(warm.warm_up_job(model))


def main() -> int:
    settings = load_settings(LlmSettings)
    knowledge_settings()  # the knowledge's own LLM_* settings: a bad one exits 2 here
    kept = warm.take(settings)  # loaded by the development warm parent, if it did
    model = kept or LanguageModel(settings)
    scheduler = RoundRobinScheduler(model, settings.max_active, settings.max_queue)

    def register(server: grpc.aio.Server) -> list[str]:
        llm_pb2_grpc.add_LanguageModelServicer_to_server(
            LanguageModelServicer(settings, model, scheduler), server)
        return [SERVICE_FULL_NAME]

    async def warmup() -> None:
        # Building the demo model (first start) and loading take seconds: off the loop.
        if kept is None:
            await asyncio.to_thread(model.load)
        scheduler.start()
        if kept is not None and warm.warmed_up():
            log.info("warm-up generation already run by the warm parent's spare")
        else:
            await asyncio.to_thread(_queue_warm_generation, model, scheduler)

    async def close() -> None:
        await asyncio.to_thread(scheduler.stop)

    return run_service(ServiceDefinition(
        SERVICE_NAME, settings, register, warmup, close,
    ))


if __name__ == "__main__":
    sys.exit(main())
