"""Generate a synthetic riscv64 purgatory object (ET_REL, EM_RISCV) with one relocation of each
type 7.2's ``arch_kexec_apply_relocations_add`` applies, on hand-assembled instructions whose
immediates are zero (as the assembler leaves them for the linker). Nothing is copied from the
kernel. Symbols: ``purgatory_start`` (the entry), ``purgatory`` (a ``c.j 0`` spin),
``riscv_kernel_entry`` and the digest symbols in .data/.kexec-purgatory.

Run ``python testdata/make_riscv_purgatory.py OUT`` to write one out; the tests call the function.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

from make_images import rel_object

from kimagekit.formats import elf

EM_RISCV = 243
TARGET = 0x40  # .text offset every PC-relative relocation aims at
# .text words as assembled (little-endian u32, or u16 for the compressed ones)
TEXT: list[tuple[int, int, int]] = [  # (offset, width, value)
    (0x00, 4, 0x00B50063),  # beq a0,a1,.
    (0x04, 4, 0x000000EF),  # jal ra,.
    (0x08, 4, 0x00000297),  # auipc t0,0        (PCREL_HI20 riscv_kernel_entry)
    (0x0C, 4, 0x0002B283),  # ld t0,0(t0)       (PCREL_LO12_I .L0)
    (0x10, 4, 0x00000097),  # auipc ra,0        (CALL target)
    (0x14, 4, 0x000080E7),  # jalr ra,0(ra)
    (0x18, 4, 0x00000097),  # auipc ra,0        (CALL_PLT target)
    (0x1C, 4, 0x000080E7),  # jalr ra,0(ra)
    (0x20, 2, 0xC101),      # c.beqz a0,.
    (0x22, 2, 0xA001),      # c.j .
    (0x24, 4, 0x00000013),  # nop (R_RISCV_ALIGN here: ignored)
    (0x30, 2, 0xA001),      # purgatory: c.j . (the failure spin)
    (TARGET, 4, 0x00008067),  # target: ret
]
TEXT_SIZE, DATA_SIZE, KP_SIZE = 0x50, 0x20, 0x120
# .data: riscv_kernel_entry at 0, then the data relocations' places, with initial values
DATA_INIT = {0x08: (8, 0), 0x10: (4, 0x100), 0x14: (4, 0x100), 0x18: (2, 0x100),
             0x1A: (2, 0x100)}
R = {"BRANCH": 16, "JAL": 17, "CALL": 18, "CALL_PLT": 19, "PCREL_HI20": 23, "PCREL_LO12_I": 24,
     "PCREL_LO12_S": 25, "ADD16": 34, "ADD32": 35, "ADD64": 36, "SUB16": 38, "SUB32": 39,
     "SUB64": 40, "ALIGN": 43, "RVC_BRANCH": 44, "RVC_JUMP": 45, "RELAX": 51, "64": 2}
# (section, r_offset, type, symbol, addend)
RELOCS: list[tuple[str, int, str, str, int]] = [
    (".text", 0x00, "BRANCH", "target", 0),
    (".text", 0x04, "JAL", "target", 0),
    (".text", 0x08, "PCREL_HI20", "riscv_kernel_entry", 0),
    (".text", 0x0C, "PCREL_LO12_I", ".L0", 0),
    (".text", 0x10, "CALL", "target", 0),
    (".text", 0x10, "RELAX", "", 0),
    (".text", 0x18, "CALL_PLT", "target", 0),
    (".text", 0x20, "RVC_BRANCH", "target", 0),
    (".text", 0x22, "RVC_JUMP", "target", 0),
    (".text", 0x24, "ALIGN", "", 8),
    (".data", 0x08, "64", "target", 4),
    (".data", 0x10, "ADD32", "target", 0),
    (".data", 0x14, "SUB32", "target", 0),
    (".data", 0x18, "ADD16", "target", 0),
    (".data", 0x1A, "SUB16", "target", 0),
]


def text_bytes() -> bytes:
    out = bytearray(TEXT_SIZE)
    for off, width, value in TEXT:
        out[off:off + width] = value.to_bytes(width, "little")
    return bytes(out)


def data_bytes() -> bytes:
    out = bytearray(DATA_SIZE)
    for off, (width, value) in DATA_INIT.items():
        out[off:off + width] = value.to_bytes(width, "little")
    return bytes(out)


def make_riscv_purgatory(relocs: list[tuple[str, int, str, str, int]] | None = None,
                         lo12_label: int = 0x08) -> bytes:
    """The object; ``relocs`` replaces :data:`RELOCS`; ``lo12_label`` is where ``.L0`` (the
    label a PCREL_LO12_I names: its auipc) points in .text."""
    st = elf.elf_structs(elf.ELFCLASS64, True)
    # sections: 1 .text, 2 .rela.text, 3 .data, 4 .rela.data, 5 .kexec-purgatory, 6 .symtab,
    # 7 .strtab, 8 .shstrtab; symbols: (name, info, shndx, value, size)
    syms = [("", 0, 0, 0, 0), (".L0", 0, 1, lo12_label, 0),
            ("purgatory_start", 0x12, 1, 0, 0x30), ("purgatory", 0x12, 1, 0x30, 2),
            ("target", 0x12, 1, TARGET, 4), ("riscv_kernel_entry", 0x11, 3, 0, 8),
            ("purgatory_sha_regions", 0x11, 5, 0, 256),
            ("purgatory_sha256_digest", 0x11, 5, 0x100, 32)]
    index = {n: i for i, (n, *_r) in enumerate(syms)}
    strtab, name_off = b"\0", {}
    for name, *_ in syms:
        if name:
            name_off[name] = len(strtab)
            strtab += name.encode() + b"\0"
    symtab = b"".join(st.Sym.build({"st_name": name_off.get(n, 0), "st_info": info,
                                    "st_other": 0, "st_shndx": shndx, "st_value": value,
                                    "st_size": size}) for n, info, shndx, value, size in syms)

    def rela(sec: str) -> bytes:
        return b"".join(st.Rela.build({"r_offset": off,
                                       "r_info": (index[sym] << 32) | R[rtype],
                                       "r_addend": addend})
                        for s, off, rtype, sym, addend in (relocs if relocs is not None
                                                           else RELOCS) if s == sec)

    secs: list[tuple[str, int, int, bytes, int, int, int, int]] = [
        ("", elf.SHT_NULL, 0, b"", 0, 0, 0, 0),
        (".text", elf.SHT_PROGBITS, elf.SHF_ALLOC | elf.SHF_EXECINSTR, text_bytes(), 0, 0, 16,
         0),
        (".rela.text", elf.SHT_RELA, 0x40, rela(".text"), 6, 1, 8, 24),
        (".data", elf.SHT_PROGBITS, elf.SHF_ALLOC | elf.SHF_WRITE, data_bytes(), 0, 0, 8, 0),
        (".rela.data", elf.SHT_RELA, 0x40, rela(".data"), 6, 3, 8, 24),
        (".kexec-purgatory", elf.SHT_PROGBITS, elf.SHF_ALLOC | elf.SHF_WRITE, bytes(KP_SIZE), 0,
         0, 8, 0),
        (".symtab", elf.SHT_SYMTAB, 0, symtab, 7, 2, 8, 24),
        (".strtab", elf.SHT_STRTAB, 0, strtab, 0, 0, 1, 0),
    ]
    shstr, sh_name = b"\0", {}
    for n in [s[0] for s in secs[1:]] + [".shstrtab"]:
        sh_name[n] = len(shstr)
        shstr += n.encode() + b"\0"
    secs.append((".shstrtab", elf.SHT_STRTAB, 0, shstr, 0, 0, 1, 0))
    return rel_object(secs, sh_name, little=True, machine=EM_RISCV, entry=0, e_flags=5)


VMLINUX_VADDR = 0xFFFFFFFF80000000  # KERNEL_LINK_ADDR; p_paddr = p_vaddr - LOAD_OFFSET = 0


def make_riscv_vmlinux(filesz: int = 0x300000, *, memsz: int | None = None, tail: int = 0,
                       entry_offset: int = 0) -> bytes:
    """A riscv64 ELF64 ET_EXEC with one PT_LOAD (paddr 0, patterned content at file offset
    0x1000, memsz default filesz + 1 MiB) and ``tail`` more bytes after it (symbols, say): the
    loader sizes its hole by the whole file."""
    st = elf.elf_structs(elf.ELFCLASS64, True)
    ident = {"EI_CLASS": 2, "EI_DATA": 1, "EI_VERSION": 1, "EI_OSABI": 0, "EI_ABIVERSION": 0,
             "EI_PAD": bytes(7)}
    ehdr = st.Ehdr.build({
        "e_ident": ident, "e_type": elf.ET_EXEC, "e_machine": EM_RISCV, "e_version": 1,
        "e_entry": VMLINUX_VADDR + entry_offset, "e_phoff": 64, "e_shoff": 0, "e_flags": 5,
        "e_ehsize": 64, "e_phentsize": 56, "e_phnum": 1, "e_shentsize": 64, "e_shnum": 0,
        "e_shstrndx": 0})
    ph = st.Phdr.build({"p_type": elf.PT_LOAD, "p_flags": 7, "p_offset": 0x1000,
                        "p_vaddr": VMLINUX_VADDR, "p_paddr": 0, "p_filesz": filesz,
                        "p_memsz": memsz if memsz is not None else filesz + 0x100000,
                        "p_align": 0x1000})
    block = bytes((i * 7 + 3) & 0xFF for i in range(4096))
    body = (block * -(-filesz // 4096))[:filesz]
    head = ehdr + ph
    return head + bytes(0x1000 - len(head)) + body + b"\x5a" * tail


def make_riscv_image(filesz: int = 0x200000, *, image_size: int = 0x300000,
                     text_offset: int = 0x200000, version: int = 2, flags: int = 0,
                     magic: bytes = b"RISCV\0\0\0", magic2: bytes = b"RSC\x05") -> bytes:
    """A flat RISC-V Image as Debian ships it (``MZ`` of the EFI stub first; struct
    riscv_image_header: text_offset, image_size, flags, version, magic at 0x30, magic2 at 0x38),
    patterned content after the 64-byte header."""
    head = struct.pack("<IIQQQIIQ8s4sI", 0x10E05A4D, 0, text_offset, image_size, flags,
                       version, 0, 0, magic, magic2, 0x40)
    block = bytes((i * 11 + 5) & 0xFF for i in range(4096))
    return head + (block * -(-filesz // 4096))[:filesz - len(head)]


# A QEMU virt-like running tree: 256 MiB of RAM at 2 GiB, a console on the command line.
VIRT_DTS = """/dts-v1/;
/ {
	#address-cells = <2>;
	#size-cells = <2>;
	compatible = "riscv-virtio";
	chosen {
		bootargs = "console=ttyS0";
	};
	memory@80000000 {
		device_type = "memory";
		reg = <0x0 0x80000000 0x0 0x10000000>;
	};
};
"""


def u32(buf: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", buf, off)[0])


if __name__ == "__main__":
    Path(sys.argv[1]).write_bytes(make_riscv_purgatory())
