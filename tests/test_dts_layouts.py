"""DTB layouts libfdt and dtc read: the six block orders of dtc's mangle-layout (our rewrite in
testdata/make_dtb.py) at versions 16 and 17, and dtc's old versions 1-3; ``dtb show --dts`` must
print what ``dtc -I dtb -O dts`` prints, and a write gives a version 17 blob."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TESTDATA, corpus_dir, need_module, need_tool

from kimagekit.cli import main
from kimagekit.devicetree import DeviceTree

sys.path.insert(0, str(TESTDATA))
from make_dtb import ORDERS, mangle_layout

SAMPLES = ["small.dtb", "odd-layout.dtb", "v16.dtb", "padded.dtb"]


def trees() -> list[Path]:
    found = [TESTDATA / "dtb" / n for n in SAMPLES]
    corpus = corpus_dir()
    if corpus is not None:
        found += sorted((corpus / "dtb").glob("*.dtb"))
    return found


def dtc(*args: str | Path) -> bytes:
    return subprocess.run([need_tool("dtc"), "-q", *map(str, args)], check=True,
                          capture_output=True).stdout


def show_dts(capsys: pytest.CaptureFixture[str], path: Path) -> str:
    assert main(["dtb", "show", "--dts", str(path)]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("src", trees(), ids=lambda p: p.name)
def test_every_mangled_layout_reads(src: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    libfdt = need_module("libfdt")
    base = dtc("-I", "dtb", "-O", "dtb", "-V", "17", src)  # mangle-layout wants a v17 blob
    for version in (16, 17):
        for order in ORDERS:
            blob = mangle_layout(base, version, order)
            assert libfdt.fdt_check_full(bytearray(blob), len(blob)) == 0, (version, order)
            path = tmp_path / f"v{version}.{order}.dtb"
            path.write_bytes(blob)
            ref = dtc("-I", "dtb", "-O", "dts", path).decode("latin-1")
            assert show_dts(capsys, path) == ref, (version, order)
            tree = DeviceTree.parse(blob)
            # the usual order is kept byte for byte; any other is written back in it, packed
            assert tree.build() == (blob if order == "mts" else base), (version, order)


@pytest.mark.parametrize("src", trees(), ids=lambda p: p.name)
def test_old_versions_read(src: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    libfdt = need_module("libfdt")
    for version in (1, 2, 3):
        path = tmp_path / f"v{version}.dtb"
        path.write_bytes(dtc("-I", "dtb", "-O", "dtb", "-V", str(version), src))
        ref = dtc("-I", "dtb", "-O", "dts", path).decode("latin-1")
        assert show_dts(capsys, path) == ref, version
        tree = DeviceTree.parse(path.read_bytes())
        assert (tree.read_version, tree.header().version) == (version, 17)
        out = tree.build()
        assert libfdt.fdt_check_full(bytearray(out), len(out)) == 0
        again = tmp_path / f"v{version}-as-17.dtb"
        again.write_bytes(out)
        assert show_dts(capsys, again) == ref, version


def test_set_on_an_old_version_writes_version_17(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "v2.dtb"
    src.write_bytes(dtc("-I", "dtb", "-O", "dtb", "-V", "2", TESTDATA / "dtb" / "small.dtb"))
    out = tmp_path / "out.dtb"
    assert main(["dtb", "set", str(src), "/chosen", "x", "7", "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}: /chosen x set as 32-bit cells (389 bytes)\n"
    data = out.read_bytes()
    assert (int.from_bytes(data[20:24], "big"), int.from_bytes(data[24:28], "big")) == (17, 16)
    got = subprocess.run([need_tool("fdtget"), "-t", "x", str(out), "/chosen", "x"],
                         check=True, capture_output=True, text=True).stdout
    assert got == "7\n"


def test_inspect_names_the_version_read(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "v1.dtb"
    path.write_bytes(dtc("-I", "dtb", "-O", "dtb", "-V", "1", TESTDATA / "dtb" / "small.dtb"))
    assert main(["inspect", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        f"{path}: device-tree",
        "  read from version 1, written back as version 17 (last compatible 16), totalsize "
        "0x173, boot_cpuid_phys 0"]
