"""Generate a synthetic ppc64 purgatory object shaped like the kernel's
``arch/powerpc/purgatory/trampoline_64.S`` (linked ``-r``): a 0x100-byte ``purgatory_start`` in
.text with ``run_at_load`` at its offset 0x5c, the 8-byte slots ``kernel``, ``dt_offset``,
``backup_start``, ``opal_base``, ``opal_entry`` and the digest symbols in .data. Nothing is copied
from the kernel: code words are patterned filler (the first one a branch past the copied area),
.data is filled with 0xEE so every slot the loader writes shows.

Run ``python testdata/make_ppc_purgatory.py OUT [be]`` to write one out; the tests call the
function.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

from make_images import rel_object

from kimagekit.formats import elf

R_PPC64_REL24 = 10
TEXT_SIZE = 0x180
FIRST_WORD = 0x48000100  # "b .+0x100": the master path past the copied slave area
# .data symbols: (name, offset, size)
DATA_SYMBOLS = (("kernel", 0x00, 8), ("dt_offset", 0x08, 8), ("backup_start", 0x10, 8),
                ("opal_base", 0x18, 8), ("opal_entry", 0x20, 8),
                ("purgatory_sha256_digest", 0x28, 32), ("purgatory_sha_regions", 0x48, 256))
DATA_SIZE = 0x148


def text_bytes(little: bool = True) -> bytes:
    """.text as generated: FIRST_WORD, then patterned words."""
    e = "<" if little else ">"
    words = [FIRST_WORD] + [0x60000000 | i for i in range(1, TEXT_SIZE // 4)]
    return b"".join(struct.pack(e + "I", w) for w in words)


def make_ppc64_purgatory(*, little: bool = True, rela: bool = False,
                         omit: tuple[str, ...] = (), sizes: dict[str, int] | None = None) -> bytes:
    """An ELF64 ET_REL EM_PPC64 object. ``rela`` adds .rela.text with one R_PPC64_REL24 (as a
    C purgatory calling a function would carry); ``omit`` leaves symbols out; ``sizes``
    overrides symbol sizes."""
    st = elf.elf_structs(elf.ELFCLASS64, little)
    sizes = sizes or {}
    # (name, info, shndx, value, size); .text is section 1, .data section 2 (3 with rela)
    data_idx = 3 if rela else 2
    syms = [("", 0, 0, 0, 0), ("", 3, 1, 0, 0)]
    glob = [("purgatory_start", 0x12, 1, 0, 0x100), ("run_at_load", 0x11, 1, 0x5C, 4)]
    glob += [(n, 0x11, data_idx, off, size) for n, off, size in DATA_SYMBOLS]
    syms += [(n, i, x, v, sizes.get(n, s)) for n, i, x, v, s in glob if n not in omit]
    strtab, name_off = b"\0", {}
    for name, *_ in syms:
        if name:
            name_off[name] = len(strtab)
            strtab += name.encode() + b"\0"
    symtab = b"".join(st.Sym.build({"st_name": name_off.get(n, 0), "st_info": info,
                                    "st_other": 0, "st_shndx": shndx, "st_value": value,
                                    "st_size": size}) for n, info, shndx, value, size in syms)
    # (name, type, flags, content, link, info, align, entsize)
    secs: list[tuple[str, int, int, bytes, int, int, int, int]] = [
        ("", elf.SHT_NULL, 0, b"", 0, 0, 0, 0),
        (".text", elf.SHT_PROGBITS, elf.SHF_ALLOC | elf.SHF_EXECINSTR, text_bytes(little), 0, 0,
         256, 0)]
    symtab_idx = data_idx + 1
    if rela:
        entry = st.Rela.build({"r_offset": 0x104, "r_info": (1 << 32) | R_PPC64_REL24,
                               "r_addend": 0x120})
        secs.append((".rela.text", elf.SHT_RELA, 0x40, entry, symtab_idx, 1, 8, 24))
    secs += [
        (".data", elf.SHT_PROGBITS, elf.SHF_ALLOC | elf.SHF_WRITE, b"\xee" * DATA_SIZE, 0, 0, 8,
         0),
        (".symtab", elf.SHT_SYMTAB, 0, symtab, symtab_idx + 1, 2, 8, 24),
        (".strtab", elf.SHT_STRTAB, 0, strtab, 0, 0, 1, 0),
    ]
    names = [s[0] for s in secs] + [".shstrtab"]
    shstr, sh_name = b"\0", {}
    for n in names[1:]:
        sh_name[n] = len(shstr)
        shstr += n.encode() + b"\0"
    secs.append((".shstrtab", elf.SHT_STRTAB, 0, shstr, 0, 0, 1, 0))
    return rel_object(secs, sh_name, little=little, machine=elf.EM_PPC64, entry=0,
                      e_flags=2 if little else 1)


if __name__ == "__main__":
    Path(sys.argv[1]).write_bytes(make_ppc64_purgatory(little=sys.argv[2:] != ["be"]))
