"""ELF schemas: sizes per class, exact bytes, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kimagekit.formats import elf
from kimagekit.formats import kexec as kx

SIZES = {  # (class) -> Ehdr, Phdr, Shdr, Sym, Rela, Nhdr
    elf.ELFCLASS64: (64, 56, 64, 24, 24, 12),
    elf.ELFCLASS32: (52, 32, 40, 16, 12, 12),
}


@pytest.mark.parametrize("cls", [elf.ELFCLASS32, elf.ELFCLASS64])
@pytest.mark.parametrize("little", [True, False])
def test_sizes(cls: int, little: bool) -> None:
    s = elf.elf_structs(cls, little)
    got = tuple(x.sizeof() for x in (s.Ehdr, s.Phdr, s.Shdr, s.Sym, s.Rela, s.Nhdr))
    assert got == SIZES[cls]


def test_factory_rejects_bad_class() -> None:
    with pytest.raises(ValueError, match="ELF class 3"):
        elf.elf_structs(3, True)


def test_phdr64_big_endian_bytes() -> None:
    s = elf.elf_structs(elf.ELFCLASS64, False)
    b = s.Phdr.build({"p_type": 1, "p_flags": 7, "p_offset": 0x1000, "p_vaddr": 0x2000,
                      "p_paddr": 0x3000, "p_filesz": 0x10, "p_memsz": 0x20, "p_align": 0x10000})
    assert b.hex() == ("00000001" "00000007" "0000000000001000" "0000000000002000"
                       "0000000000003000" "0000000000000010" "0000000000000020"
                       "0000000000010000")


def test_rela_info_helpers() -> None:
    assert elf.r_sym(0x0000004400000002, elf.ELFCLASS64) == 0x44
    assert elf.r_type(0x0000004400000002, elf.ELFCLASS64) == 2
    assert elf.r_sym(0x4402, elf.ELFCLASS32) == 0x44
    assert elf.st_bind(0x12) == elf.STB_GLOBAL


u64 = st.integers(0, 2**64 - 1)


@given(u64, u64, st.integers(-(2**63), 2**63 - 1), st.booleans())
def test_rela64_round_trip(off: int, info: int, addend: int, little: bool) -> None:
    s = elf.elf_structs(elf.ELFCLASS64, little).Rela
    v = {"r_offset": off, "r_info": info, "r_addend": addend}
    b = s.build(v)
    p = s.parse(b)
    assert (p.r_offset, p.r_info, p.r_addend) == (off, info, addend)
    assert s.build(p) == b


def test_kexec_declarations() -> None:
    assert kx.kexec_segment(True).sizeof() == 32
    assert kx.purgatory_sha_regions(True).sizeof() == 256
    assert kx.entry64_regs.sizeof() == 136
    regs = {n: 0 for n in kx.ENTRY64_REGS}
    regs["rsi"], regs["rip"] = 0x1111, 0x2222
    b = kx.entry64_regs.build(regs)
    assert int.from_bytes(b[48:56], "little") == 0x1111
    assert int.from_bytes(b[128:136], "little") == 0x2222


def test_kexec_segment_layout_big_endian() -> None:
    b = kx.kexec_segment(False).build({"buf": 1, "bufsz": 2, "mem": 3, "memsz": 4})
    assert b == b"".join(i.to_bytes(8, "big") for i in (1, 2, 3, 4))
