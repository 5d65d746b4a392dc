"""ELF layouts (header, program and section headers, symbols, relocations, note headers).

One factory builds every class/byte-order variant, like pyelftools' ``ELFStructs``. Field names
are the ELF specification's, so they grep against ``include/uapi/linux/elf.h``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from construct import (
    Bytes,
    Const,
    Construct,
    Int8ub,
    Int16ub,
    Int16ul,
    Int32sb,
    Int32sl,
    Int32ub,
    Int32ul,
    Int64sb,
    Int64sl,
    Int64ub,
    Int64ul,
    Struct,
)

__all__ = ["ELFMAG", "EV_CURRENT", "ElfStructs", "elf_structs", "r_sym", "r_type", "st_bind"]

ELFMAG = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
EV_CURRENT = 1

ET_REL, ET_EXEC = 1, 2
EM_PPC64, EM_X86_64 = 21, 62
EM_AARCH64 = 183

PT_LOAD, PT_NOTE = 1, 4
PF_X, PF_W, PF_R = 1, 2, 4

SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA = 0, 1, 2, 3, 4
SHT_NOBITS, SHT_REL = 8, 9
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4

SHN_UNDEF, SHN_ABS, SHN_COMMON = 0, 0xFFF1, 0xFFF2
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2

# Integer kinds per byte order: half, word, sword, xword, sxword.
_INTS: dict[bool, tuple[Construct, ...]] = {
    True: (Int16ul, Int32ul, Int32sl, Int64ul, Int64sl),
    False: (Int16ub, Int32ub, Int32sb, Int64ub, Int64sb),
}


@dataclass(frozen=True)
class ElfStructs:
    """The schemas for one ELF class and byte order."""

    elfclass: int
    little: bool
    Ehdr: Construct
    Phdr: Construct
    Shdr: Construct
    Sym: Construct
    Rela: Construct
    Nhdr: Construct


@cache
def elf_structs(elfclass: int, little: bool) -> ElfStructs:
    """Schemas for ELFCLASS32/ELFCLASS64 in little (True) or big (False) byte order."""
    if elfclass not in (ELFCLASS32, ELFCLASS64):
        raise ValueError(f"ELF class {elfclass} is neither 1 (32-bit) nor 2 (64-bit)")
    half, word, sword, xword, sxword = _INTS[little]
    wide = elfclass == ELFCLASS64
    addr = xword if wide else word
    off = addr
    e_ident = Struct(
        "EI_MAG" / Const(ELFMAG),
        "EI_CLASS" / Int8ub,
        "EI_DATA" / Int8ub,
        "EI_VERSION" / Int8ub,
        "EI_OSABI" / Int8ub,
        "EI_ABIVERSION" / Int8ub,
        "EI_PAD" / Bytes(7),
    )
    ehdr = Struct(
        "e_ident" / e_ident,
        "e_type" / half,
        "e_machine" / half,
        "e_version" / word,
        "e_entry" / addr,
        "e_phoff" / off,
        "e_shoff" / off,
        "e_flags" / word,
        "e_ehsize" / half,
        "e_phentsize" / half,
        "e_phnum" / half,
        "e_shentsize" / half,
        "e_shnum" / half,
        "e_shstrndx" / half,
    )
    if wide:
        phdr = Struct(
            "p_type" / word, "p_flags" / word, "p_offset" / off, "p_vaddr" / addr,
            "p_paddr" / addr, "p_filesz" / xword, "p_memsz" / xword, "p_align" / xword,
        )
        sym = Struct(
            "st_name" / word, "st_info" / Int8ub, "st_other" / Int8ub, "st_shndx" / half,
            "st_value" / addr, "st_size" / xword,
        )
        rela = Struct("r_offset" / addr, "r_info" / xword, "r_addend" / sxword)
    else:
        phdr = Struct(
            "p_type" / word, "p_offset" / off, "p_vaddr" / addr, "p_paddr" / addr,
            "p_filesz" / word, "p_memsz" / word, "p_flags" / word, "p_align" / word,
        )
        sym = Struct(
            "st_name" / word, "st_value" / addr, "st_size" / word, "st_info" / Int8ub,
            "st_other" / Int8ub, "st_shndx" / half,
        )
        rela = Struct("r_offset" / addr, "r_info" / word, "r_addend" / sword)
    shdr = Struct(
        "sh_name" / word, "sh_type" / word, "sh_flags" / addr, "sh_addr" / addr,
        "sh_offset" / off, "sh_size" / addr, "sh_link" / word, "sh_info" / word,
        "sh_addralign" / addr, "sh_entsize" / addr,
    )
    nhdr = Struct("n_namesz" / word, "n_descsz" / word, "n_type" / word)
    return ElfStructs(elfclass, little, ehdr, phdr, shdr, sym, rela, nhdr)


def r_sym(r_info: int, elfclass: int) -> int:
    return r_info >> 32 if elfclass == ELFCLASS64 else r_info >> 8


def r_type(r_info: int, elfclass: int) -> int:
    return r_info & 0xFFFFFFFF if elfclass == ELFCLASS64 else r_info & 0xFF


def st_bind(st_info: int) -> int:
    return st_info >> 4
