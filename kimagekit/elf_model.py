"""The ELF headers kimagekit keeps after parsing, shared by every ELF reader (the purgatory object,
vmlinux, the ppc64 loader): one section model and one program-header model, kernel field names."""

from __future__ import annotations

from dataclasses import dataclass

from kimagekit.formats import elf

__all__ = ["Load", "Section"]


@dataclass(frozen=True)
class Section:
    """One section header, named from the section-name string table."""

    index: int
    name: str
    sh_type: int
    sh_flags: int
    sh_addr: int
    sh_offset: int
    sh_size: int
    sh_link: int
    sh_info: int
    sh_addralign: int

    @property
    def alloc(self) -> bool:
        return bool(self.sh_flags & elf.SHF_ALLOC)

    @property
    def nobits(self) -> bool:
        return self.sh_type == elf.SHT_NOBITS


@dataclass(frozen=True)
class Load:
    """One PT_LOAD program header."""

    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_flags: int
    p_align: int
