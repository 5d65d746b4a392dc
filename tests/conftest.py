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


def debian_artifact(name: str) -> Path:
    """A real Debian kernel unpacked by ``scripts/fetch_artifacts.py`` (which ``.ci/run`` runs);
    skipped outside CI when it has not been fetched, a failure under CI."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_artifacts",
                                                  ROOT / "scripts" / "fetch_artifacts.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path: Path = mod.artifact_path(name)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{name} missing: .ci/run must fetch it (scripts/fetch_artifacts.py)")
        pytest.skip(f"{name} not fetched (run scripts/fetch_artifacts.py)")
    return path


@pytest.fixture(scope="session")
def ppc64le_vmlinux() -> Path:
    return debian_artifact("ppc64le-vmlinux")


@pytest.fixture(scope="session")
def amd64_vmlinuz() -> Path:
    return debian_artifact("amd64-vmlinuz")
