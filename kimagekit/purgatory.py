"""The purgatory: a relocatable object laid out, relocated and patched as ``kexec_load_purgatory``
does, and the digest it checks at reboot, as ``kexec_calculate_store_digests`` computes it.

The object is untrusted input here (the kernel trusts its built-in copy), so every header field is
bounds-checked against the file before it is used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from kimagekit import purgatory_riscv as rv
from kimagekit.elf_model import Section
from kimagekit.errors import ParseError, RuleError, converted
from kimagekit.formats import elf
from kimagekit.formats.kexec import KEXEC_SEGMENT_MAX, SHA256_DIGEST_SIZE, purgatory_sha_regions
from kimagekit.segments import (
    U64_MAX,
    KexecBuf,
    Role,
    Segment,
    SegmentList,
    add_buffer,
    align_up,
)

__all__ = [
    "DIGEST_SYMBOLS", "FMT", "MACHINE_NAMES", "MAX_ALIGN_PADDING", "NO_RELOCATIONS",
    "REGIONS_SIZE", "RELA_SIZE", "RELOCATIONS", "SHDR_SIZE", "SYM_SIZE", "UNKNOWN_TYPE", "Apply",
    "Digest", "DigestPolicy", "EntryRule",
    "Layout", "LoadedPurgatory", "PurgatoryObject", "Symbol", "add_purgatory", "apply_policy",
    "check_target", "compute_digest", "digest_symbol_names", "feed_segment", "find_symbol",
    "get_symbol", "hashes_role", "layout", "load", "loaded_address", "parse_purgatory",
    "regions_bytes", "replace_purgatory", "set_symbol", "store_digest", "symbol_address",
    "symbols",
]

FMT = "purgatory"
SHDR_SIZE = 64
SYM_SIZE = 24
RELA_SIZE = 24
# Symbol pairs the kernel wrote the regions and digest into: since ~4.13, then before.
DIGEST_SYMBOLS = (("purgatory_sha_regions", "purgatory_sha256_digest"),
                  ("sha_regions", "sha256_digest"))
REGIONS_SIZE = KEXEC_SEGMENT_MAX * 16


class DigestPolicy(StrEnum):
    """Which segments the digest leaves out (besides the purgatory, always left out).

    seed: segments added with skip_checksum (the hand-over); upstream-4.10: none, the IMA buffer is
    hashed and frozen at load (4.10 to 6.14); upstream-6.15: the IMA (hand-over) segment.
    """

    SEED = "seed"
    UPSTREAM_4_10 = "upstream-4.10"
    UPSTREAM_6_15 = "upstream-6.15"


def hashes_role(policy: DigestPolicy, role: Role) -> bool:
    """Whether a segment of ``role`` is inside the digest under ``policy``."""
    if role == Role.PURGATORY:
        return False
    return role != Role.HANDOVER or policy == DigestPolicy.UPSTREAM_4_10


@dataclass(frozen=True)
class Symbol:
    name: str
    st_value: int
    st_size: int
    st_shndx: int
    bind: int
    where: str = ""  # symbol table and index, e.g. ``.symtab[60]``
    offset: int | None = None  # of the symbol entry in the file


@dataclass(frozen=True)
class PurgatoryObject:
    data: bytes
    little: bool
    machine: int
    e_entry: int
    sections: tuple[Section, ...]


@dataclass(frozen=True)
class Layout:
    bufsz: int
    memsz: int
    buf_align: int


@dataclass(frozen=True)
class LoadedPurgatory:
    """The purgatory as the kernel holds it after loading at ``mem``: ``buffer`` is the segment
    content; ``sh_addr``/``buf_offset`` are the rewritten section addresses and buffer offsets."""

    obj: PurgatoryObject
    mem: int
    buffer: bytes
    memsz: int
    entry: int
    sh_addr: tuple[int, ...]
    buf_offset: tuple[int, ...]


#: Slack for alignment padding when laying out content sections (see :func:`load`).
MAX_ALIGN_PADDING = 1 << 20


def _align(v: int, a: int) -> int:
    return align_up(v, a) if a > 1 else v


def parse_purgatory(data: bytes) -> PurgatoryObject:
    """Read an ELF64 ET_REL object's header and section table, bounds-checked."""
    if len(data) < 64:
        raise ParseError(f"file is {len(data)} bytes, shorter than an ELF64 header (64)",
                         fmt=FMT, field="e_ident", offset=0)
    if data[:4] != elf.ELFMAG:
        raise ParseError("not an ELF file (bad magic)", fmt=FMT, field="e_ident.EI_MAG", offset=0)
    if data[4] != elf.ELFCLASS64:
        raise ParseError(f"EI_CLASS {data[4]} is not ELFCLASS64", fmt=FMT,
                         field="e_ident.EI_CLASS", offset=4)
    if data[5] not in (elf.ELFDATA2LSB, elf.ELFDATA2MSB):
        raise ParseError(f"EI_DATA {data[5]} is not 1 or 2", fmt=FMT, field="e_ident.EI_DATA",
                         offset=5)
    little = data[5] == elf.ELFDATA2LSB
    st = elf.elf_structs(elf.ELFCLASS64, little)
    with converted(FMT, "ehdr", 0):
        eh = st.Ehdr.parse(data)
    if eh.e_type != elf.ET_REL:
        raise ParseError(f"e_type {eh.e_type} is not ET_REL (a purgatory is relocatable)",
                         fmt=FMT, field="e_type", offset=16)
    if eh.e_shentsize != SHDR_SIZE:
        raise ParseError(f"e_shentsize {eh.e_shentsize} is not {SHDR_SIZE}", fmt=FMT,
                         field="e_shentsize", offset=58)
    if eh.e_shoff + eh.e_shnum * SHDR_SIZE > len(data):
        raise ParseError(f"section table ({eh.e_shnum} x {SHDR_SIZE} at {eh.e_shoff:#x}) runs "
                         f"past the end of the file ({len(data)} bytes)", fmt=FMT,
                         field="e_shoff", offset=40)
    raw = []
    for i in range(eh.e_shnum):
        off = eh.e_shoff + i * SHDR_SIZE
        with converted(FMT, f"shdr[{i}]", off):
            sh = st.Shdr.parse(data[off:off + SHDR_SIZE])
        # a loaded section's bytes are copied whatever its type (the loader tells only NOBITS
        # apart), so only NOBITS and an unloaded SHT_NULL may point outside the file
        loaded = sh.sh_type != elf.SHT_NULL or sh.sh_flags & elf.SHF_ALLOC
        if sh.sh_type != elf.SHT_NOBITS and loaded and sh.sh_offset + sh.sh_size > len(data):
            raise ParseError(f"section content ({sh.sh_size:#x} bytes at {sh.sh_offset:#x}) "
                             f"runs past the end of the file ({len(data)} bytes)", fmt=FMT,
                             field=f"shdr[{i}].sh_offset", offset=off + 24)
        align = sh.sh_addralign
        if align & (align - 1):
            raise ParseError(f"sh_addralign {align:#x} is not a power of two", fmt=FMT,
                             field=f"shdr[{i}].sh_addralign", offset=off + 48)
        if sh.sh_flags & elf.SHF_ALLOC and align > MAX_ALIGN_PADDING:
            # Real purgatories align to a page at most; the padding would be allocated.
            raise ParseError(f"sh_addralign {align:#x} of a loaded section exceeds "
                             f"{MAX_ALIGN_PADDING:#x}", fmt=FMT,
                             field=f"shdr[{i}].sh_addralign", offset=off + 48)
        raw.append(sh)
    names = _names(data, raw, eh.e_shstrndx)
    sections = tuple(
        Section(i, names[i], sh.sh_type, sh.sh_flags, sh.sh_addr, sh.sh_offset, sh.sh_size,
                sh.sh_link, sh.sh_info, max(sh.sh_addralign, 1))
        for i, sh in enumerate(raw))
    return PurgatoryObject(bytes(data), little, eh.e_machine, eh.e_entry, sections)


MACHINE_NAMES = {elf.EM_X86_64: "EM_X86_64", elf.EM_PPC64: "EM_PPC64", rv.EM_RISCV: "EM_RISCV"}


def check_target(obj: PurgatoryObject, arch: str, machine: int, little: bool) -> None:
    """A purgatory runs on the machine it is loaded for: its e_machine and byte order must be the
    target's (the class is ELFCLASS64 already), else the kernel's loader would never have it."""
    if obj.machine != machine:
        raise RuleError(f"e_machine {obj.machine} ({MACHINE_NAMES.get(obj.machine, 'unknown')}) "
                        f"is not {MACHINE_NAMES.get(machine, machine)} ({machine}) of {arch}",
                        fmt=FMT, field="e_machine", offset=18)
    if obj.little != little:
        raise RuleError(f"{'little' if obj.little else 'big'}-endian object, {arch} is "
                        f"{'little' if little else 'big'}-endian", fmt=FMT,
                        field="e_ident.EI_DATA", offset=5)


def _names(data: bytes, raw: list[object], shstrndx: int) -> list[str]:
    if not 0 < shstrndx < len(raw):
        return [""] * len(raw)
    strtab = raw[shstrndx]
    base, size = strtab.sh_offset, strtab.sh_size  # type: ignore[attr-defined]
    return [_cstr(data, base, size, sh.sh_name, f"shdr[{i}].sh_name")  # type: ignore[attr-defined]
            for i, sh in enumerate(raw)]


def _cstr(data: bytes, base: int, size: int, index: int, field: str) -> str:
    if index >= size:
        raise ParseError(f"name index {index} is past its string table ({size} bytes)",
                         fmt=FMT, field=field)
    end = data.find(b"\0", base + index, base + size)
    if end < 0:
        raise ParseError("name is not NUL-terminated inside its string table", fmt=FMT,
                         field=field, offset=base + index)
    return data[base + index:end].decode("ascii", "replace")


def layout(obj: PurgatoryObject) -> Layout:
    """``kexec_purgatory_setup_kbuf``: content sections at their alignment, then .bss."""
    bufsz, buf_align, bss_sz, bss_align = 0, 1, 0, 1
    for s in obj.sections:
        if not s.alloc:
            continue
        if s.nobits:
            bss_align = max(bss_align, s.sh_addralign)
            bss_sz = _align(bss_sz, s.sh_addralign) + s.sh_size
        else:
            buf_align = max(buf_align, s.sh_addralign)
            bufsz = _align(bufsz, s.sh_addralign) + s.sh_size
    bufsz = _align(bufsz, bss_align)
    # Section sizes are bounded by the file, but alignment padding is not: bound the buffer
    # before anyone allocates it (real purgatories are tens of KiB).
    if bufsz > len(obj.data) + MAX_ALIGN_PADDING:
        raise RuleError(f"laid-out purgatory would be {bufsz:#x} bytes, more than its "
                        f"{len(obj.data)}-byte file allows", fmt=FMT, field="sh_addralign")
    return Layout(bufsz, bufsz + bss_sz, max(buf_align, bss_align))


class EntryRule(StrEnum):
    """How the loader finds the purgatory's entry (``image->start``).

    e-entry: ``e_entry`` inside the first executable section that holds it, rebased to where that
    section lands (6.1.0 to 6.1.164; upstream until the 2026 "derive purgatory entry from symbol"
    change). purgatory-start: the global symbol ``purgatory_start``, when an executable section
    holds it, else the e-entry rule (that change; 6.1.165+ stable, so Debian's 6.1.176). The two
    agree on the kernel's own purgatories.
    """

    E_ENTRY = "e-entry"
    PURGATORY_START = "purgatory-start"


def _entry_symbol(obj: PurgatoryObject) -> Symbol | None:
    try:
        return find_symbol(obj, "purgatory_start")
    except RuleError:
        return None


def load(obj: PurgatoryObject, mem: int,
         entry_rule: EntryRule = EntryRule.E_ENTRY) -> LoadedPurgatory:
    """``kexec_purgatory_setup_sechdrs`` then the relocations, for a buffer placed at ``mem``."""
    lay = layout(obj)
    sym = _entry_symbol(obj) if entry_rule == EntryRule.PURGATORY_START else None
    buf = bytearray(lay.bufsz)
    sh_addr = [s.sh_addr for s in obj.sections]
    buf_offset = [s.sh_offset for s in obj.sections]
    entry = obj.e_entry
    moved = False
    offset, bss_addr = 0, mem + lay.bufsz
    for s in obj.sections:
        if not s.alloc:
            continue
        if s.nobits:
            bss_addr = _align(bss_addr, s.sh_addralign)
            sh_addr[s.index] = bss_addr
            bss_addr += s.sh_size
            continue
        offset = _align(offset, s.sh_addralign)
        if (sym is not None and not moved and s.index == sym.st_shndx
                and s.sh_flags & elf.SHF_EXECINSTR and sym.st_value < s.sh_size):
            entry = mem + offset + sym.st_value
            moved = True
        # The first executable section holding e_entry (with its original address) rebases it.
        if (s.sh_flags & elf.SHF_EXECINSTR and not moved
                and s.sh_addr <= obj.e_entry < s.sh_addr + s.sh_size):
            entry = obj.e_entry - s.sh_addr + mem + offset
            moved = True
        buf[offset:offset + s.sh_size] = obj.data[s.sh_offset:s.sh_offset + s.sh_size]
        sh_addr[s.index] = mem + offset
        buf_offset[s.index] = offset
        offset += s.sh_size
    lp = LoadedPurgatory(obj, mem, b"", lay.memsz, entry, tuple(sh_addr), tuple(buf_offset))
    _relocate(lp, buf)
    return replace(lp, buffer=bytes(buf))


def add_purgatory(sl: SegmentList, obj: PurgatoryObject, *, buf_min: int = 0,
                  buf_max: int = U64_MAX, top_down: bool = True,
                  entry_rule: EntryRule = EntryRule.E_ENTRY) -> tuple[SegmentList,
                                                                      LoadedPurgatory]:
    """``kexec_load_purgatory``: place the buffer, then lay out and relocate it at that address."""
    lay = layout(obj)
    kb = KexecBuf(bytes(lay.bufsz), lay.memsz, Role.PURGATORY, buf_align=lay.buf_align,
                  buf_min=buf_min, buf_max=buf_max, top_down=top_down, checksummed=False)
    sl, seg = add_buffer(sl, kb)
    lp = load(obj, seg.mem, entry_rule)
    return replace_purgatory(sl, lp), lp


def replace_purgatory(sl: SegmentList, lp: LoadedPurgatory) -> SegmentList:
    """The segment list with the purgatory segment's content set to ``lp.buffer``."""
    i = sl.index_of(Role.PURGATORY)
    if i is None:
        raise RuleError("no purgatory segment", fmt=FMT, field="segments")
    segs = list(sl.segments)
    segs[i] = replace(segs[i], content=lp.buffer)
    return replace(sl, segments=tuple(segs))


# --- relocations: one table per e_machine -------------------------------------------------------

Apply = Callable[[bytearray, int, int, int, bool], None]  # buf, location, place, value, little


def _put(buf: bytearray, loc: int, value: int, width: int, little: bool) -> None:
    buf[loc:loc + width] = value.to_bytes(width, "little" if little else "big")


def _abs64(buf: bytearray, loc: int, place: int, value: int, little: bool) -> None:
    _put(buf, loc, value & U64_MAX, 8, little)


def _abs32(buf: bytearray, loc: int, place: int, value: int, little: bool) -> None:
    value &= U64_MAX
    if value > 0xFFFFFFFF:
        raise _Overflow(value)
    _put(buf, loc, value, 4, little)


def _signed32(value: int) -> int:
    value &= U64_MAX
    value = value - (1 << 64) if value >> 63 else value
    if not -(1 << 31) <= value < 1 << 31:
        raise _Overflow(value)
    return value & 0xFFFFFFFF


def _abs32s(buf: bytearray, loc: int, place: int, value: int, little: bool) -> None:
    _put(buf, loc, _signed32(value), 4, little)


def _pc32(buf: bytearray, loc: int, place: int, value: int, little: bool) -> None:
    # The kernel truncates silently; a truncated PC-relative value would make a purgatory that
    # jumps to nowhere, so it is refused here.
    _put(buf, loc, _signed32(value - place), 4, little)


class _Overflow(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"{value:#x}")
        self.value = value


# (name, width, apply) per relocation type
RELOCATIONS: dict[int, dict[int, tuple[str, int, Apply | None]]] = {
    elf.EM_X86_64: {
        0: ("R_X86_64_NONE", 0, None),
        1: ("R_X86_64_64", 8, _abs64),
        2: ("R_X86_64_PC32", 4, _pc32),
        4: ("R_X86_64_PLT32", 4, _pc32),
        10: ("R_X86_64_32", 4, _abs32),
        11: ("R_X86_64_32S", 4, _abs32s),
    },
    rv.EM_RISCV: rv.RELOCATIONS,
}
#: How the kernel words a type it does not apply, where it names it (else kimagekit's words).
UNKNOWN_TYPE = {rv.EM_RISCV: "Unknown rela relocation: {}"}

#: Machines whose kernel has no ``arch_kexec_apply_relocations_add``: the generic stub in
#: ``include/linux/kexec.h`` fails the load ("RELA relocation unsupported", -ENOEXEC) at the first
#: RELA section that ``kexec_apply_relocations`` hands it. Current powerpc kernels are such: their
#: purgatory (``arch/powerpc/purgatory/trampoline_64.S``) is position-independent and needs none.
#: The R_PPC64_* types belong to kexec-tools' userspace purgatory, which kexec_file never loads.
NO_RELOCATIONS = {elf.EM_PPC64: "ppc64"}


def _relocate(lp: LoadedPurgatory, buf: bytearray) -> None:
    obj = lp.obj
    table = RELOCATIONS.get(obj.machine)
    if table is None and obj.machine not in NO_RELOCATIONS:
        raise RuleError(f"no relocation table for e_machine {obj.machine}", fmt=FMT,
                        field="e_machine", offset=18)
    shnum = len(obj.sections)
    for rs in obj.sections:
        if rs.sh_type == elf.SHT_REL:
            raise RuleError("SHT_REL relocations are not supported (the kernel takes RELA only)",
                            fmt=FMT, field=f"section[{rs.index}]({rs.name})")
        if rs.sh_type != elf.SHT_RELA:
            continue
        field = f"section[{rs.index}]({rs.name})"
        if rs.sh_info >= shnum or rs.sh_link >= shnum:
            raise ParseError(f"sh_info {rs.sh_info} or sh_link {rs.sh_link} is not a section",
                             fmt=FMT, field=field)
        target, symtab = obj.sections[rs.sh_info], obj.sections[rs.sh_link]
        if not target.alloc:
            continue
        if table is None:
            # kexec_apply_relocations skips a section whose symbol table names no string
            # table, then gives every other one to the arch hook, which here is the stub.
            if symtab.sh_link >= shnum:
                continue
            raise RuleError(f"{rs.name} holds relocations for {target.name}, but the "
                            f"{NO_RELOCATIONS[obj.machine]} kernel applies none (RELA "
                            "relocation unsupported): a kexec_file purgatory for it must "
                            "need no relocations", fmt=FMT, field=field, offset=rs.sh_offset)
        if target.nobits:
            raise RuleError("relocations into a NOBITS section", fmt=FMT, field=field)
        if symtab.sh_type != elf.SHT_SYMTAB or symtab.sh_link >= shnum:
            raise ParseError("sh_link does not name a symbol table with a string table",
                             fmt=FMT, field=field)
        _apply_section(lp, buf, rs, target, symtab, table)


def _apply_section(lp: LoadedPurgatory, buf: bytearray, rs: Section, target: Section,
                   symtab: Section, table: dict[int, tuple[str, int, Apply | None]]) -> None:
    obj = lp.obj
    st = elf.elf_structs(elf.ELFCLASS64, obj.little)
    nsyms = symtab.sh_size // SYM_SIZE
    seen: list[rv.Reloc] = []
    for k in range(rs.sh_size // RELA_SIZE):
        off = rs.sh_offset + k * RELA_SIZE
        field = f"{rs.name}[{k}]"
        with converted(FMT, field, off):
            rel = st.Rela.parse(obj.data[off:off + RELA_SIZE])
        rtype = elf.r_type(rel.r_info, elf.ELFCLASS64)
        if rtype not in table:
            why = (UNKNOWN_TYPE[obj.machine].format(rtype) + " (the kernel's refusal)"
                   if obj.machine in UNKNOWN_TYPE else f"relocation type {rtype} is not "
                   f"supported for e_machine {obj.machine}")
            raise RuleError(why, fmt=FMT, field=f"{field}.r_info", offset=off + 8)
        name, width, apply = table[rtype]
        if obj.machine == rv.EM_RISCV and rtype in (rv.PCREL_HI20, rv.PCREL_LO12_I):
            sym = _symbol(obj, symtab, _sym_index(rel.r_info, nsyms, field, off))
            seen.append(rv.Reloc(k, rel.r_offset, rtype, rel.r_addend, sym.st_shndx,
                                 sym.st_value))
        if apply is None:
            continue
        if rel.r_offset + width > target.sh_size:
            raise ParseError(f"{name} at {rel.r_offset:#x} is outside {target.name} "
                             f"({target.sh_size:#x} bytes)", fmt=FMT, field=f"{field}.r_offset",
                             offset=off)
        sym = _symbol(obj, symtab, _sym_index(rel.r_info, nsyms, field, off))
        if sym.st_shndx == elf.SHN_UNDEF:
            raise RuleError(f"undefined symbol {sym.name!r}", fmt=FMT, field=field, offset=off)
        if sym.st_shndx == elf.SHN_COMMON:
            raise RuleError(f"symbol {sym.name!r} is in the common section", fmt=FMT,
                            field=field, offset=off)
        if sym.st_shndx == elf.SHN_ABS:
            base = 0
        elif sym.st_shndx >= len(obj.sections):
            raise ParseError(f"symbol {sym.name!r} has section index {sym.st_shndx}",
                             fmt=FMT, field=field, offset=off)
        else:
            base = lp.sh_addr[sym.st_shndx]
        value = sym.st_value + base + rel.r_addend
        place = lp.sh_addr[target.index] + rel.r_offset
        try:
            apply(buf, lp.buf_offset[target.index] + rel.r_offset, place, value, obj.little)
        except _Overflow as exc:
            raise RuleError(f"{name} against {sym.name!r} overflows: {exc.value:#x} does not "
                            "fit in 32 bits", fmt=FMT, field=field, offset=off) from None
        except rv.Unfit as exc:
            raise RuleError(f"{name} against {sym.name!r} at {place:#x}: {exc}", fmt=FMT,
                            field=field, offset=off) from None
    for r, why in rv.pair_problems(seen, target.index):
        raise RuleError(f"{table[r.r_type][0]} at {target.name}+{r.r_offset:#x}: {why}",
                        fmt=FMT, field=f"{rs.name}[{r.index}]",
                        offset=rs.sh_offset + r.index * RELA_SIZE)


def _sym_index(r_info: int, nsyms: int, field: str, off: int) -> int:
    sym_index = elf.r_sym(r_info, elf.ELFCLASS64)
    if sym_index >= nsyms:
        raise ParseError(f"symbol index {sym_index} is past the symbol table ({nsyms})",
                         fmt=FMT, field=f"{field}.r_info", offset=off + 8)
    return sym_index


def _symbol(obj: PurgatoryObject, symtab: Section, index: int) -> Symbol:
    st = elf.elf_structs(elf.ELFCLASS64, obj.little)
    off = symtab.sh_offset + index * SYM_SIZE
    field = f"{symtab.name}[{index}]"
    with converted(FMT, field, off):
        s = st.Sym.parse(obj.data[off:off + SYM_SIZE])
    strtab = obj.sections[symtab.sh_link]
    name = _cstr(obj.data, strtab.sh_offset, strtab.sh_size, s.st_name, f"{field}.st_name")
    return Symbol(name, s.st_value, s.st_size, s.st_shndx, elf.st_bind(s.st_info), field, off)


def loaded_address(lp: LoadedPurgatory, sym: Symbol) -> int:
    """Where ``sym`` lands: its section's new address plus ``st_value``, refused when the value is
    past its section's end (the kernel would wrap it into a wild pointer or address)."""
    sec = lp.obj.sections[sym.st_shndx]
    if sym.st_value > sec.sh_size or sym.st_size > sec.sh_size - sym.st_value:
        raise RuleError(f"symbol {sym.name!r} ({sym.st_size} bytes at {sym.st_value:#x}) is "
                        f"outside its section {sec.name} ({sec.sh_size:#x} bytes)", fmt=FMT,
                        field=f"{sym.where}.st_value", offset=sym.offset)
    return lp.sh_addr[sym.st_shndx] + sym.st_value


def symbols(obj: PurgatoryObject) -> Iterable[Symbol]:
    """Every symbol of every valid symbol table, in file order."""
    for sec in obj.sections:
        if sec.sh_type != elf.SHT_SYMTAB or sec.sh_link >= len(obj.sections):
            continue
        for k in range(sec.sh_size // SYM_SIZE):
            yield _symbol(obj, sec, k)


def find_symbol(obj: PurgatoryObject, name: str) -> Symbol:
    """``kexec_purgatory_find_symbol``: the first GLOBAL symbol of that name, in a real section."""
    for sym in symbols(obj):
        if sym.bind != elf.STB_GLOBAL or sym.name != name:
            continue
        if sym.st_shndx == elf.SHN_UNDEF or sym.st_shndx >= len(obj.sections):
            raise RuleError(f"symbol {name!r} has bad section index {sym.st_shndx}", fmt=FMT,
                            field=name, offset=sym.offset)
        return sym
    raise RuleError(f"no global symbol {name!r}", fmt=FMT, field=name)


def symbol_address(lp: LoadedPurgatory, name: str) -> int:
    return loaded_address(lp, find_symbol(lp.obj, name))


def _symbol_slot(lp: LoadedPurgatory, name: str, size: int, verb: str) -> int:
    sym = find_symbol(lp.obj, name)
    if sym.st_size != size:
        raise RuleError(f"symbol {name!r} is {sym.st_size} bytes, not the {size} to {verb}",
                        fmt=FMT, field=name)
    sec = lp.obj.sections[sym.st_shndx]
    if sec.nobits:
        raise RuleError(f"symbol {name!r} is in a NOBITS section ({sec.name}): cannot {verb}",
                        fmt=FMT, field=name)
    if not sec.alloc or sym.st_value + size > sec.sh_size:
        raise RuleError(f"symbol {name!r} is not inside loaded section {sec.name}", fmt=FMT,
                        field=name)
    return lp.buf_offset[sec.index] + sym.st_value


def get_symbol(lp: LoadedPurgatory, name: str, size: int) -> bytes:
    """``kexec_purgatory_get_set_symbol`` reading ``size`` bytes."""
    at = _symbol_slot(lp, name, size, "get")
    return lp.buffer[at:at + size]


def set_symbol(lp: LoadedPurgatory, name: str, value: bytes) -> LoadedPurgatory:
    """``kexec_purgatory_get_set_symbol`` writing ``value``; returns the updated purgatory."""
    at = _symbol_slot(lp, name, len(value), "set")
    return replace(lp, buffer=lp.buffer[:at] + bytes(value) + lp.buffer[at + len(value):])


def digest_symbol_names(obj: PurgatoryObject) -> tuple[str, str]:
    """The (regions, digest) symbol names this purgatory uses: current names, else pre-4.13."""
    for pair in DIGEST_SYMBOLS:
        try:
            find_symbol(obj, pair[0])
        except RuleError:
            continue
        return pair
    raise RuleError("neither purgatory_sha_regions nor sha_regions is a global symbol",
                    fmt=FMT, field="purgatory_sha_regions")


# --- digest --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Digest:
    regions: tuple[tuple[int, int], ...]  # (start, len) per hashed segment, in segment order
    digest: bytes
    hashed: tuple[int, ...]  # the segment indices hashed


_ZEROS = bytes(1 << 20)
_CHUNK = 8 << 20


def feed_segment(h: hashlib._Hash, content: bytes | memoryview, memsz: int) -> None:
    """bufsz bytes of content, then memsz - bufsz zeros, in bounded chunks."""
    view = memoryview(content)
    for at in range(0, len(view), _CHUNK):
        h.update(view[at:at + _CHUNK])
    left = memsz - len(view)
    while left > 0:
        n = min(left, len(_ZEROS))
        h.update(_ZEROS[:n] if n < len(_ZEROS) else _ZEROS)
        left -= n


def compute_digest(segments: tuple[Segment, ...]) -> Digest:
    """``kexec_calculate_store_digests`` over the segments whose ``checksummed`` flag is set (the
    flag carries the policy, see :func:`apply_policy`); the purgatory is always left out."""
    h = hashlib.sha256()
    regions, hashed = [], []
    for i, s in enumerate(segments):
        if s.role == Role.PURGATORY or not s.checksummed:
            continue
        feed_segment(h, s.content, s.memsz)
        regions.append((s.mem, s.memsz))
        hashed.append(i)
    return Digest(tuple(regions), h.digest(), tuple(hashed))


def apply_policy(sl: SegmentList, policy: DigestPolicy) -> SegmentList:
    """Set each segment's ``checksummed`` flag from ``policy`` and its role."""
    segs = tuple(replace(s, checksummed=hashes_role(policy, s.role)) for s in sl.segments)
    return replace(sl, segments=segs)


def regions_bytes(regions: tuple[tuple[int, int], ...], little: bool) -> bytes:
    """The 16-entry ``kexec_sha_region`` array, unused entries zero."""
    padded = list(regions) + [(0, 0)] * (KEXEC_SEGMENT_MAX - len(regions))
    return bytes(purgatory_sha_regions(little).build([{"start": s, "len": n} for s, n in padded]))


def store_digest(lp: LoadedPurgatory, d: Digest) -> LoadedPurgatory:
    """Write the regions array and the digest into the purgatory's symbols."""
    regions_name, digest_name = digest_symbol_names(lp.obj)
    lp = set_symbol(lp, regions_name, regions_bytes(d.regions, lp.obj.little))
    return set_symbol(lp, digest_name, d.digest[:SHA256_DIGEST_SIZE])
