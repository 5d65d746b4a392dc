"""A DTB followed by more bytes than its totalsize (a tail): never read, kept on write, byte for
byte and sparse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import TESTDATA

from kimagekit.cli import main
from kimagekit.devicetree import DeviceTree
from kimagekit.output_files import data_extents

SMALL = TESTDATA / "dtb" / "small.dtb"
GIB = 1 << 30


def sparse_tailed(path: Path) -> None:
    """small.dtb, then a 2 GiB tail: holes, with data at 1 GiB and in the last bytes."""
    path.write_bytes(SMALL.read_bytes())
    with path.open("r+b") as f:
        f.seek(GIB)
        f.write(b"middle data")
        f.truncate(2 * GIB)
        f.seek(2 * GIB - 4)
        f.write(b"END!")


def tails_equal(a: Path, a_at: int, b: Path, b_at: int) -> bool:
    """Whether ``a`` from ``a_at`` and ``b`` from ``b_at`` hold the same bytes, reading only
    where either has data: everywhere else both are holes, so zeros."""
    with a.open("rb") as fa, b.open("rb") as fb:
        size = os.fstat(fa.fileno()).st_size - a_at
        if size != os.fstat(fb.fileno()).st_size - b_at:
            return False
        ranges = [(x - a_at, y - a_at) for x, y in data_extents(fa.fileno(), a_at, a_at + size)]
        ranges += [(x - b_at, y - b_at) for x, y in data_extents(fb.fileno(), b_at, b_at + size)]
        return all(os.pread(fa.fileno(), y - x, x + a_at) == os.pread(fb.fileno(), y - x, x + b_at)
                   for x, y in ranges)


def test_set_keeps_a_sparse_tail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "tailed.dtb", tmp_path / "out.dtb"
    sparse_tailed(src)
    assert main(["dtb", "set", str(src), "/chosen", "x", "7", "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}: /chosen x set as 32-bit cells (392 bytes)\n"
    expected = DeviceTree.parse(SMALL.read_bytes())
    expected.set("/chosen", "x", (7).to_bytes(4, "big"))
    blob = expected.build()
    st = out.stat()
    assert st.st_size == 2 * GIB - 0x176 + len(blob)
    assert st.st_blocks * 512 < 1 << 20  # holes stayed holes
    with out.open("rb") as f:
        assert f.read(len(blob)) == blob
    assert tails_equal(out, len(blob), src, 0x176)
    with out.open("rb") as f:
        assert os.pread(f.fileno(), 11, len(blob) - 0x176 + GIB) == b"middle data"
        assert os.pread(f.fileno(), 8, st.st_size - 8) == b"\0\0\0\0END!"


def test_show_reads_only_the_blob(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "tailed.dtb"
    sparse_tailed(src)
    assert main(["dtb", "get", str(src), "/chosen", "bootargs"]) == 0
    assert capsys.readouterr().out == "console=hvc0\n"


def test_a_dense_tail_is_kept_byte_for_byte(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "tailed.dtb", tmp_path / "out.dtb"
    tail = bytes(range(256)) * 64
    src.write_bytes(SMALL.read_bytes() + tail)
    assert main(["dtb", "set", str(src), "/chosen", "bootargs", "--type", "string", "quiet",
                 "-o", str(out), "--pack"]) == 0
    capsys.readouterr()
    tree = DeviceTree.parse(SMALL.read_bytes())
    tree.set("/chosen", "bootargs", b"quiet\0")
    assert out.read_bytes() == tree.build(pack=True) + tail
