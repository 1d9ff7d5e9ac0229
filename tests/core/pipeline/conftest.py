"""The `make_call` fixture: a `Call` on the fakes (tests/core/pipeline/harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from tests.core.pipeline.harness import Harness, new_call


@pytest.fixture
async def make_call() -> AsyncIterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(*args: object, **kwargs: object) -> Harness:
        harness = new_call(*args, **kwargs)  # type: ignore[arg-type]
        made.append(harness)
        return harness

    yield make
    for harness in made:
        await harness.call.close("test over")
