"""End of turn: smart-turn v3.2 (CPU ONNX) says whether a pause ends the caller's turn.

A fixed silence either cuts "I would like to check my, um, ..." short or makes every
finished sentence wait. smart-turn looks at the last 8 s of the utterance (Whisper
log-mel features, waveform normalised first) and gives P(the turn is complete): the
Whisper engine ends the utterance soon after a complete sentence and waits longer
after a hesitation or an unfinished phrase.

The model (8.7 MB, BSD-2-Clause) ships inside the `pipecat-ai` wheel. Installing
pipecat-ai would pull ~25 packages (numba, openai, an older soxr pin) for one file, so
`python -m asr_service.engines.end_of_turn fetch` downloads that wheel once with pip
(no dependencies), checks the file's SHA-256 and keeps it in the cache directory.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from voice_common.paths import cache_dir

MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
MODEL_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
WHEEL = "pipecat-ai==1.14.0"
WHEEL_MEMBER = f"pipecat/audio/turn/smart_turn/data/{MODEL_FILE}"
RATE = 16000
WINDOW_SAMPLES = 8 * RATE  # the model sees the last 8 s, left-padded with silence
NORMALISE_EPS = 1e-7


# A transcript that ends a sentence (text_ends_turn) needs only this P(complete): Whisper's
# punctuation is a second opinion, not the only one ("I think." at a hesitation: P 0.03).
TEXT_COMPLETE_THRESHOLD = 0.2
# Last words no finished sentence has ("I need to um", "my account number is.").
_SENTENCE_END = re.compile(r"(?<![.…])[.?!][\"')\]]*$")
_OPEN_ENDINGS = frozenset({
    "um", "uh", "er", "erm", "hmm", "mm", "ah", "eh", "like", "so", "and", "or", "but",
    "because", "if", "to", "the", "a", "an", "my", "your", "of", "for", "with", "is", "are",
    "was", "in", "on", "at", "from", "that", "which", "then",
})


def text_ends_turn(text: str) -> bool:
    """Whisper ended the transcript with a sentence's end (not "...", "," or a filler).

    smart-turn hears prosody only and was unsure of finished sentences spoken by the
    evaluation set's espeak-ng voices (P 0.30-0.38 for "I would like to open a new
    savings account."): each waited ASR_TURN_INCOMPLETE_SILENCE_S (1.5 s). Whisper
    writes "I was wondering if..." or "I need to um" at a hesitation, "?" after a
    question; with such a transcript P(complete) >= TEXT_COMPLETE_THRESHOLD ends the turn.
    """
    stripped = text.strip()
    if not _SENTENCE_END.search(stripped):
        return False
    words = re.findall(r"[\w']+", stripped.lower())
    return bool(words) and words[-1] not in _OPEN_ENDINGS


def default_model_path() -> Path:
    return cache_dir() / MODEL_FILE


class TurnModelError(ValueError):
    """The end-of-turn model file is missing or not a usable ONNX model."""


class SmartTurn:
    """The loaded model; `complete_probability` may be called from any thread."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime
        from faster_whisper.feature_extractor import FeatureExtractor

        if not path.is_file():
            raise TurnModelError(f"end-of-turn model '{path}' does not exist")
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self._session: Any = onnxruntime.InferenceSession(
                str(path), providers=["CPUExecutionProvider"], sess_options=options)
        except Exception as err:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise TurnModelError(f"end-of-turn model '{path}' cannot be loaded: "
                                 f"{str(err).splitlines()[0]}") from err
        names = [i.name for i in self._session.get_inputs()]
        if names != ["input_features"]:
            raise TurnModelError(f"end-of-turn model '{path}': inputs {names}, expected "
                                 "['input_features'] (a smart-turn v3 model)")
        self.path = path
        # The same 80-bin log-mel as the Whisper feature extractor smart-turn was trained on.
        self._features = FeatureExtractor(feature_size=80)

    def complete_probability(self, audio: np.ndarray) -> float:
        """P(turn complete) for float32 16 kHz audio ending now."""
        window = audio[-WINDOW_SAMPLES:].astype(np.float32)
        window = np.pad(window, (WINDOW_SAMPLES - len(window), 0))
        window = (window - window.mean()) / np.sqrt(window.var() + NORMALISE_EPS)
        features = self._features(window, padding=0)[:, :WINDOW_SAMPLES // 160]
        output = self._session.run(None, {"input_features": features[None].astype(np.float32)})
        return float(np.asarray(output[0]).reshape(-1)[0])


def fetch(target: Path) -> Path:
    """Download the pipecat-ai wheel with pip (no dependencies) and keep the model file."""
    if target.is_file() and _sha256(target) == MODEL_SHA256:
        return target
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary", ":all:", "-d", scratch, WHEEL], check=True)
        wheel = next(Path(scratch).glob("pipecat_ai-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(WHEEL_MEMBER)
    if hashlib.sha256(data).hexdigest() != MODEL_SHA256:
        raise TurnModelError(f"{WHEEL}: {MODEL_FILE} has an unexpected SHA-256")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)  # atomic: a reader never sees half a model
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asr_service.engines.end_of_turn",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("fetch", help=f"put {MODEL_FILE} into the cache (once)")
    get.add_argument("--to", type=Path, default=None, help="target file (default: the cache)")
    args = parser.parse_args(argv)
    path = fetch(args.to or default_model_path())
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
