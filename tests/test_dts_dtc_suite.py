"""dtc's own test sources (``tests/*.dts`` of the Debian source package, fetched by
scripts/fetch_artifacts.py, never committed) through kimagekit's DTS reader, both ways: with dtc
every tree is dtc's byte for byte; without it every tree is dtc's byte for byte or refused."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
from functools import cache
from pathlib import Path

import pytest
from conftest import ROOT, need_tool

from kimagekit import dts
from kimagekit.errors import ParseError

TIMEOUT = 1.5  # dtc 1.6.1 loops forever on one of 1.7's sources


def dtc_tests_dir() -> Path:
    spec = importlib.util.spec_from_file_location("fetch_artifacts",
                                                  ROOT / "scripts" / "fetch_artifacts.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    src: Path | None = mod.dtc_source_dir()
    if src is None:
        if os.environ.get("CI"):
            pytest.fail("dtc's source is missing: .ci/run must fetch it "
                        "(scripts/fetch_artifacts.py dtc-src)")
        pytest.skip("dtc's source not fetched (run scripts/fetch_artifacts.py dtc-src)")
    return src / "tests"


@cache
def reference(src: Path) -> bytes | str:
    """dtc's DTB, or why dtc gave none."""
    try:
        run = subprocess.run([need_tool("dtc"), "-q", "-I", "dts", "-O", "dtb", "-i",
                              str(src.parent), str(src)], capture_output=True, timeout=TIMEOUT,
                             check=False, cwd=src.parent)
    except subprocess.TimeoutExpired:
        return "timeout"
    return run.stdout if run.returncode == 0 else f"status {run.returncode}"


def sources() -> list[Path]:
    found = sorted(dtc_tests_dir().glob("*.dts"))
    assert len(found) > 100  # the whole suite, not a stray file
    return found


def test_dtc_suite_through_dtc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dts, "DTC_TIMEOUT", TIMEOUT)
    counts = {"identical": 0, "dtc-rejects": 0}
    for src in sources():
        ref = reference(src)
        if isinstance(ref, bytes):
            tree = dts.from_dts_file(src, dtc=need_tool("dtc"), include_dirs=[src.parent])
            assert tree.build() == ref, src.name
            counts["identical"] += 1
            continue
        with pytest.raises(ParseError) as info:
            dts.from_dts_file(src, dtc=need_tool("dtc"), include_dirs=[src.parent])
        err = info.value
        assert (err.fmt, err.field) == ("dts", "dtc"), src.name
        if ref == "timeout":
            assert err.message == f"dtc did not finish within {TIMEOUT:g} s"
        elif ref.startswith("status -"):
            sig = signal.Signals(-int(ref.removeprefix("status "))).name
            assert err.message.startswith(f"dtc died of {sig}: "), src.name
        else:
            assert err.message.startswith("dtc refused it: ") and "\n" not in err.message
        counts["dtc-rejects"] += 1
    print(f"dtc path: {counts}")
    assert counts["identical"] >= 100


def test_dtc_suite_without_dtc() -> None:
    counts = {"identical": 0, "refused": 0, "dtc-rejects": 0, "dtc-crashes-we-compile": 0}
    for src in sources():
        ref = reference(src)
        try:
            ours: bytes | ParseError = dts.from_dts_file(src, dtc=None).build()
        except ParseError as exc:
            ours = exc
        if isinstance(ref, bytes):
            if isinstance(ours, bytes):
                assert ours == ref, src.name  # never a different tree
                counts["identical"] += 1
            else:
                assert ours.fmt == "dts" and ours.field is not None, src.name
                assert ours.field.startswith("line ") or ours.field == "phandle", src.name
                counts["refused"] += 1
        elif (ref == "timeout" or ref.startswith("status -")) and isinstance(ours, bytes):
            counts["dtc-crashes-we-compile"] += 1  # dtc 1.6.1 crashes on these 1.7 sources
        else:
            assert isinstance(ours, ParseError), f"{src.name}: dtc rejects it ({ref})"
            counts["dtc-rejects"] += 1
    print(f"fallback: {counts}")
    assert counts["identical"] >= 40
