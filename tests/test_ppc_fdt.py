"""Hand-over and the other /chosen kexec items, on the QEMU pseries and powernv trees."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import TESTDATA, need_module, need_tool

from kimagekit import ppc_fdt as P
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import RuleError

PPC = ["qemu-7.2-ppc64-pseries.dtb", "qemu-7.2-ppc64-powernv.dtb",
       "qemu-7.2-ppc64-pseries-smp4-4G-maxmem8G-initrd.dtb"]
START, SIZE = 0x10000000, 0x20000


def _tool(name: str, *args: str) -> str:
    return subprocess.run([need_tool(name), *args], check=True, capture_output=True,
                          text=True).stdout


def _dtc_warnings(path: Path) -> str:
    return subprocess.run([need_tool("dtc"), "-I", "dtb", "-O", "dts", "-o", "/dev/null",
                           str(path)], check=True, capture_output=True, text=True).stderr


@pytest.mark.parametrize("name", PPC)
@pytest.mark.parametrize("style", ["seed", "ima"])
def test_handover_set_read_remove(corpus: Path, tmp_path: Path, name: str, style: str) -> None:
    data = (corpus / "dtb" / name).read_bytes()
    tree = DeviceTree.parse(data)
    assert P.set_handover(tree, START, SIZE, style) == P.Handover(style, START, SIZE, True)
    out = tmp_path / "out.dtb"
    out.write_bytes(tree.build())
    back = DeviceTree.parse(out.read_bytes())
    assert P.get_handover(back, check=True) == P.Handover(style, START, SIZE, True)
    if style == "ima":
        raw = bytes.fromhex("00000000100000000000000000020000")
        assert back.get("/chosen", P.IMA_BUFFER) == raw
        assert _tool("fdtget", "-t", "x", str(out), "/chosen", P.IMA_BUFFER) == \
            "0 10000000 0 20000\n"
    else:
        assert _tool("fdtget", "-t", "x", str(out), "/chosen", P.SEED_START) == "0 10000000\n"
        assert _tool("fdtget", "-t", "x", str(out), "/chosen", P.SEED_END) == "0 10020000\n"
    text = _tool("dtc", "-I", "dtb", "-O", "dts", str(out))
    assert _dtc_warnings(out) == _dtc_warnings(corpus / "dtb" / name)  # no new warning
    libfdt = need_module("libfdt")
    assert libfdt.fdt_check_full(bytearray(out.read_bytes()), out.stat().st_size) == 0
    assert "/memreserve/\t0x0000000010000000 0x0000000000020000;\n" in text
    assert P.remove_handover(back) == (P.Handover(style, START, SIZE, True),)
    assert back.build() == data
    assert P.get_handover(back) is None


def test_stale_ima_buffer_replaced(corpus: Path) -> None:
    tree = DeviceTree.parse((corpus / "dtb" / PPC[0]).read_bytes())
    P.set_handover(tree, START, SIZE, "ima")
    P.set_handover(tree, START + 0x100000, 0x1000, "ima")
    assert [(r.address, r.size) for r in tree.reservations] == [(START + 0x100000, 0x1000)]
    assert P.handovers(tree) == (P.Handover("ima", START + 0x100000, 0x1000, True),)


def test_buffer_outside_ram_refused(corpus: Path) -> None:
    tree = DeviceTree.parse((corpus / "dtb" / PPC[0]).read_bytes())
    with pytest.raises(RuleError) as info:
        P.set_handover(tree, 0x1FFFF000, 0x2000, "ima")
    assert info.value.message == ("hand-over buffer [0x1ffff000, 0x20001000) is not inside RAM "
                                  "([0x0, 0x20000000))")
    assert tree.get("/chosen", P.IMA_BUFFER) is None and tree.reservations == []


def test_buffer_overlapping_reservation_refused(corpus: Path) -> None:
    tree = DeviceTree.parse((corpus / "dtb" / PPC[2]).read_bytes())
    with pytest.raises(RuleError) as info:
        P.set_handover(tree, 0x2C90000, 0x1000, "seed")
    assert str(info.value) == ("dtb: chosen: hand-over buffer [0x2c90000, 0x2c91000) overlaps "
                               "reservation [0x2c90000, 0x2c9000d) (/memreserve/ 1)")
    with pytest.raises(RuleError) as empty:
        P.set_handover(tree, START, 0, "seed")
    assert str(empty.value) == "dtb: chosen: hand-over buffer size is 0"


def test_ima_cells_follow_root(corpus: Path) -> None:
    tree = DeviceTree.parse((TESTDATA / "dtb" / "small.dtb").read_bytes())
    tree.set("/", "#size-cells", bytes.fromhex("00000001"))
    tree.set("/memory@0", "reg", bytes.fromhex("000000000000000040000000"))
    assert P.root_cells(tree) == (2, 1)
    P.set_handover(tree, 0x1000000, 0x1000, "ima")
    assert tree.get("/chosen", P.IMA_BUFFER) == bytes.fromhex("000000000100000000001000")
    with pytest.raises(RuleError) as info:
        P.set_handover(tree, 0x1000000, 1 << 32, "ima", check=False)
    assert str(info.value) == ("dtb: chosen: linux,ima-kexec-buffer (0x1000000, 0x100000000) "
                               "does not fit the root's 2 address and 1 size cells")


def test_reserved_memory_children_count(corpus: Path) -> None:
    tree = DeviceTree.parse((TESTDATA / "dtb" / "small.dtb").read_bytes())
    rm = tree.add_node("/", "reserved-memory")
    assert rm is tree.need("/reserved-memory")
    tree.set("/reserved-memory", "#address-cells", bytes.fromhex("00000002"))
    tree.set("/reserved-memory", "#size-cells", bytes.fromhex("00000002"))
    tree.add_node("/reserved-memory", "fw@8000000")
    tree.set("/reserved-memory/fw@8000000", "reg",
             bytes.fromhex("00000000080000000000000000100000"))
    with pytest.raises(RuleError) as info:
        P.set_handover(tree, 0x80F0000, 0x20000)
    assert str(info.value) == ("dtb: chosen: hand-over buffer [0x80f0000, 0x8110000) overlaps "
                               "reservation [0x8000000, 0x8100000) (/reserved-memory/fw@8000000)")


def test_other_chosen_items(corpus: Path) -> None:
    data = (corpus / "dtb" / PPC[2]).read_bytes()
    tree = DeviceTree.parse(data)
    assert P.get_initrd(tree) == P.Range(0x2C90000, 0xD, "initrd")
    assert P.get_bootargs(tree) == "console=hvc0 root=/dev/vda ima_policy=tcb"
    P.set_initrd(tree, 0x30000000, 0x100)  # the old one and its reservation go first
    assert [(r.address, r.size) for r in tree.reservations] == \
        [(0x400000, 0x287C918), (0x30000000, 0x100)]
    assert tree.get("/chosen", P.INITRD_END) == (0x30000100).to_bytes(8, "big")
    P.set_bootargs(tree, "quiet")
    P.set_elfcorehdr(tree, 0x20000000, 0x10000)
    P.set_usable_memory(tree, [(0x20000000, 0x8000000)])
    P.set_kaslr_seed(tree, 0x1122334455667788)
    P.set_rng_seed(tree, bytes(range(32)))
    assert P.get_bootargs(tree) == "quiet"
    assert P.get_elfcorehdr(tree) == P.Range(0x20000000, 0x10000, P.ELFCOREHDR)
    assert P.get_usable_memory(tree) == (P.Range(0x20000000, 0x8000000, P.USABLE_MEMORY),)
    assert P.get_kaslr_seed(tree) == 0x1122334455667788
    assert P.get_rng_seed(tree) == bytes(range(32))
    assert P.remove_elfcorehdr(tree) == P.Range(0x20000000, 0x10000, P.ELFCOREHDR)
    assert (0x20000000, 0x10000) not in [(r.address, r.size) for r in tree.reservations]
    assert P.remove_kaslr_seed(tree) and P.remove_usable_memory(tree)
    assert P.remove_initrd(tree) == P.Range(0x30000000, 0x100, "initrd")
    assert P.get_initrd(tree) is None


@pytest.mark.parametrize("style", ["seed", "ima"])
def test_refused_set_leaves_the_tree_untouched(style: str) -> None:
    # the stale announcement and its reservation must survive a refused replacement
    tree = DeviceTree.parse((TESTDATA / "dtb" / "small.dtb").read_bytes())
    P.set_handover(tree, 0x1000_0000, 0x2_0000, style=style)
    before = tree.build()
    with pytest.raises(RuleError):
        P.set_handover(tree, 0xFFFF_FFFF_0000, 0x1000, style=style)
    assert tree.build() == before
    # replacing it with a range that overlaps only its own stale reservation is allowed
    got = P.set_handover(tree, 0x1000_1000, 0x2_0000, style=style)
    assert (got.start, got.size) == (0x1000_1000, 0x2_0000)
    assert [(r.address, r.size) for r in tree.reservations][-1] == (0x1000_1000, 0x2_0000)
    assert (0x1000_0000, 0x2_0000) not in [(r.address, r.size) for r in tree.reservations]
