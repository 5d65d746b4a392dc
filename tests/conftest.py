"""Shared fixtures: where the real-file corpus is, and skipping cleanly when a tool is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT / "testdata"


def corpus_dir() -> Path | None:
    """``$KIMAGEKIT_CORPUS``, else ``../shared/corpus`` beside the checkout (CI always has it)."""
    env = os.environ.get("KIMAGEKIT_CORPUS")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "corpus")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def corpus() -> Path:
    c = corpus_dir()
    if c is None:
        pytest.skip("real-file corpus not found (set KIMAGEKIT_CORPUS or place ../shared/corpus)")
    return c


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed, and CI must install it")
        pytest.skip(f"{name} is not installed")
    return path
