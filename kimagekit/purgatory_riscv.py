"""The RISC-V purgatory relocations, as ``arch_kexec_apply_relocations_add`` in
``arch/riscv/kernel/machine_kexec_file.c`` (7.2) applies them, and only those.

The kernel's encoders are reproduced bit for bit (``RV_X``, ``ENCODE_*_IMM``, ``CLEAN_IMM`` over
64-bit unsigned values). Two things the kernel does not do are checked here, because what it
would write then is not what the object asks for, and kimagekit never writes such a purgatory:

- range: the kernel masks the PC-relative offset into the instruction's immediate without
  checking that it fits (or is even for a branch); an offset that does not fit is refused.
- pairs: the kernel patches an ``R_RISCV_PCREL_HI20`` as it patches ``R_RISCV_CALL`` (the auipc
  and, as an I-type, the next instruction) and ignores ``R_RISCV_PCREL_LO12_I``. That is right
  only when the next instruction is the LO12_I that names this HI20; any other layout is refused
  (:func:`pair_problems`).

Not applied (the kernel's ``default:`` refuses them, "Unknown rela relocation: N"): among
others ``R_RISCV_PCREL_LO12_S`` (25), ``R_RISCV_ADD64`` (36), ``R_RISCV_SUB64`` (40),
``R_RISCV_32`` (1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CALL", "CALL_PLT", "EM_RISCV", "PCREL_HI20", "PCREL_LO12_I", "RELOCATIONS", "Reloc",
    "Unfit", "encode_btype", "encode_cbtype", "encode_cjtype", "encode_jtype",
    "encode_ujtype", "pair_problems",
]

EM_RISCV = 243
U64 = (1 << 64) - 1
BRANCH, JAL, CALL, CALL_PLT, PCREL_HI20, PCREL_LO12_I = 16, 17, 18, 19, 23, 24


Apply = Callable[[bytearray, int, int, int, bool], None]  # buf, location, place, value, little


class Unfit(Exception):
    """The kernel would write a value that is not the object's (a truncated offset)."""


def _x(v: int, s: int, n: int) -> int:  # RV_X
    return (v >> s) & ((1 << n) - 1)


def encode_itype(v: int) -> int:
    return _x(v, 0, 12) << 20


def encode_btype(v: int) -> int:
    return (_x(v, 1, 4) << 8) | (_x(v, 5, 6) << 25) | (_x(v, 11, 1) << 7) | (_x(v, 12, 1) << 31)


def encode_utype(v: int) -> int:
    return _x(v, 12, 20) << 12


def encode_jtype(v: int) -> int:
    return ((_x(v, 1, 10) << 21) | (_x(v, 11, 1) << 20) | (_x(v, 12, 8) << 12)
            | (_x(v, 20, 1) << 31))


def encode_cbtype(v: int) -> int:
    return ((_x(v, 1, 2) << 3) | (_x(v, 3, 2) << 10) | (_x(v, 5, 1) << 2) | (_x(v, 6, 2) << 5)
            | (_x(v, 8, 1) << 12))


def encode_cjtype(v: int) -> int:
    return ((_x(v, 1, 3) << 3) | (_x(v, 4, 1) << 11) | (_x(v, 5, 1) << 2) | (_x(v, 6, 1) << 7)
            | (_x(v, 7, 1) << 6) | (_x(v, 8, 2) << 9) | (_x(v, 10, 1) << 8)
            | (_x(v, 11, 1) << 12))


def _high(v: int) -> int:  # RISCV_CONST_HIGH_PART
    return ((v + 0x800) & ~0xFFF) & U64


def encode_ujtype(v: int) -> int:
    """auipc's U-type immediate (high part) and, 32 bits up, the next instruction's I-type
    (low part), as one 64-bit little-endian word."""
    return encode_utype(_high(v)) | (encode_itype((v - _high(v)) & U64) << 32)


def _uitype(v: int) -> int:
    return encode_utype(v) | (encode_itype(v) << 32)


def _signed(v: int) -> int:
    v &= U64
    return v - (1 << 64) if v >> 63 else v


def _even_fit(bits: int, what: str) -> Callable[[int], None]:
    """A PC-relative offset for a ``bits``-wide signed, 2-byte-granular immediate."""
    def check(off: int) -> None:
        off = _signed(off)
        if off & 1 or not -(1 << (bits - 1)) <= off < 1 << (bits - 1):
            raise Unfit(f"offset {off:#x} does not fit a {what} ({bits}-bit signed, even): "
                        "the kernel masks it without checking")
    return check


def _auipc_fit(off: int) -> None:
    if not -(1 << 31) <= _signed(off) + 0x800 < 1 << 31:
        raise Unfit(f"offset {_signed(off):#x} is out of auipc's +-2 GiB reach: the kernel "
                    "masks it without checking")


def _rw(width: int, little: bool) -> tuple[Callable[[bytearray, int], int],
                                           Callable[[bytearray, int, int], None]]:
    order: Literal["little", "big"] = "little" if little else "big"

    def get(buf: bytearray, loc: int) -> int:
        return int.from_bytes(buf[loc:loc + width], order)

    def put(buf: bytearray, loc: int, v: int) -> None:
        buf[loc:loc + width] = (v & ((1 << (8 * width)) - 1)).to_bytes(width, order)

    return get, put


def _insn(encode: Callable[[int], int], width: int, check: Callable[[int], None],
          clean: Callable[[int], int] | None = None) -> Apply:
    """``*(uN *)loc = CLEAN_IMM(T, *loc) | ENCODE_T_IMM(val - addr)``; ``clean`` is the type
    CLEAN_IMM names when it is not ``encode``'s own (UITYPE for the auipc pairs)."""
    mask = ~(clean or encode)(U64) & U64

    def apply(buf: bytearray, loc: int, place: int, value: int, little: bool) -> None:
        off = (value - place) & U64
        check(off)
        get, put = _rw(width, little)
        put(buf, loc, (mask & get(buf, loc)) | encode(off))
    return apply


def _add(width: int, sign: int) -> Apply:
    """``*(uN *)loc += val`` / ``-= val``: modular, as the kernel (and the linker) do."""
    def apply(buf: bytearray, loc: int, place: int, value: int, little: bool) -> None:
        get, put = _rw(width, little)
        put(buf, loc, get(buf, loc) + sign * value)
    return apply


def _abs64(buf: bytearray, loc: int, place: int, value: int, little: bool) -> None:
    _rw(8, little)[1](buf, loc, value)


# (name, width, apply): width is the bytes the kernel rewrites (CALL/PCREL_HI20: the auipc and
# the next instruction; the RVC types read and write back a u32 whose upper half is unchanged,
# so only their 2 bytes count); apply None: accepted and ignored, as the kernel ignores it.
RELOCATIONS: dict[int, tuple[str, int, Apply | None]] = {
    BRANCH: ("R_RISCV_BRANCH", 4, _insn(encode_btype, 4, _even_fit(13, "B-type branch"))),
    JAL: ("R_RISCV_JAL", 4, _insn(encode_jtype, 4, _even_fit(21, "J-type jump"))),
    PCREL_HI20: ("R_RISCV_PCREL_HI20", 8, _insn(encode_ujtype, 8, _auipc_fit, _uitype)),
    CALL_PLT: ("R_RISCV_CALL_PLT", 8, _insn(encode_ujtype, 8, _auipc_fit, _uitype)),
    CALL: ("R_RISCV_CALL", 8, _insn(encode_ujtype, 8, _auipc_fit, _uitype)),
    44: ("R_RISCV_RVC_BRANCH", 2, _insn(encode_cbtype, 2, _even_fit(9, "compressed branch"))),
    45: ("R_RISCV_RVC_JUMP", 2, _insn(encode_cjtype, 2, _even_fit(12, "compressed jump"))),
    34: ("R_RISCV_ADD16", 2, _add(2, 1)),
    38: ("R_RISCV_SUB16", 2, _add(2, -1)),
    35: ("R_RISCV_ADD32", 4, _add(4, 1)),
    39: ("R_RISCV_SUB32", 4, _add(4, -1)),
    PCREL_LO12_I: ("R_RISCV_PCREL_LO12_I", 0, None),  # applied with its HI20
    43: ("R_RISCV_ALIGN", 0, None),
    51: ("R_RISCV_RELAX", 0, None),
    2: ("R_RISCV_64", 8, _abs64),
}


@dataclass(frozen=True)
class Reloc:
    """One RELA entry of a section, its symbol resolved: ``sym_shndx``/``sym_value`` as in the
    symbol table (for a LO12_I, the label of its HI20)."""

    index: int
    r_offset: int
    r_type: int
    r_addend: int
    sym_shndx: int
    sym_value: int


def pair_problems(relocs: Iterable[Reloc], target_shndx: int) -> list[tuple[Reloc, str]]:
    """The HI20/LO12_I layouts the kernel's shortcut gets wrong, each with why."""
    rels = list(relocs)
    lo_at = {r.r_offset: r for r in rels if r.r_type == PCREL_LO12_I}
    hi_at = {r.r_offset for r in rels if r.r_type == PCREL_HI20}
    out = []
    for r in rels:
        if r.r_type == PCREL_HI20:
            lo = lo_at.get(r.r_offset + 4)
            if lo is None or (lo.sym_shndx, lo.sym_value + lo.r_addend) != (target_shndx,
                                                                            r.r_offset):
                out.append((r, f"the kernel writes its low 12 bits into the next instruction "
                               f"(at {r.r_offset + 4:#x}), which is not a R_RISCV_PCREL_LO12_I "
                               "naming this auipc"))
        elif r.r_type == PCREL_LO12_I:
            label = r.sym_value + r.r_addend
            if (r.sym_shndx != target_shndx or label != r.r_offset - 4
                    or label not in hi_at):
                out.append((r, "the kernel ignores R_RISCV_PCREL_LO12_I and fills the low part "
                               "only in the instruction right after a R_RISCV_PCREL_HI20; this "
                               f"one's auipc is not there (its label: {label:#x} in section "
                               f"{r.sym_shndx})"))
    return out
