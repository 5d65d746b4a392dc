"""riscv64 placement as 7.2.13's ELF loader does it: arch/riscv/kernel/kexec_elf.c
(``elf_find_pbase``, ``riscv_kexec_elf_load``), arch/riscv/kernel/machine_kexec_file.c
(``load_extra_segments``), kernel/kexec_file.c (``kexec_walk_memblock``, the hole searches).
The device-tree hook here records what it is asked and returns a fixed blob, so only placement
is under test; the CLI test at the end checks the new tree."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from image_helpers import gen, riscv_gen

from kimagekit.arch import riscv64
from kimagekit.arch.ppc64 import DtRequest
from kimagekit.cli import main
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import ParseError, RuleError
from kimagekit.image import HandoverStyle, KexecImage, open_image
from kimagekit.purgatory import parse_purgatory
from kimagekit.segments import MemRange, Role, Target

RAM = MemRange(0x8000_0000, 0x1000_0000)  # QEMU virt: 256 MiB at 2 GiB
FIRMWARE = MemRange(0x8000_0000, 0x20_0000)  # OpenSBI's reserved 2 MiB
TARGET = Target("riscv64", 0x1000, (RAM,), (FIRMWARE,))
TREE = b"\xd0\x0d\xfe\xed" + bytes(0x1FC)
PURGATORY = parse_purgatory(riscv_gen.make_riscv_purgatory())


def _build(kernel: bytes, target: Target = TARGET, **kw: object
           ) -> tuple[KexecImage, list[DtRequest]]:
    asked: list[DtRequest] = []

    def hook(req: DtRequest) -> bytes:
        asked.append(req)
        return TREE

    img = riscv64.build(target, kernel, b"", hook, purgatory=PURGATORY, **kw)  # type: ignore
    return img, asked


def _layout(img: KexecImage) -> list[tuple[str, int, int, int]]:
    return [(s.role.value, s.mem, s.memsz, s.bufsz) for s in img.segments.segments]


def test_kernel_at_the_first_2mib_hole_sized_by_the_file() -> None:
    """kexec_elf.c lines 80-98: a hole of ALIGN(kernel_len, PAGE_SIZE) (the FILE's length),
    PMD_SIZE aligned, bottom-up from the lowest p_paddr, in memblock's free ranges (firmware
    reserved); lines 39-45: the PT_LOAD at p_paddr - old_pbase + new_pbase, bufsz
    min(p_filesz, p_memsz), memsz p_memsz; line 98: image->start = e_entry - lowest_vaddr +
    new_pbase."""
    kernel = riscv_gen.make_riscv_vmlinux(0x300000, entry_offset=0x1000)
    place = riscv64.kernel_placement(riscv64.SegmentList(TARGET), kernel)
    assert place == riscv64.Placement(0, riscv_gen.VMLINUX_VADDR, 0x8020_0000, 0x8020_1000)
    img, _ = _build(kernel)
    assert _layout(img)[0] == ("kernel", 0x8020_0000, 0x40_0000, 0x30_0000)


def test_extra_segments_top_down_in_order() -> None:
    """ima_add_kexec_buffer first (kexec_file.c line 281: top-down in all RAM), then
    load_extra_segments (machine_kexec_file.c): purgatory top-down (lines 323-331), initrd
    page-aligned top-down (lines 341-352), the packed tree page-aligned top-down (lines
    363-373); riscv_kernel_entry = image->start (lines 333-335)."""
    kernel = riscv_gen.make_riscv_vmlinux(0x300000)
    img, asked = _build(kernel, initrd=bytes(0x2800), handover=bytes(0x900),
                        handover_size=0x1000, cmdline="console=ttyS0")
    assert _layout(img) == [
        ("handover", 0x8FFF_F000, 0x1000, 0x900),
        ("kernel", 0x8020_0000, 0x40_0000, 0x30_0000),
        ("purgatory", 0x8FFF_E000, 0x1000, 0x190),
        ("initrd", 0x8FFF_B000, 0x3000, 0x2800),
        ("dtb", 0x8FFF_A000, 0x1000, 0x200)]
    assert asked == [DtRequest(b"", (0x8FFF_B000, 0x2800), (0x8FFF_F000, 0x1000),
                               HandoverStyle.IMA, "console=ttyS0")]
    purg = img.segments.segments[2]
    assert bytes(purg.content[0x50:0x58]) == (0x8020_0000).to_bytes(8, "little")
    assert img.entry == 0x8FFF_E000  # purgatory_start: .text + 0


def test_buf_min_is_kernel_start_plus_the_file_length() -> None:
    """machine_kexec_file.c line 277: buf_min = kernel_start + kernel_len, the whole file's
    length (symbols too), not the PT_LOAD's memsz: an initrd that fits only below it is
    refused though memory is free there."""
    kernel = riscv_gen.make_riscv_vmlinux(0x100000, memsz=0x100000, tail=0xA00000 - 0x101000)
    small = Target("riscv64", 0x1000, (MemRange(0x8000_0000, 0x100_0000),), (FIRMWARE,))
    img, _ = _build(kernel, small, initrd=bytes(0x3F_D000))
    assert _layout(img)[1:] == [("purgatory", 0x80FF_F000, 0x1000, 0x190),
                                ("initrd", 0x80C0_2000, 0x3F_D000, 0x3F_D000),
                                ("dtb", 0x80C0_1000, 0x1000, 0x200)]
    with pytest.raises(RuleError) as e:
        _build(kernel, small, initrd=bytes(0x40_0000))
    assert str(e.value) == ("kexec: segment[2](initrd): no free memory for 0x400000 bytes "
                            "aligned to 0x1000 in [0x80c00000, 0x81000000] (top-down)")


def test_buf_max_is_the_end_of_ram() -> None:
    """Line 278: buf_max = PFN_PHYS(max_low_pfn), max_low_pfn = PFN_DOWN(memblock_end_of_DRAM())
    (arch/riscv/mm/init.c line 287): the top of the highest RAM range."""
    two = Target("riscv64", 0x1000, (MemRange(0x8000_0000, 0x80_0000),
                                     MemRange(0x1_0000_0000, 0x10_0000)), (FIRMWARE,))
    img, _ = _build(riscv_gen.make_riscv_vmlinux(0x100000), two)
    assert [s.mem for s in img.segments.segments] == [0x8020_0000, 0x1_000F_F000,
                                                     0x1_000F_E000]


def test_reserved_memory_is_walked_around() -> None:
    """kexec_file.c lines 587-631: riscv keeps memblock (ARCH_KEEP_MEMBLOCK with KEXEC) and
    walks its free ranges, so a reservation at the top of RAM is skipped."""
    top = Target("riscv64", 0x1000, (RAM,), (FIRMWARE, MemRange(0x8FF0_0000, 0x10_0000)))
    img, _ = _build(riscv_gen.make_riscv_vmlinux(0x100000), top)
    assert img.segments.segments[1].mem == 0x8FEF_F000


def test_image_loader_places_debians_vmlinuz() -> None:
    """A kernel that is not ELF goes to image_kexec_ops (machine_kexec_file.c lines 21-25):
    kexec_image.c lines 63-81, the whole file bottom-up anywhere (buf_min 0), memsz image_size,
    aligned to text_offset; line 81 image->start = its address, line 86 load_extra_segments
    from there with kbuf.memsz (page-rounded image_size)."""
    kernel = riscv_gen.make_riscv_image(0x200000, image_size=0x2FF800)
    img, _ = _build(kernel, initrd=bytes(0x1000))
    assert _layout(img)[:2] == [("kernel", 0x8020_0000, 0x30_0000, 0x20_0000),
                                ("purgatory", 0x8FFF_F000, 0x1000, 0x190)]
    assert bytes(img.segments.segments[1].content[0x50:0x58]) == (0x8020_0000).to_bytes(8,
                                                                                    "little")
    small = Target("riscv64", 0x1000, (MemRange(0x8000_0000, 0x60_0000),), (FIRMWARE,))
    with pytest.raises(RuleError) as e:  # [0x80500000, 0x80600000) minus the purgatory
        _build(kernel, small, initrd=bytes(0x10_0000))
    assert "in [0x80500000, 0x80600000]" in str(e.value)


@pytest.mark.parametrize("kw,why", [
    ({"version": 2, "magic2": b"XXXX"}, "header version 0.2 without magic2"),
    ({"version": 1, "magic": bytes(8), "magic2": bytes(4)}, "not an ELF vmlinux nor a RISC-V "
     "Image"),
    ({"image_size": 0}, "image_size is 0: image_load refuses it (-EINVAL)"),
    ({"flags": 1}, "a big-endian Image (flags bit 0)"),
])
def test_image_header_refusals(kw: dict[str, object], why: str) -> None:
    """image_probe (kexec_image.c lines 18-34) and image_load's checks (lines 48-61)."""
    with pytest.raises(ParseError) as e:
        _build(riscv_gen.make_riscv_image(0x2000, **kw))  # type: ignore[arg-type]
    assert why in str(e.value)


def test_cli_build_and_chosen(tmp_path: Path) -> None:
    """The CLI end to end, /chosen as of_kexec_alloc_and_setup_fdt writes it (drivers/of/kexec.c
    lines 355-405 the initrd, 470-477 bootargs, 512 linux,booted-from-kexec, 516-517 the IMA
    buffer, each range also reserved), then packed (machine_kexec_file.c line 363)."""
    (tmp_path / "k").write_bytes(riscv_gen.make_riscv_vmlinux(0x100000))
    (tmp_path / "p.o").write_bytes(riscv_gen.make_riscv_purgatory())
    (tmp_path / "rd").write_bytes(bytes(0x2000))
    (tmp_path / "t.dts").write_text(DTS)
    out = tmp_path / "out.img"
    argv = ["build", "--arch", "riscv64", "--kernel", str(tmp_path / "k"), "--dtb",
            str(tmp_path / "t.dts"), "--purgatory", str(tmp_path / "p.o"), "--initrd",
            str(tmp_path / "rd"), "--cmdline", "console=ttyS0 ro", "--ima",
            str(gen.restorable_list(tmp_path / "ima.bin")), "-o", str(out)]
    assert main([*argv, "--json"]) == 0
    with open_image(out) as (info, view):
        dt = info.segment(Role.DTB)
        assert dt is not None
        tree = DeviceTree.parse(bytes(view[dt.offset:dt.offset + dt.bufsz]))
        rd, ho = info.segment(Role.INITRD), info.segment(Role.HANDOVER)
        assert rd is not None and ho is not None
    assert tree.get("/chosen", "bootargs") == b"console=ttyS0 ro\0"
    assert tree.get("/chosen", "linux,booted-from-kexec") == b""
    assert tree.get("/chosen", "linux,ima-kexec-buffer") == struct.pack(">QQ", ho.mem,
                                                                          ho.memsz)
    assert [(r.address, r.size) for r in tree.reservations] == [(rd.mem, 0x2000),
                                                                 (ho.mem, ho.memsz)]
    assert ho.mem + ho.memsz == 0x9000_0000 and dt.mem < rd.mem
    assert tree.get("/chosen", "linux,initrd-start") == rd.mem.to_bytes(8, "big")
    assert tree.get("/chosen", "linux,initrd-end") == (rd.mem + 0x2000).to_bytes(8, "big")


def test_other_loader_versions_are_refused(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Only 7.2's loader is modelled (its relocation set and loaders grew over earlier
    releases: R_RISCV_CALL_PLT, for one, came in 2023): another is refused, not approximated."""
    (tmp_path / "k").write_bytes(riscv_gen.make_riscv_vmlinux(0x100000))
    (tmp_path / "p.o").write_bytes(riscv_gen.make_riscv_purgatory())
    (tmp_path / "t.dts").write_text(DTS)
    rc = main(["build", "--arch", "riscv64", "--kernel", str(tmp_path / "k"), "--dtb",
               str(tmp_path / "t.dts"), "--purgatory", str(tmp_path / "p.o"),
               "--loader-version", "6.12", "-o", str(tmp_path / "o")])
    assert rc == 2
    assert capsys.readouterr().err.strip() == (
        "kimagekit: error: riscv64: kimagekit models the kexec_file loader of 7.2 only (its "
        "loaders, placement and relocations changed before), not 6.12.0 (--loader-version); "
        "--loader-version 7.2 names a 7.2 loading kernel")


def test_cli_refuses_other_arches_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    (tmp_path / "k").write_bytes(riscv_gen.make_riscv_vmlinux(0x100000))
    rc = main(["build", "--arch", "riscv64", "--kernel", str(tmp_path / "k"), "--dtb", "x",
               "--purgatory", "p", "--mem", "0+1", "-o", str(tmp_path / "o")])
    assert rc == 2
    assert capsys.readouterr().err.strip().endswith("riscv64 takes no --mem")


DTS = riscv_gen.VIRT_DTS
