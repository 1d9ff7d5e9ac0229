from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.procs import ROOT


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
