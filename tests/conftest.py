"""Shared fixtures: where the real-file corpus is, and skipping cleanly when a tool is missing."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from typing import Any

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


def need_module(name: str) -> Any:
    """Import a test-only Python dependency (pyproject's ``test`` extra): skipped when it is
    missing, a failure under CI, like :func:`need_tool`."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"Python module {name} is not installed, and CI must install it")
        pytest.skip(f"Python module {name} is not installed")


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


# --- ppc64le images built once per session from the real vmlinux (45 MB: seconds, not minutes) ---

PPC_IMA_LIST = "ima/binary/ibmtss-31443b7-ima-sha1.log"
PPC_CMDLINE = "console=hvc0 root=/dev/vda"


def ppc_initrd_bytes() -> bytes:
    """A patterned 200000-byte initrd: the corpus has no real one, and its content is opaque."""
    return bytes((i * 7 + i // 251) & 0xFF for i in range(200000))


def _build_ppc(tmp: Path, name: str, argv: list[str]) -> Path:
    from kimagekit.cli import main

    out = tmp / name
    rc = main(["build", "--arch", "ppc64le", "--no-purgatory", *argv, "-o", str(out)])
    assert rc == 0, f"build {name} failed: {rc}"
    return out


@pytest.fixture(scope="session")
def ppc_seed_image(ppc64le_vmlinux: Path, corpus: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 GiB pseries tree (with QEMU's reservations), initrd, IMA list, seed-style hand-over."""
    tmp = tmp_path_factory.mktemp("ppc")
    rd = tmp / "initrd.bin"
    rd.write_bytes(ppc_initrd_bytes())
    return _build_ppc(tmp, "seed.img", [
        "--kernel", str(ppc64le_vmlinux),
        "--dtb", str(corpus / "dtb" / "qemu-7.2-ppc64-pseries-smp4-4G-maxmem8G-initrd.dtb"),
        "--initrd", str(rd), "--cmdline", PPC_CMDLINE, "--ima", str(corpus / PPC_IMA_LIST),
        "--handover-style", "seed"])


@pytest.fixture(scope="session")
def ppc_ima_image(ppc64le_vmlinux: Path, corpus: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    """512 MiB pseries tree, no initrd, upstream-style announcement, hand-over hashed (4.10)."""
    tmp = tmp_path_factory.mktemp("ppc")
    return _build_ppc(tmp, "ima.img", [
        "--kernel", str(ppc64le_vmlinux),
        "--dtb", str(corpus / "dtb" / "qemu-7.2-ppc64-pseries.dtb"),
        "--ima", str(corpus / PPC_IMA_LIST), "--handover-style", "ima",
        "--digest-policy", "upstream-4.10"])
