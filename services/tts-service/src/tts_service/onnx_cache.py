"""A Piper voice's onnxruntime session from a graph optimised once and cached.

Optimising the graph is most of a voice's load (2.3 of 2.6 s on a busy 2-core machine;
0.3 s from the optimised file): every start and every hot reload paid it. The first
load writes the optimised graph as a by-product (`optimized_model_filepath`); later
loads read it with optimisation off, which onnxruntime's documentation calls offline
mode. The optimised graph may hold CPU-specific kernels (NCHWc layouts), so the cache
key holds the voice file (path, size, mtime), the onnxruntime version and the CPU's
model and flags. A cache that cannot be written or read is skipped: the voice loads
as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from voice_common.paths import cache_dir

log = logging.getLogger("tts_service.onnx_cache")

PROVIDERS = ["CPUExecutionProvider"]


def _cpu() -> str:
    """The CPU's model name and feature flags (what the optimised kernels depend on)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return os.uname().machine
    wanted = [line for line in lines if line.startswith(("model name", "flags"))]
    return "\n".join(dict.fromkeys(wanted))


def cached_path(model_path: Path) -> Path:
    import onnxruntime

    info = model_path.stat()
    key = hashlib.sha1("|".join([
        str(model_path.resolve()), str(info.st_size), str(info.st_mtime_ns),
        onnxruntime.__version__, _cpu()]).encode()).hexdigest()[:16]
    return cache_dir() / "onnx-optimized" / f"{model_path.stem}-{key}.onnx"


def session(model_path: Path, options: Any) -> Any:
    """An InferenceSession for `model_path` with `options` (a SessionOptions used for this
    session only): from the cached optimised graph when there is one."""
    import onnxruntime

    cached = cached_path(model_path)
    if cached.exists():
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            loaded = onnxruntime.InferenceSession(str(cached), sess_options=options,
                                                  providers=PROVIDERS)
        except Exception as err:  # a truncated or foreign file: optimise again
            log.warning("cached optimised graph %s unusable (%s); optimising again", cached, err)
            cached.unlink(missing_ok=True)
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        else:
            log.debug("voice %s from its cached optimised graph %s", model_path.name, cached)
            return loaded
    temp = cached.with_suffix(f".{os.getpid()}.tmp")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        options.optimized_model_filepath = str(temp)
    except OSError as err:
        log.debug("no cache for optimised graphs: %s", err)
    loaded = onnxruntime.InferenceSession(str(model_path), sess_options=options,
                                          providers=PROVIDERS)
    try:
        temp.replace(cached)  # atomic: a concurrent start reads a whole file or none
    except OSError as err:
        log.debug("optimised graph of %s not cached: %s", model_path.name, err)
    return loaded
