"""Silero VAD v6 on onnxruntime, one stream at a time (no torch).

The model is the `silero_vad_v6.onnx` that faster-whisper ships (and runs the same way
for its own `vad_filter`), so it costs no extra package. Its export takes a batch of
512-sample frames at 16 kHz, each prefixed with the 64 samples before it, and treats the
batch as time: one `run` for every frame the servicer handed over (~0.07 ms a frame),
with the LSTM state carried from one call to the next.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RATE = 16000
FRAME_SAMPLES = 512  # 32 ms: the model's only window at 16 kHz
FRAME_S = FRAME_SAMPLES / RATE
CONTEXT_SAMPLES = 64
STATE_SHAPE = (1, 1, 128)


def load_session(threads: int = 1) -> Any:
    """The shared inference session (thread-safe: each stream keeps its own state)."""
    import onnxruntime
    from faster_whisper.utils import get_assets_path

    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = threads
    options.log_severity_level = 4
    return onnxruntime.InferenceSession(f"{get_assets_path()}/silero_vad_v6.onnx",
                                        providers=["CPUExecutionProvider"],
                                        sess_options=options)


class SileroStream:
    """Speech probabilities of one stream's consecutive 32 ms frames."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._h = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """`frames`: float32 in [-1, 1], shape (n, FRAME_SAMPLES); one probability each."""
        if len(frames) == 0:
            return np.zeros(0, dtype=np.float32)
        previous = np.concatenate([self._context[None, :], frames[:-1, -CONTEXT_SAMPLES:]])
        batch = np.concatenate([previous, frames], axis=1)
        probs, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c})
        self._context = frames[-1, -CONTEXT_SAMPLES:].copy()
        return np.asarray(probs, dtype=np.float32).reshape(-1)
