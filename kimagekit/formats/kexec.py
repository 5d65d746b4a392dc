"""kexec layouts: ``struct kexec_segment``, ``struct kexec_sha_region``, x86-64 ``entry64_regs``,
and the note kimagekit puts in every image it writes.

Integer codes for roles, digest policies and hand-over styles are declared here; the models map
them to enums. Index in the tuple = code on disk: append only.
"""

from __future__ import annotations

from functools import cache

from construct import (
    Array,
    Bytes,
    Construct,
    Int8ub,
    Int32ub,
    Int32ul,
    Int64ub,
    Int64ul,
    PaddedString,
    Padding,
    Struct,
    this,
)

__all__ = [
    "ENTRY64_REGS", "HANDOVER_STYLE_CODES", "KEXEC_SEGMENT_MAX", "NOTE_ARCH_LEN", "NOTE_OWNER",
    "NOTE_SYMBOL_NAME_LEN", "NOTE_VERSION", "NT_KIMAGEKIT_KEXEC", "POLICY_CODES", "ROLE_CODES",
    "SHA256_DIGEST_SIZE", "entry64_regs", "kexec_segment", "kexec_sha_region", "kimagekit_note",
    "note_fixed", "note_segment_info", "note_symbol", "purgatory_sha_regions",
]

KEXEC_SEGMENT_MAX = 16
SHA256_DIGEST_SIZE = 32

NOTE_OWNER = "kimagekit"
NT_KIMAGEKIT_KEXEC = 1
NOTE_VERSION = 1
NOTE_ARCH_LEN = 16
NOTE_SYMBOL_NAME_LEN = 48

ROLE_CODES = ("kernel", "initrd", "dtb", "purgatory", "handover", "boot-params", "other",
              "kho-scratch")
POLICY_CODES = ("seed", "upstream-4.10", "upstream-6.15")
HANDOVER_STYLE_CODES = ("none", "seed", "ima", "setup-data")

ENTRY64_REGS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")


def _ints(little: bool) -> tuple[Construct, Construct]:
    return (Int32ul, Int64ul) if little else (Int32ub, Int64ub)


@cache
def kexec_segment(little: bool) -> Construct:
    """The ``kexec_load`` ABI segment: 4 x u64 (pointer and size_t are 64-bit on our targets)."""
    _, u64 = _ints(little)
    return Struct("buf" / u64, "bufsz" / u64, "mem" / u64, "memsz" / u64)


@cache
def kexec_sha_region(little: bool) -> Construct:
    _, u64 = _ints(little)
    return Struct("start" / u64, "len" / u64)


@cache
def purgatory_sha_regions(little: bool) -> Construct:
    """The purgatory's ``purgatory_sha_regions[KEXEC_SEGMENT_MAX]`` (256 bytes)."""
    return Array(KEXEC_SEGMENT_MAX, kexec_sha_region(little))


# x86-64 only, so little-endian: 17 u64 registers loaded by the purgatory's entry64.
entry64_regs = Struct(*[name / Int64ul for name in ENTRY64_REGS])


@cache
def note_fixed(little: bool) -> Construct:
    """The fixed-size head of the kimagekit note descriptor (the counts come first)."""
    u32, u64 = _ints(little)
    return Struct(
        "version" / u32,
        "nr_segments" / u32,
        "nr_symbols" / u32,
        "cmdline_len" / u32,
        "arch" / PaddedString(NOTE_ARCH_LEN, "ascii"),
        "page_size" / u64,
        "entry" / u64,
        "digest_policy" / Int8ub,
        "handover_style" / Int8ub,
        "has_purgatory" / Int8ub,
        Padding(5),
        "sha_regions" / purgatory_sha_regions(little),
        "digest" / Bytes(SHA256_DIGEST_SIZE),
    )


@cache
def note_segment_info(little: bool) -> Construct:
    """Per segment, beside the ABI table: role, whether it is checksummed, its own SHA-256
    (content then zeros to memsz), so verify can name the first segment that differs."""
    return Struct(
        "role" / Int8ub,
        "checksummed" / Int8ub,
        Padding(6),
        "sha256" / Bytes(SHA256_DIGEST_SIZE),
    )


@cache
def note_symbol(little: bool) -> Construct:
    """A purgatory symbol's load address and size, as the kernel resolved it."""
    _, u64 = _ints(little)
    return Struct(
        "name" / PaddedString(NOTE_SYMBOL_NAME_LEN, "ascii"),
        "value" / u64,
        "size" / u64,
    )


@cache
def kimagekit_note(little: bool) -> Construct:
    """The whole descriptor: fixed head, segment table (``buf`` = file offset of the content),
    segment info, symbols, command line (bytes, no terminator)."""
    return Struct(
        "head" / note_fixed(little),
        "segments" / Array(this.head.nr_segments, kexec_segment(little)),
        "info" / Array(this.head.nr_segments, note_segment_info(little)),
        "symbols" / Array(this.head.nr_symbols, note_symbol(little)),
        "cmdline" / Bytes(this.head.cmdline_len),
    )
