"""The dtc run itself: its time and output bounded, its death reported, one line each (a stand-in
dtc makes each case happen whatever dtc is installed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimagekit import dts
from kimagekit.errors import ParseError, UsageError

SOURCE = "/dts-v1/;\n/ {\n};\n"


def fake_dtc(tmp_path: Path, body: str) -> str:
    """A script taking dtc's arguments; ``$out`` is its -o file."""
    path = tmp_path / "fake-dtc"
    path.write_text("#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = -o ] && out=$2; shift; done\n"
                    + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_run_time_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dts, "DTC_TIMEOUT", 0.5)
    with pytest.raises(ParseError) as info:
        dts.from_dts(SOURCE, dtc=fake_dtc(tmp_path, "exec sleep 30"))
    assert str(info.value) == "dts: dtc: dtc did not finish within 0.5 s"


def test_output_size_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dts, "DTC_MAX_OUTPUT", 4096)
    with pytest.raises(ParseError) as info:
        dts.from_dts(SOURCE, dtc=fake_dtc(tmp_path, 'exec head -c 100000 /dev/zero > "$out"'))
    assert str(info.value) == "dts: dtc: dtc's output is larger than 4096 bytes"


def test_diagnostics_joined_into_one_line(tmp_path: Path) -> None:
    tool = fake_dtc(tmp_path, "echo 'Error: a.dts:3.1-2 syntax error' >&2\n"
                              "echo 'FATAL ERROR: Unable to parse input tree' >&2\nexit 1")
    with pytest.raises(ParseError) as info:
        dts.from_dts(SOURCE, dtc=tool)
    assert str(info.value) == ("dts: dtc: dtc refused it: Error: a.dts:3.1-2 syntax error; "
                               "FATAL ERROR: Unable to parse input tree")


def test_death_by_signal_named(tmp_path: Path) -> None:
    with pytest.raises(ParseError) as info:
        dts.from_dts(SOURCE, dtc=fake_dtc(tmp_path, "echo boom >&2\nkill -SEGV $$"))
    assert str(info.value) == "dts: dtc: dtc died of SIGSEGV: boom"


def test_unrunnable_dtc(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        dts.from_dts(SOURCE, dtc=str(tmp_path / "none"))
    assert str(info.value) == (f"dts: cannot run dtc ({tmp_path / 'none'}): No such file or "
                               "directory")


def test_output_read_as_the_tree(tmp_path: Path) -> None:
    blob = (Path(__file__).resolve().parent.parent / "testdata" / "dtb" / "small.dtb")
    tree = dts.from_dts(SOURCE, dtc=fake_dtc(tmp_path, f'cat {blob} > "$out"'))
    assert tree.build() == blob.read_bytes()
