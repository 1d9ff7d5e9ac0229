"""What the development warm parent keeps across hot reloads: the loaded model.

voice_common.warm_parent calls `preload()` in the parent (hot reload on) before it
forks a service child; the child's `__main__` asks `take(settings)` for the model. The
child gets it only while this module, the engine and everything they import are
byte-identical to their files (a save of one makes the parent start anew, loading with
the new code) and the model's files and the settings are what the parent loaded with.

The parent loads on the CPU only (a CUDA context does not survive a fork: with CUDA the
child loads its own) and with one torch thread (an OpenMP pool started in the parent
would not be carried into the child); the child's thread count is set back afterwards.

The first generation after a load is the service's warm-up (SmolLM2: about half a
second). `stage()` runs it in the spare child that the parent forks once the running
child serves (voice_common.warm_spare): the spare becomes the next save's child, and
`warmed_up()` tells its `__main__` that the model it took has already generated.
"""

from __future__ import annotations

import logging
from pathlib import Path

from llm_service.engine import GenerationJob, LanguageModel, Message, SamplingParams
from llm_service.settings import LlmSettings
from voice_common.config import load_settings

log = logging.getLogger("llm_service.warm")

_kept: tuple[LanguageModel, dict[str, object], tuple[tuple[str, int, int], ...]] | None = None
_generated = False  # the kept model ran its warm-up generation in this process


def model_files(path: str) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime) of the model directory's files: a rebuilt model differs."""
    root = Path(path)
    if not root.is_dir():
        return ()
    found = []
    for file in sorted(root.rglob("*")):
        if file.is_file():
            info = file.stat()
            found.append((str(file.relative_to(root)), info.st_size, info.st_mtime_ns))
    return tuple(found)


def _cuda_build() -> bool:
    import torch

    return torch.version.cuda is not None or torch.version.hip is not None


def preload() -> None:
    """Load the model the service would load, in the warm parent."""
    global _kept
    settings = load_settings(LlmSettings)
    if not settings.force_cpu and _cuda_build():
        log.info("warm parent: a CUDA build of torch; the model is loaded by each child")
        return
    import torch

    default_threads = torch.get_num_threads()  # reads the setting; starts no thread
    model = LanguageModel(settings.model_copy(update={"threads": 1}))
    model.load()
    model.settings = settings
    # What LanguageModel.load would have set in the child.
    torch.set_num_threads(settings.threads or (1 if not settings.model else default_threads))
    _kept = (model, settings.model_dump(), model_files(model.model_path))


def warm_up_job(model: LanguageModel) -> GenerationJob:
    """The service's warm-up: one short greedy generation, its output dropped."""
    return GenerationJob(prompt=model.render_prompt([Message("user", "hello")]),
                         emit=lambda _event: None, call_id="warm-up",
                         params=SamplingParams(max_new_tokens=4, temperature=0.0, top_p=0.0,
                                               seed=0, stop=()))


def warm_generation(model: LanguageModel) -> None:
    """The warm-up generation here and now (in the spare, without the scheduler)."""
    job = warm_up_job(model)
    model.start(job)
    while model.step(job) is None:
        pass


def stage() -> None:
    """In the warm parent's spare child: the warm-up generation of the parent's model."""
    global _generated
    if _kept is not None:
        warm_generation(_kept[0])
        _generated = True


def warmed_up() -> bool:
    """Whether the model `take()` gave has already generated in this process."""
    return _generated


def take(settings: LlmSettings) -> LanguageModel | None:
    """The parent's loaded model when it fits `settings` and its files are unchanged."""
    global _kept
    if _kept is None:
        return None
    model, loaded_with, files = _kept
    _kept = None  # one child owns it (the parent keeps its own copy)
    if loaded_with != settings.model_dump():
        log.info("warm model not used: the settings changed since the parent loaded it")
        return None
    if model_files(model.model_path) != files:
        log.info("warm model not used: %s changed since the parent loaded it",
                 model.model_path)
        return None
    log.info("model %s kept from the warm parent (no load)", model.model_path)
    return model
