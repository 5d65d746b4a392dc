"""The riscv64 purgatory relocations, each type on a hand-assembled word, against 7.2.13's
``arch_kexec_apply_relocations_add`` (arch/riscv/kernel/machine_kexec_file.c, lines 154-262;
the encoders at lines 122-152). Expected words were read back with riscv64-linux-gnu-objdump
(the comment beside each: what it disassembles to at M)."""

from __future__ import annotations

import struct

import pytest
from image_helpers import riscv_gen

from kimagekit.errors import RuleError
from kimagekit.purgatory import get_symbol, load, parse_purgatory, symbol_address

RELOCS, make_riscv_purgatory, u32 = riscv_gen.RELOCS, riscv_gen.make_riscv_purgatory, riscv_gen.u32
M = 0x8020_0000  # .text; .data at M + 0x50
DATA = M + 0x50


def _load(relocs: list[tuple[str, int, str, str, int]] | None = None,
          lo12_label: int = 0x08) -> bytes:
    return load(parse_purgatory(make_riscv_purgatory(relocs, lo12_label)), M).buffer


def _with(off: int, rtype: str, addend: int) -> list[tuple[str, int, str, str, int]]:
    """RELOCS with the .text relocation at ``off`` retyped/re-aimed (``target`` + addend)."""
    return [(s, o, rtype if (s, o) == (".text", off) and t not in ("RELAX",) else t, sym,
             addend if (s, o) == (".text", off) and t not in ("RELAX",) else a)
            for s, o, t, sym, a in RELOCS]


def test_layout_and_symbols() -> None:
    lp = load(parse_purgatory(make_riscv_purgatory()), M)
    assert (lp.entry, symbol_address(lp, "riscv_kernel_entry")) == (M, DATA)
    assert symbol_address(lp, "purgatory_sha_regions") == M + 0x70
    assert get_symbol(lp, "riscv_kernel_entry", 8) == bytes(8)


def test_branch() -> None:
    """R_RISCV_BRANCH, lines 208-211: B-type immediate of val - addr (0x40)."""
    assert u32(_load(), 0x00) == 0x04B50063  # beq a0,a1,M+0x40


def test_jal() -> None:
    """R_RISCV_JAL, lines 212-215: J-type immediate of val - addr (0x3c)."""
    assert u32(_load(), 0x04) == 0x03C000EF  # jal M+0x40


def test_pcrel_hi20_fills_its_lo12_i_partner() -> None:
    """R_RISCV_PCREL_HI20, lines 216-227 (handled as CALL: the auipc and, as an I-type, the
    next word); R_RISCV_PCREL_LO12_I is then skipped, lines 248-252."""
    b = _load()
    assert (u32(b, 0x08), u32(b, 0x0C)) == (0x00000297, 0x0482B283)  # ld t0,72(t0) -> DATA


@pytest.mark.parametrize("off", [0x10, 0x18])
def test_call_and_call_plt(off: int) -> None:
    """R_RISCV_CALL and R_RISCV_CALL_PLT, lines 222-227: auipc ra,0 / jalr to M+0x40."""
    b = _load()
    assert (u32(b, off), u32(b, off + 4)) == (0x00000097, ((0x40 - off) << 20) | 0x80E7)


def test_call_high_part_rounds_for_a_negative_low_part() -> None:
    """RISCV_CONST_HIGH_PART (line 124-125) adds 0x800 first: offset 0x12345868 is auipc
    0x12346 and jalr -0x798 (ENCODE_UJTYPE_IMM, lines 145-147)."""
    b = _load(_with(0x10, "CALL", 0x12345838))
    assert (u32(b, 0x10), u32(b, 0x14)) == (0x12346097, 0x868080E7)


def test_negative_offsets_fill_every_immediate_field() -> None:
    """The sign and split fields of B, J, CB and CJ (lines 130-144), offsets -0x800 (B),
    -0x40004 (J), -0x100 (CB), -0x800 (CJ)."""
    b = _load(_with(0x00, "BRANCH", -0x840))
    assert u32(b, 0x00) == 0x80B500E3  # beq a0,a1,M-0x800
    b = _load(_with(0x04, "JAL", -0x40040))
    assert u32(b, 0x04) == 0xFFDBF0EF  # jal M+4-0x40004
    b = _load(_with(0x20, "RVC_BRANCH", -0x120))
    assert struct.unpack_from("<H", b, 0x20)[0] == 0xD101  # beqz a0,M+0x20-0x100
    b = _load(_with(0x22, "RVC_JUMP", -0x81E))
    assert struct.unpack_from("<H", b, 0x22)[0] == 0xB001  # j M+0x22-0x800


def test_rvc_branch_and_jump() -> None:
    """R_RISCV_RVC_BRANCH (lines 228-231) and R_RISCV_RVC_JUMP (lines 232-235): the u32 the
    kernel rewrites keeps its upper half (the next instruction)."""
    b = _load()
    assert struct.unpack_from("<HH", b, 0x20) == (0xC105, 0xA839)  # beqz/j to M+0x40


def test_add_sub_and_64() -> None:
    """R_RISCV_ADD16/SUB16/ADD32/SUB32 (lines 236-247): modular, on initial 0x100;
    R_RISCV_64 (lines 253-255): target + 4."""
    b = _load()
    assert struct.unpack_from("<QIIHH", b, 0x58) == (
        M + 0x44, (0x100 + M + 0x40) & 0xFFFFFFFF, (0x100 - M - 0x40) & 0xFFFFFFFF,
        0x140, 0xC0)


def test_relax_and_align_change_nothing() -> None:
    """R_RISCV_ALIGN and R_RISCV_RELAX, lines 250-252: ignored (the nop stays)."""
    assert u32(_load(), 0x24) == 0x00000013


@pytest.mark.parametrize("rtype,number", [("ADD64", 36), ("SUB64", 40), ("PCREL_LO12_S", 25)])
def test_types_7_2_does_not_apply(rtype: str, number: int) -> None:
    """Not in 7.2's switch: the default case, lines 256-258, fails the load (-ENOEXEC)."""
    relocs = [*RELOCS, (".data", 0x08, rtype, "target", 0)]
    with pytest.raises(RuleError) as e:
        _load(relocs)
    assert str(e.value).endswith(f"Unknown rela relocation: {number} (the kernel's refusal)")


@pytest.mark.parametrize("off,rtype,addend,why", [
    (0x00, "BRANCH", 0xFC0, "offset 0x1000 does not fit a B-type branch (13-bit signed, even)"),
    (0x00, "BRANCH", -0x3F, "offset 0x1 does not fit a B-type branch (13-bit signed, even)"),
    (0x04, "JAL", 0x100000, "offset 0x10003c does not fit a J-type jump (21-bit signed, even)"),
    (0x20, "RVC_BRANCH", 0xE0, "offset 0x100 does not fit a compressed branch (9-bit signed, "
     "even)"),
    (0x22, "RVC_JUMP", 0x7E2, "offset 0x800 does not fit a compressed jump (12-bit signed, "
     "even)"),
    (0x10, "CALL", 0x7FFFF7D0, "offset 0x7ffff800 is out of auipc's +-2 GiB reach"),
])
def test_offsets_the_kernel_would_truncate_are_refused(off: int, rtype: str, addend: int,
                                                       why: str) -> None:
    """The kernel masks without a range check (lines 208-235): the word it would write jumps
    elsewhere, so kimagekit refuses it."""
    with pytest.raises(RuleError) as e:
        _load(_with(off, rtype, addend))
    assert why in str(e.value)
    assert "the kernel masks it without checking" in str(e.value)


def test_largest_reach_is_taken() -> None:
    """The edges that still fit: B +0xffe, CALL +0x7ffff7ff."""
    b = _load(_with(0x00, "BRANCH", 0xFBE))
    assert u32(b, 0) == 0x7EB50FE3  # beq a0,a1,M+0xffe
    b = _load(_with(0x10, "CALL", 0x7FFFF7CF))
    assert (u32(b, 0x10), u32(b, 0x14)) == (0x7FFFF097, 0x7FF080E7)


def test_hi20_whose_next_word_is_not_its_lo12_is_refused() -> None:
    """Lines 216-227: the kernel writes the low part into the word after the auipc. A LO12_I
    naming a label that is not that auipc leaves both wrong."""
    with pytest.raises(RuleError) as e:
        _load(lo12_label=0x10)
    assert str(e.value) == (
        "purgatory: .rela.text[2] at offset 0xc0: R_RISCV_PCREL_HI20 at .text+0x8: the kernel "
        "writes its low 12 bits into the next instruction (at 0xc), which is not a "
        "R_RISCV_PCREL_LO12_I naming this auipc")


def test_lo12_without_hi20_is_refused() -> None:
    relocs = [r for r in RELOCS if r[2] != "PCREL_HI20"]
    with pytest.raises(RuleError) as e:
        _load(relocs)
    assert "the kernel ignores R_RISCV_PCREL_LO12_I" in str(e.value)
    assert str(e.value).startswith("purgatory: .rela.text[2] at offset 0xc0: "
                                   "R_RISCV_PCREL_LO12_I at .text+0xc:")
