"""ELF kernels (vmlinux) read directly from a mapped file: headers, PT_LOADs, the GNU build id
note, the version banner, and symbol lookup by a scan of ``.symtab`` with ``struct`` (pyelftools
takes seconds on a 100k-symbol kernel; the scan takes milliseconds).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, replace
from typing import Protocol

from kimagekit.elf_model import Load, Section
from kimagekit.errors import ParseError, converted
from kimagekit.formats import elf

__all__ = [
    "BANNER", "EM_AARCH64", "FMT", "MACHINES", "MAX_BANNER", "MAX_SECTIONS", "NT_GNU_BUILD_ID",
    "ElfKernel", "KernelSymbol", "Searchable", "find_banner", "find_symbol", "is_elf_kernel",
    "read_elf_kernel", "vaddr_to_offset",
]

FMT = "vmlinux"
EM_AARCH64 = 183
NT_GNU_BUILD_ID = 3
BANNER = b"Linux version "
MAX_BANNER = 512
MAX_SECTIONS = 1 << 16
# e_machine -> architecture name per byte order (little, big)
MACHINES: dict[int, tuple[str, str]] = {
    elf.EM_X86_64: ("x86_64", "x86_64-be"),
    elf.EM_PPC64: ("ppc64le", "ppc64"),
    EM_AARCH64: ("arm64", "arm64-be"),
}


class Searchable(Protocol):
    def find(self, sub: bytes, start: int = ..., end: int = ...) -> int: ...
    def __len__(self) -> int: ...
    def __getitem__(self, key: slice) -> bytes: ...


@dataclass(frozen=True)
class ElfKernel:
    arch: str
    machine: int
    little: bool
    e_type: int
    entry: int
    loads: tuple[Load, ...]
    sections: tuple[Section, ...]
    build_id: str | None
    banner: str | None
    relocatable: bool
    symbol_count: int  # entries in .symtab (0 when stripped)
    size: int

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)


@dataclass(frozen=True)
class KernelSymbol:
    name: str
    value: int
    size: int
    shndx: int
    file_offset: int | None  # where its bytes are in the file (None: no file content)


def _err(msg: str, field: str, offset: int | None) -> ParseError:
    return ParseError(msg, fmt=FMT, field=field, offset=offset)


def is_elf_kernel(head: bytes) -> bool:
    """An ELF64 executable or shared object for a kernel architecture kimagekit knows."""
    if len(head) < 64 or head[:4] != elf.ELFMAG or head[4] != elf.ELFCLASS64 \
            or head[5] not in (elf.ELFDATA2LSB, elf.ELFDATA2MSB):
        return False
    order = "<" if head[5] == elf.ELFDATA2LSB else ">"
    e_type, machine = struct.unpack_from(order + "HH", head, 16)
    return e_type in (elf.ET_EXEC, 3) and machine in MACHINES


def read_elf_kernel(data: Searchable) -> ElfKernel:
    """Parse a vmlinux's headers, notes and banner; every offset checked against the file."""
    size = len(data)
    head = bytes(data[:64])
    if len(head) < 64:
        raise _err(f"file is {size} bytes, shorter than an ELF64 header (64)", "e_ident", 0)
    if head[:4] != elf.ELFMAG:
        raise _err("not an ELF file (bad magic)", "e_ident.EI_MAG", 0)
    if head[4] != elf.ELFCLASS64:
        raise _err(f"EI_CLASS {head[4]} is not ELFCLASS64 (32-bit kernels are not supported)",
                   "e_ident.EI_CLASS", 4)
    if head[5] not in (elf.ELFDATA2LSB, elf.ELFDATA2MSB):
        raise _err(f"EI_DATA {head[5]} is not 1 or 2", "e_ident.EI_DATA", 5)
    little = head[5] == elf.ELFDATA2LSB
    st = elf.elf_structs(elf.ELFCLASS64, little)
    with converted(FMT, "ehdr", 0):
        eh = st.Ehdr.parse(head)
    if eh.e_machine not in MACHINES:
        raise _err(f"e_machine {eh.e_machine} is not x86-64, ppc64 or arm64", "e_machine", 18)
    if eh.e_type not in (elf.ET_EXEC, 3):
        raise _err(f"e_type {eh.e_type} is neither ET_EXEC nor ET_DYN", "e_type", 16)
    loads, notes = _program_headers(data, eh, st, size)
    sections = _section_headers(data, eh, st, size)
    build_id = _build_id(data, little, notes, sections)
    symtab = next((s for s in sections if s.sh_type == elf.SHT_SYMTAB), None)
    relocatable = eh.e_type == 3 or any(
        s.sh_type in (elf.SHT_RELA, elf.SHT_REL) and s.sh_flags & elf.SHF_ALLOC
        for s in sections)
    arch = MACHINES[eh.e_machine][0 if little else 1]
    k = ElfKernel(arch, eh.e_machine, little, eh.e_type, eh.e_entry, loads, sections,
                  build_id, None, relocatable, symtab.sh_size // 24 if symtab else 0, size)
    return replace(k, banner=_banner(data, k))


def _program_headers(data: Searchable, eh: object, st: elf.ElfStructs,
                     size: int) -> tuple[tuple[Load, ...], list[tuple[int, int]]]:
    phoff, phnum = eh.e_phoff, eh.e_phnum  # type: ignore[attr-defined]
    if phnum and eh.e_phentsize != 56:  # type: ignore[attr-defined]
        raise _err(f"e_phentsize {eh.e_phentsize} is not 56", "e_phentsize",  # type: ignore[attr-defined]
                   54)
    if phoff + phnum * 56 > size:
        raise _err(f"program headers ({phnum} x 56 at {phoff:#x}) run past the end of the file "
                   f"({size} bytes)", "e_phoff", 32)
    loads, notes = [], []
    for i in range(phnum):
        off = phoff + i * 56
        with converted(FMT, f"phdr[{i}]", off):
            ph = st.Phdr.parse(bytes(data[off:off + 56]))
        if ph.p_type not in (elf.PT_LOAD, elf.PT_NOTE):
            continue
        if ph.p_offset + ph.p_filesz > size:
            raise _err(f"content ({ph.p_filesz:#x} bytes at {ph.p_offset:#x}) runs past the end "
                       f"of the file ({size} bytes)", f"phdr[{i}].p_filesz", off + 32)
        if ph.p_type == elf.PT_NOTE:
            notes.append((ph.p_offset, ph.p_filesz))
        else:
            loads.append(Load(ph.p_offset, ph.p_vaddr, ph.p_paddr, ph.p_filesz, ph.p_memsz,
                              ph.p_flags, ph.p_align))
    return tuple(loads), notes


def _section_headers(data: Searchable, eh: object, st: elf.ElfStructs,
                     size: int) -> tuple[Section, ...]:
    shoff, shnum = eh.e_shoff, eh.e_shnum  # type: ignore[attr-defined]
    if shoff == 0 or shnum == 0:
        return ()
    if eh.e_shentsize != 64:  # type: ignore[attr-defined]
        raise _err(f"e_shentsize {eh.e_shentsize} is not 64", "e_shentsize",  # type: ignore[attr-defined]
                   58)
    if shoff + shnum * 64 > size:
        raise _err(f"section table ({shnum} x 64 at {shoff:#x}) runs past the end of the file "
                   f"({size} bytes)", "e_shoff", 40)
    raw = []
    for i in range(shnum):
        off = shoff + i * 64
        with converted(FMT, f"shdr[{i}]", off):
            sh = st.Shdr.parse(bytes(data[off:off + 64]))
        if sh.sh_type != elf.SHT_NOBITS and sh.sh_offset + sh.sh_size > size:
            raise _err(f"section content ({sh.sh_size:#x} bytes at {sh.sh_offset:#x}) runs past "
                       f"the end of the file ({size} bytes)", f"shdr[{i}].sh_offset", off + 24)
        raw.append(sh)
    stridx = eh.e_shstrndx  # type: ignore[attr-defined]
    strtab = raw[stridx] if 0 < stridx < shnum else None
    out = []
    for i, sh in enumerate(raw):
        name = ""
        if strtab is not None and sh.sh_name < strtab.sh_size:
            at = strtab.sh_offset + sh.sh_name
            end = data.find(b"\0", at, strtab.sh_offset + strtab.sh_size)
            name = bytes(data[at:end if end >= 0 else at]).decode("ascii", "replace")
        out.append(Section(i, name, sh.sh_type, sh.sh_flags, sh.sh_addr, sh.sh_offset,
                           sh.sh_size, sh.sh_link, sh.sh_info, sh.sh_addralign))
    return tuple(out)


def _build_id(data: Searchable, little: bool, notes: list[tuple[int, int]],
              sections: tuple[Section, ...]) -> str | None:
    areas = list(notes) or [(s.sh_offset, s.sh_size) for s in sections if s.sh_type == 7]
    order = "<" if little else ">"
    for start, length in areas:
        at, end = start, start + length
        while at + 12 <= end:
            namesz, descsz, ntype = struct.unpack(order + "III", bytes(data[at:at + 12]))
            name_at = at + 12
            desc_at = name_at + (namesz + 3) // 4 * 4
            if desc_at + descsz > end:
                raise _err(f"note descriptor ({descsz} bytes) runs past its note area",
                           "note.n_descsz", at + 4)
            if ntype == NT_GNU_BUILD_ID and bytes(data[name_at:name_at + namesz]) == b"GNU\0":
                return bytes(data[desc_at:desc_at + descsz]).hex()
            at = desc_at + (descsz + 3) // 4 * 4
    return None


def find_banner(data: Searchable, start: int = 0) -> str | None:
    """The kernel's ``linux_banner`` by a scan for ``Linux version <digit>``. A 6.x vmlinux holds
    two: a weak placeholder without the build number (``# SMP``) and the real one (``#1 SMP``);
    the one with a number after ``#`` wins, else the first."""
    found: list[str] = []
    at = data.find(BANNER, start)
    while at >= 0 and len(found) < 16:
        tail = bytes(data[at:at + MAX_BANNER])
        if tail[len(BANNER):len(BANNER) + 1].isdigit():
            cut = min((i for i in (tail.find(b"\n"), tail.find(b"\0")) if i >= 0),
                      default=len(tail))
            found.append(tail[:cut].decode("ascii", "replace"))
        at = data.find(BANNER, at + 1)
    return next((b for b in found if _BUILD_NUMBER.search(b)), found[0] if found else None)


_BUILD_NUMBER = re.compile(r"\) #\d")


def _banner(data: Searchable, k: ElfKernel) -> str | None:
    sym = find_symbol(data, k, "linux_banner")
    if sym is not None and sym.file_offset is not None and 0 < sym.size <= MAX_BANNER:
        raw = bytes(data[sym.file_offset:sym.file_offset + sym.size])
        return raw.split(b"\0")[0].rstrip(b"\n").decode("ascii", "replace")
    return find_banner(data)


def find_symbol(data: Searchable, k: ElfKernel, name: str) -> KernelSymbol | None:
    """The first symbol called ``name`` in ``.symtab`` (None when stripped or absent).

    The string table is searched for the name first, then the symbol table is scanned for
    entries pointing at one of its occurrences: two passes over raw bytes, no objects per
    symbol."""
    symtab = next((s for s in k.sections if s.sh_type == elf.SHT_SYMTAB), None)
    if symtab is None or not 0 < symtab.sh_link < len(k.sections):
        return None
    strtab = k.sections[symtab.sh_link]
    want = b"\0" + name.encode() + b"\0"
    lo, hi = strtab.sh_offset, strtab.sh_offset + strtab.sh_size
    indices = set()
    at = data.find(want, lo, hi)
    while at >= 0:
        indices.add(at + 1 - lo)
        at = data.find(want, at + 1, hi)
    if not indices:
        return None
    order = "<" if k.little else ">"
    table = bytes(data[symtab.sh_offset:symtab.sh_offset + symtab.sh_size // 24 * 24])
    for i, (st_name,) in enumerate(struct.iter_unpack(order + "I20x", table)):
        if st_name in indices:
            _n, _info, _other, shndx, value, sz = struct.unpack_from(order + "IBBHQQ", table,
                                                                     i * 24)
            return KernelSymbol(name, value, sz, shndx, vaddr_to_offset(k, value, shndx))
    return None


def vaddr_to_offset(k: ElfKernel, addr: int, shndx: int | None = None) -> int | None:
    """The file offset holding virtual address ``addr`` (by section, else by PT_LOAD)."""
    cands = k.sections if shndx is None or not 0 < shndx < len(k.sections) \
        else (k.sections[shndx],)
    for s in cands:
        if s.sh_type not in (elf.SHT_NOBITS, elf.SHT_NULL) and s.sh_flags & elf.SHF_ALLOC \
                and s.sh_addr <= addr < s.sh_addr + s.sh_size:
            return s.sh_offset + addr - s.sh_addr
    for ld in k.loads:
        if ld.p_vaddr <= addr < ld.p_vaddr + ld.p_filesz:
            return ld.p_offset + addr - ld.p_vaddr
    return None
