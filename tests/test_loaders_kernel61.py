"""The loaders checked against what the 6.1 kernel does (``kexec-bzimage64.c``, ``kexec_file.c``,
``arch/powerpc/kexec/elf_64.c``, ``drivers/of/kexec.c``), where an earlier version differed."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import need_module
from image_helpers import PURGATORY_CORPUS, gen
from kernel_helpers import kgen

from kimagekit.arch import ppc64_dt
from kimagekit.arch.build import BuildInputs, build_x86_64
from kimagekit.arch.ppc64 import DtRequest, build
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import RuleError
from kimagekit.image import HandoverStyle
from kimagekit.purgatory import EntryRule, load, parse_purgatory
from kimagekit.segments import HoleSearch, MemRange, Role, Target

ROOT = Path(__file__).resolve().parent.parent
PAGE = 0x10000
GiB = 1 << 30


# --- powerpc: /chosen as of_kexec_alloc_and_setup_fdt (6.1) leaves it ----------------------------

def _libfdt_chosen(blob: bytes, initrd: tuple[int, int] | None, ima: tuple[int, int] | None,
                   cmdline: str) -> bytes:
    """The 6.1 sequence replayed with libfdt itself, minus what an offline tool cannot do (the
    fresh kaslr-seed and rng-seed: the stale ones are deleted; the running tree's own
    reservation, whose address is unknown)."""
    libfdt = need_module("libfdt")
    f = libfdt.Fdt(bytearray(blob))
    f.resize(len(blob) + len(cmdline) + 0x1000)  # + FDT_EXTRA_SPACE
    raw = f._fdt

    def del_rsv(start: int, size: int) -> bool:
        for i in range(libfdt.fdt_num_mem_rsv(raw)):
            _err, a, n = libfdt.fdt_get_mem_rsv(raw, i)
            if (a, n) == (start, size):
                libfdt.fdt_del_mem_rsv(raw, i)
                return True
        return False

    quiet = libfdt.QUIET_NOTFOUND
    ch = f.path_offset("/chosen")
    f.delprop(ch, "linux,elfcorehdr", quiet)
    f.delprop(ch, "linux,usable-memory-range", quiet)
    start = f.getprop(ch, "linux,initrd-start", quiet)
    if not isinstance(start, int):
        s = int.from_bytes(bytes(start), "big")
        e = int.from_bytes(bytes(f.getprop(ch, "linux,initrd-end")), "big")
        if not del_rsv(s, e - s):
            del_rsv(s, -(-(e - s) // PAGE) * PAGE)
    if initrd is not None:
        f.setprop_u64(ch, "linux,initrd-start", initrd[0])
        f.setprop_u64(ch, "linux,initrd-end", initrd[0] + initrd[1])
        libfdt.fdt_add_mem_rsv(raw, *initrd)
    else:
        f.delprop(ch, "linux,initrd-start", quiet)
        f.delprop(ch, "linux,initrd-end", quiet)
    if cmdline:
        f.setprop_str(ch, "bootargs", cmdline)
    else:
        f.delprop(ch, "bootargs", quiet)
    f.delprop(ch, "kaslr-seed", quiet)
    f.delprop(ch, "rng-seed", quiet)
    f.setprop(ch, "linux,booted-from-kexec", b"")
    if ima is not None:  # no stale one in these trees; root cells are 2 and 2
        f.setprop(ch, "linux,ima-kexec-buffer", struct.pack(">QQ", *ima))
        libfdt.fdt_add_mem_rsv(raw, *ima)
    f.pack()
    return bytes(f.as_bytearray())


@pytest.mark.parametrize("name", [
    "qemu-7.2-ppc64-pseries.dtb", "qemu-7.2-ppc64-pseries-smp4-4G-maxmem8G-initrd.dtb",
    "qemu-7.2-ppc64-powernv.dtb", "qemu-7.2-ppc64-powernv9-kernel-initrd.dtb"])
@pytest.mark.parametrize("edit", ["all", "none", "initrd-only"])
def test_chosen_is_byte_for_byte_libfdts(corpus: Path, name: str, edit: str) -> None:
    blob = (corpus / "dtb" / name).read_bytes()
    initrd = None if edit == "none" else (0x3000000, 0x30D40)
    ima = (0x8000000, 0x20000) if edit == "all" else None
    # 15 bytes + NUL: libfdt leaves stale bytes in a value's alignment padding, kimagekit zeros.
    cmdline = "console=hvc0 ro" if edit == "all" else ""
    ours = ppc64_dt.chosen_hook(PAGE)(DtRequest(blob, initrd, ima, HandoverStyle.IMA, cmdline))
    assert ours == _libfdt_chosen(blob, initrd, ima, cmdline)


def _tree() -> DeviceTree:
    t = DeviceTree.new()
    t.add_node("/", "chosen")
    t.set("/", "#address-cells", struct.pack(">I", 2))
    t.set("/", "#size-cells", struct.pack(">I", 2))
    t.add_node("/", "memory@0")
    t.set("/memory@0", "device_type", b"memory\0")
    t.set("/memory@0", "reg", struct.pack(">QQ", 0, GiB))
    t.set("/chosen", "linux,initrd-end", struct.pack(">I", 0x2C9000D))
    t.set("/chosen", "linux,initrd-start", struct.pack(">I", 0x2C90000))
    t.set("/chosen", "kaslr-seed", struct.pack(">Q", 0x1122334455667788))
    t.set("/chosen", "linux,elfcorehdr", struct.pack(">QQ", 0x5000000, 0x10000))
    t.add_reservation(0x5000000, 0x10000)
    t.add_reservation(0x2C90000, 0xD)
    return t


def test_chosen_items_the_61_loader_changes() -> None:
    t = _tree()
    ppc64_dt.setup_chosen(t, DtRequest(b"", (0x3000000, 0x1000), None, HandoverStyle.IMA, ""))
    names = [p.name for p in t.find("/chosen").props()]  # type: ignore[union-attr]
    # initrd rewritten where it was (8-byte values now), kaslr-seed and elfcorehdr gone, the
    # empty linux,booted-from-kexec added (first: libfdt inserts new properties first)
    assert names == ["linux,booted-from-kexec", "linux,initrd-start", "linux,initrd-end"]
    assert t.get("/chosen", "linux,booted-from-kexec") == b""
    assert t.get("/chosen", "linux,initrd-start") == struct.pack(">Q", 0x3000000)
    assert t.get("/chosen", "linux,initrd-end") == struct.pack(">Q", 0x3001000)
    # the elfcorehdr's reservation stays (the kernel deletes only the property); the old
    # initrd's goes; the new one is added last
    assert [(r.address, r.size) for r in t.reservations] == [(0x5000000, 0x10000),
                                                             (0x3000000, 0x1000)]
    # deleted names stay in the strings block, as fdt_delprop leaves them
    assert b"kaslr-seed\0" in t.strings and b"linux,elfcorehdr\0" in t.strings


def test_chosen_refuses_initrd_start_without_end() -> None:
    t = _tree()
    t.delete("/chosen", "linux,initrd-end")
    with pytest.raises(RuleError) as e:
        ppc64_dt.setup_chosen(t, DtRequest(b"", None, None, HandoverStyle.IMA, ""))
    assert str(e.value) == ("dtb: chosen: /chosen has linux,initrd-start without "
                            "linux,initrd-end: the kernel refuses to set up the new tree")


# --- powerpc: the loader's one kexec_buf ---------------------------------------------------------

def test_ppc64_initrd_and_dtb_search_from_the_last_paddr() -> None:
    # elf64_load reuses the kexec_buf kexec_elf_load filled: buf_min stays the PT_LOAD's p_paddr
    t = Target("ppc64le", page_size=PAGE, ram=(MemRange(0, GiB),))
    img = build(t, gen.make_vmlinux(paddr=0x100000), b"DTB", lambda req: req.dtb + bytes(5),
                initrd=b"R" * 0x18000, no_purgatory=True)
    kern, rd, dtb = img.segments.segments
    assert (kern.role, kern.mem, kern.memsz) == (Role.KERNEL, 0x100000, 0x10000)
    assert (rd.role, rd.mem, rd.memsz) == (Role.INITRD, 0x110000, 0x20000)  # was 0x0
    assert (dtb.role, dtb.mem) == (Role.DTB, GiB - PAGE)


# --- x86-64: the generic hole search of 6.1 ------------------------------------------------------

def _x86(tmp_path: Path, corpus: Path, rules: HoleSearch, *, ima_kexec: bool = True,
         ram: tuple[MemRange, ...] = (MemRange(0x100000, 4 * GiB - 0x100000),)
         ) -> list[tuple[Role, int, int, int]]:
    kernel, rd = tmp_path / "bzImage", tmp_path / "initrd"
    kernel.write_bytes(kgen.make_bzimage())
    rd.write_bytes(b"R" * 0x3000)
    built = build_x86_64(BuildInputs(kernel, tmp_path / "x.img", initrd=rd,
                                     ima=gen.restorable_list(tmp_path / "ima.bin")
                                     if ima_kexec else None,
                                     purgatory=corpus / PURGATORY_CORPUS),
                         ram=ram, hole_search=rules, ima_kexec=ima_kexec)
    return [(s.role, s.mem, s.memsz, s.bufsz) for s in built.image.segments]


def test_x86_pre_68_top_down_lands_a_page_lower(tmp_path: Path, corpus: Path) -> None:
    # 6.1: the first candidate is end - memsz with end inclusive: one page under the top
    assert _x86(tmp_path, corpus, HoleSearch.PRE_6_8) == [
        (Role.HANDOVER, 0xFFFFE000, 0x1000, 0x3B4),
        (Role.PURGATORY, 0xFFFF9000, 0x5000, 0x4000),
        (Role.BOOT_PARAMS, 0xFFFF7000, 0x2000, 0x10E0),
        (Role.KERNEL, 0xFFA00000, 0x400000, 0x580),
        (Role.INITRD, 0xFFFF4000, 0x3000, 0x3000),
    ]
    assert _x86(tmp_path, corpus, HoleSearch.UPSTREAM_6_8)[:3] == [
        (Role.HANDOVER, 0xFFFFF000, 0x1000, 0x3B4),
        (Role.PURGATORY, 0xFFFFA000, 0x5000, 0x4000),
        (Role.BOOT_PARAMS, 0xFFFF8000, 0x2000, 0x10E0),
    ]


def test_x86_pre_68_walks_ram_upwards(tmp_path: Path, corpus: Path) -> None:
    ram = (MemRange(0x100000, 0xFF00000), MemRange(4 * GiB, 4 * GiB))
    old = _x86(tmp_path, corpus, HoleSearch.PRE_6_8, ram=ram)
    new = _x86(tmp_path, corpus, HoleSearch.UPSTREAM_6_8, ram=ram)
    assert old[0] == (Role.HANDOVER, 0x10000000 - 0x2000, 0x1000, 0x3B4)  # first range
    assert new[0] == (Role.HANDOVER, 8 * GiB - 0x1000, 0x1000, 0x3B4)  # highest range


def test_x86_without_config_ima_kexec(tmp_path: Path, corpus: Path) -> None:
    # Debian's 6.1 amd64 kernel: no CONFIG_IMA_KEXEC, so no room for the SETUP_IMA entry
    # (4096 + 1 + 30 -> 0x1020, + EFI 16 + 96, + RNG 16 + 32)
    segs = _x86(tmp_path, corpus, HoleSearch.PRE_6_8, ima_kexec=False)
    assert segs[1] == (Role.BOOT_PARAMS, 0xFFFF8000, 0x2000, 0x10C0)


# --- purgatory entry: e_entry (6.1.0-6.1.164) or purgatory_start (6.1.165+, 7.0) -----------------

def test_entry_rules(corpus: Path) -> None:
    real = parse_purgatory((corpus / PURGATORY_CORPUS).read_bytes())
    # Debian's purgatory: e_entry 0x120 is purgatory_start, in .text at offset 0: both agree
    assert {load(real, 0x100000, r).entry for r in EntryRule} == {0x100120}
    # a purgatory whose e_entry does not name purgatory_start: only the symbol rule follows it
    data = bytearray(corpus.joinpath(PURGATORY_CORPUS).read_bytes())
    struct.pack_into("<Q", data, 24, 0x100)  # e_entry -> the `purgatory` function
    moved = parse_purgatory(bytes(data))
    assert load(moved, 0x100000, EntryRule.E_ENTRY).entry == 0x100100
    assert load(moved, 0x100000, EntryRule.PURGATORY_START).entry == 0x100120
