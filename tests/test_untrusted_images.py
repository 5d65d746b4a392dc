"""Image notes, purgatories and options that used to be trusted: every field is checked before it
is used, and what cannot be done faithfully is refused with the field and offset, never a
traceback or a gigabyte allocation."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from image_helpers import PURGATORY_CORPUS, gen
from kernel_helpers import kgen

from kimagekit.cli import main
from kimagekit.errors import ParseError, RuleError, UsageError
from kimagekit.image import read_image, write_image
from kimagekit.purgatory import check_target, parse_purgatory
from kimagekit.segments import parse_mem_ranges

PSERIES = "dtb/qemu-7.2-ppc64-pseries.dtb"
SHOFF = 0x4F40  # the Debian purgatory's section table
STACK_END_SYM = 0x4078 + 60 * 24  # .symtab[60], `stack_end`


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "x.img"
    write_image(p, gen.x86_like_image())
    return p


def _desc(data: bytes) -> int:
    """File offset of the kimagekit note descriptor (after the 12-byte header and padded name)."""
    nph = struct.unpack_from("<H", data, 56)[0]
    note_ph = 64 + (nph - 1) * 56
    return int(struct.unpack_from("<Q", data, note_ph + 8)[0]) + 12 + 12


def _edit(path: Path, rel: int, fmt: str, value: object) -> int:
    data = bytearray(path.read_bytes())
    at = _desc(data) + rel
    struct.pack_into(fmt, data, at, value)
    path.write_bytes(bytes(data))
    return at


# (descriptor offset, struct format, value, field, message); 5 segments, 2 symbols
NOTE_EDITS = {
    "arch-unknown": (16, "16s", b"mips", "note.arch", 16,
                     "arch 'mips' is not one of x86_64, ppc64le, ppc64, arm64, riscv64"),
    "arch-other": (16, "16s", b"ppc64le", "note.arch", 16,
                   "arch ppc64le does not match the ELF header (e_machine 62, little-endian)"),
    "page-huge": (32, "<Q", 1 << 31, "note.page_size", 32,
                  "page_size 0x80000000 is not a supported page size (a power of two from 0x1000 "
                  "to 0x10000)"),
    "page-odd": (32, "<Q", 0x3000, "note.page_size", 32,
                 "page_size 0x3000 is not a supported page size (a power of two from 0x1000 to "
                 "0x10000)"),
    "entry": (40, "<Q", 0x1000000, "note.entry", 40,
              "entry 0x1000000 is not inside the purgatory"),
    "has-purgatory": (50, "B", 0, "note.has_purgatory", 50,
                      "has_purgatory 0 but a purgatory segment"),
    "has-purgatory-2": (50, "B", 2, "note.has_purgatory", 50, "has_purgatory 2 is not 0 or 1"),
    "region": (56 + 8, "<Q", 0x1000, "note.sha_regions[0]", 56,
               "region 0x7fffc000+0x1000 is not a segment's memory"),
    "role-twice": (344 + 5 * 32 + 4 * 40, "B", 1, "note.info[4].role", 344 + 5 * 32 + 4 * 40,
                   "a second initrd segment"),
    "checksummed": (344 + 5 * 32 + 2 * 40 + 1, "B", 0, "note.info[2].checksummed",
                    344 + 5 * 32 + 2 * 40 + 1,
                    "checksummed 0 contradicts the seed policy for a kernel segment"),
    "symbol": (344 + 5 * 72 + 48, "<Q", 1 << 63, "note.symbols[0]", 344 + 5 * 72,
               "symbol 'purgatory_start' (48 bytes at 0x8000000000000000) is not inside the "
               "purgatory"),
}


@pytest.mark.parametrize("how", list(NOTE_EDITS))
def test_note_fields_checked(image: Path, how: str) -> None:
    rel, fmt, value, field, field_rel, why = NOTE_EDITS[how]
    _edit(image, rel, fmt, value)
    desc = _desc(image.read_bytes())
    with pytest.raises(ParseError) as e:
        read_image(image.read_bytes())
    assert (e.value.field, e.value.offset, e.value.message) == (field, desc + field_rel, why)


@pytest.mark.parametrize("command", [["ls"], ["verify"], ["inspect"], ["extract", "0", "-o"],
                                     ["patch-handover"]])
def test_changed_arch_refused_by_every_command(image: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               command: list[str]) -> None:
    at = _edit(image, 16, "16s", b"ppc64")
    argv = [command[0], str(image), *command[1:]]
    if command[0] == "extract":
        argv.append(str(tmp_path / "seg"))
    if command[0] == "patch-handover":
        data = tmp_path / "data"
        data.write_bytes(gen.handover_buffer())
        argv += ["--data", str(data), "-o", str(tmp_path / "p.img")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {image}: image: note.arch at offset {at:#x}: arch ppc64 does not "
        "match the ELF header (e_machine 62, little-endian)\n")
    assert not (tmp_path / "p.img").exists() and not (tmp_path / "seg").exists()


def test_huge_page_size_refused_before_any_allocation(image: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # It used to make patch-handover lay the file out on 2 GiB pages: a 6.4 GB output.
    at = _edit(image, 32, "<Q", 1 << 31)
    data = tmp_path / "data"
    data.write_bytes(gen.handover_buffer())
    out = tmp_path / "p.img"
    assert main(["patch-handover", str(image), "--data", str(data), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {image}: image: note.page_size at offset {at:#x}: page_size "
        "0x80000000 is not a supported page size (a power of two from 0x1000 to 0x10000)\n")
    assert not out.exists()


def test_build_page_size_bounds(corpus: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(gen.make_vmlinux())
    out = tmp_path / "x.img"
    assert main(["build", "--arch", "ppc64le", "--no-purgatory", "--kernel", str(vmlinux), "--dtb",
                 str(corpus / PSERIES), "--page-size", str(1 << 31), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        "kimagekit: error: --page-size 0x80000000 is not a supported page size (a power of two "
        "from 0x1000 to 0x10000)\n")
    assert not out.exists()


# --- purgatories for another machine -------------------------------------------------------------

def test_purgatory_for_another_machine(corpus: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(gen.make_vmlinux())
    x86 = corpus / PURGATORY_CORPUS
    out = tmp_path / "x.img"
    base = ["build", "--kernel", str(vmlinux), "--dtb", str(corpus / PSERIES), "-o", str(out)]
    assert main([*base, "--arch", "ppc64le", "--purgatory", str(x86)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {x86}: purgatory: e_machine at offset 0x12: e_machine 62 (EM_X86_64) "
        "is not EM_PPC64 (21) of ppc64le\n")
    # The same object claiming EM_PPC64: its byte order still says it is not for ppc64.
    ppc = tmp_path / "ppc.ro"
    data = bytearray(x86.read_bytes())
    struct.pack_into("<H", data, 18, 21)
    ppc.write_bytes(bytes(data))
    assert main([*base, "--arch", "ppc64", "--purgatory", str(ppc)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {ppc}: purgatory: e_ident.EI_DATA at offset 0x5: little-endian "
        "object, ppc64 is big-endian\n")
    assert not out.exists()
    obj = parse_purgatory(x86.read_bytes())
    with pytest.raises(RuleError) as e:
        check_target(obj, "ppc64le", 21, True)
    assert (e.value.field, e.value.offset) == ("e_machine", 0x12)


# --- tracebacks that escaped ---------------------------------------------------------------------

def test_mem_beyond_2_64(corpus: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(kgen.make_bzimage())
    out = tmp_path / "x.img"
    assert main(["build", "--arch", "x86_64", "--kernel", str(kernel), "--purgatory",
                 str(corpus / PURGATORY_CORPUS), "--mem", "0x100000+0x1ffffffffffffffff", "-o",
                 str(out)]) == 2
    assert capsys.readouterr().err == (
        "kimagekit: error: --mem: '0x100000+0x1ffffffffffffffff' ends past 2^64\n")
    assert not out.exists()
    with pytest.raises(UsageError) as e:
        parse_mem_ranges("0x1000-0xffffffffffffffff,0x10000000000000000+0x1000")
    assert str(e.value) == "--mem: '0x10000000000000000+0x1000' ends past 2^64"
    assert parse_mem_ranges("0x1000-0xffffffffffffffff")[0].size == (1 << 64) - 0x1000
    # The whole 64-bit space is 2^64 bytes, one more than an e820 size holds (the campaign's
    # build-x86_64 seed 2 input 41310: struct.error when the table was written).
    assert main(["build", "--arch", "x86_64", "--kernel", str(kernel), "--purgatory",
                 str(corpus / PURGATORY_CORPUS), "--mem", "0x0-0xffffffffffffffff", "-o",
                 str(out)]) == 2
    assert capsys.readouterr().err == (
        "kimagekit: error: --mem: '0x0-0xffffffffffffffff' is 2^64 bytes: an e820 size holds "
        "at most 2^64 - 1\n")
    assert not out.exists()


@pytest.mark.parametrize(("edit", "message"), [
    ((SHOFF + 9 * 64 + 48, "<Q", 1 << 63),
     "purgatory: shdr[9].sh_addralign at offset 0x51b0: sh_addralign 0x8000000000000000 of a "
     "loaded section exceeds 0x100000"),
    ((STACK_END_SYM + 8, "<Q", (1 << 64) - 16),
     "purgatory: .symtab[60].st_value at offset 0x4618: symbol 'stack_end' (0 bytes at "
     "0xfffffffffffffff0) is outside its section .data (0x1000 bytes)"),
])
def test_purgatory_fields_that_overflowed(corpus: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str],
                                          edit: tuple[int, str, int], message: str) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(kgen.make_bzimage())
    data = bytearray((corpus / PURGATORY_CORPUS).read_bytes())
    at, fmt, value = edit
    struct.pack_into(fmt, data, at, value)
    purg = tmp_path / "p.ro"
    purg.write_bytes(bytes(data))
    out = tmp_path / "x.img"
    assert main(["build", "--arch", "x86_64", "--kernel", str(kernel), "--purgatory", str(purg),
                 "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"kimagekit: error: {purg}: {message}\n"
    assert not out.exists()


def test_purgatory_overflows_in_the_library(corpus: Path) -> None:
    from kimagekit.purgatory import find_symbol, load, loaded_address, symbol_address

    data = bytearray((corpus / PURGATORY_CORPUS).read_bytes())
    struct.pack_into("<Q", data, STACK_END_SYM + 8, (1 << 64) - 16)
    lp = load(parse_purgatory(bytes(data)), 0x100000)
    with pytest.raises(RuleError) as e:
        symbol_address(lp, "stack_end")
    assert (e.value.field, e.value.offset) == (".symtab[60].st_value", STACK_END_SYM)
    # At its section's end exactly (the real stack_end) it is taken: one past the stack.
    real = load(parse_purgatory((corpus / PURGATORY_CORPUS).read_bytes()), 0x100000)
    end = find_symbol(real.obj, "stack_end")
    assert loaded_address(real, end) == real.sh_addr[end.st_shndx] + 0x1000
    struct.pack_into("<Q", data, SHOFF + 9 * 64 + 48, 1 << 63)
    with pytest.raises(ParseError) as p:
        parse_purgatory(bytes(data))
    assert (p.value.field, p.value.offset) == ("shdr[9].sh_addralign", SHOFF + 9 * 64 + 48)
