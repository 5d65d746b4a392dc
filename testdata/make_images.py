"""Generate the synthetic inputs of the kexec-image tests: a small x86-64 purgatory object with one
relocation of each supported type, a minimal ppc64 vmlinux, and images built from them.

Run ``python testdata/make_images.py OUTDIR`` to write them out; the tests call the functions.
Nothing here is copied from a real kernel: contents are patterned filler.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

from kimagekit.formats import elf
from kimagekit.ima_kexec import build_buffer
from kimagekit.ima_log import ImaEntry, encode_list, read_entries
from kimagekit.image import HandoverStyle, KexecImage, seal, write_image
from kimagekit.purgatory import DigestPolicy, add_purgatory, hashes_role, parse_purgatory
from kimagekit.segments import KexecBuf, MemRange, Role, SegmentList, Target, add_buffer

R_64, R_PC32, R_PLT32, R_32, R_32S = 1, 2, 4, 10, 11

TEXT_SIZE, DATA_SIZE, KP_SIZE, BSS_SIZE = 0x40, 0x100, 0x120, 0x1000
ENTRY = 0x10
# (r_offset in .text, type, symbol name, addend)
RELOCS = [
    (0x00, R_PC32, "REGIONS", -4),
    (0x04, R_PLT32, "purgatory_start", -4),
    (0x08, R_32, ".data", 0x10),
    (0x0C, R_32S, "bss_var", 0),
    (0x20, R_64, "DIGEST", 8),
]


def make_purgatory(*, old_names: bool = False, regions_size: int = 256,
                   extra_reloc: tuple[int, int, str, int] | None = None) -> bytes:
    """An ELF64 LE ET_REL object laid out like the kernel's purgatory (sections .text, .rela.text,
    .data, .kexec-purgatory, .bss, .symtab, .strtab, .shstrtab)."""
    st = elf.elf_structs(elf.ELFCLASS64, True)
    regions = "sha_regions" if old_names else "purgatory_sha_regions"
    digest = "sha256_digest" if old_names else "purgatory_sha256_digest"
    # symbols: (name, info, shndx, value, size)
    syms = [
        ("", 0, 0, 0, 0),
        ("", 3, 1, 0, 0),  # section .text (STT_SECTION, local)
        ("", 3, 3, 0, 0),  # section .data
        ("local_only", 1, 3, 0x20, 8),  # a LOCAL object: never found by name
        ("purgatory_start", 0x12, 1, ENTRY, 0x30),
        (regions, 0x11, 4, 0, regions_size),
        (digest, 0x11, 4, 0x100, 32),
        ("entry64_regs", 0x11, 3, 0, 136),
        ("bss_var", 0x11, 5, 0, 8),
        ("undefined_fn", 0x10, 0, 0, 0),
    ]
    first_global = 4
    alias = {"REGIONS": regions, "DIGEST": digest, ".data": ""}
    index = {name: i for i, (name, *_rest) in enumerate(syms) if name}
    index[""] = 2

    strtab = b"\0"
    name_off = {}
    for name, *_ in syms:
        if name and name not in name_off:
            name_off[name] = len(strtab)
            strtab += name.encode() + b"\0"
    symtab = b"".join(st.Sym.build({"st_name": name_off.get(n, 0), "st_info": info,
                                    "st_other": 0, "st_shndx": shndx, "st_value": value,
                                    "st_size": size}) for n, info, shndx, value, size in syms)
    relocs = list(RELOCS) + ([extra_reloc] if extra_reloc else [])
    rela = b"".join(st.Rela.build({"r_offset": off,
                                   "r_info": (index[alias.get(name, name)] << 32) | rtype,
                                   "r_addend": addend}) for off, rtype, name, addend in relocs)
    text = bytes((0x90 + i) & 0xFF for i in range(TEXT_SIZE))
    data = bytes(range(DATA_SIZE))
    kp = bytes(KP_SIZE)

    names = ["", ".text", ".rela.text", ".data", ".kexec-purgatory", ".bss", ".symtab",
             ".strtab", ".shstrtab"]
    shstr = b"\0"
    sh_name = {}
    for n in names[1:]:
        sh_name[n] = len(shstr)
        shstr += n.encode() + b"\0"
    # (name, type, flags, content, link, info, align, entsize)
    secs = [
        ("", elf.SHT_NULL, 0, b"", 0, 0, 0, 0),
        (".text", elf.SHT_PROGBITS, elf.SHF_ALLOC | elf.SHF_EXECINSTR, text, 0, 0, 16, 0),
        (".rela.text", elf.SHT_RELA, 0x40, rela, 6, 1, 8, 24),
        (".data", elf.SHT_PROGBITS, elf.SHF_ALLOC | elf.SHF_WRITE, data, 0, 0, 8, 0),
        (".kexec-purgatory", elf.SHT_PROGBITS, elf.SHF_ALLOC | elf.SHF_WRITE, kp, 0, 0, 32, 0),
        (".bss", elf.SHT_NOBITS, elf.SHF_ALLOC | elf.SHF_WRITE, b"", 0, 0, 4096, 0),
        (".symtab", elf.SHT_SYMTAB, 0, symtab, 7, first_global, 8, 24),
        (".strtab", elf.SHT_STRTAB, 0, strtab, 0, 0, 1, 0),
        (".shstrtab", elf.SHT_STRTAB, 0, shstr, 0, 0, 1, 0),
    ]
    return rel_object(secs, sh_name, little=True, machine=elf.EM_X86_64, entry=ENTRY,
                      e_flags=0, nobits_size=BSS_SIZE)


# (name, type, flags, content, link, info, align, entsize)
Section = tuple[str, int, int, bytes, int, int, int, int]


def rel_object(secs: list[Section], sh_name: dict[str, int], *, little: bool, machine: int,
               entry: int, e_flags: int, nobits_size: int = 0) -> bytes:
    """An ELF64 ET_REL object: the header, each section's content 16-byte aligned, then the
    section headers (the last section is .shstrtab). SHT_NOBITS takes ``nobits_size``."""
    st = elf.elf_structs(elf.ELFCLASS64, little)
    body = bytearray(64)
    offsets = []
    for _name, stype, _flags, content, *_ in secs:
        if stype in (elf.SHT_NULL, elf.SHT_NOBITS):
            offsets.append(len(body) if stype == elf.SHT_NOBITS else 0)
            continue
        body += bytes(-len(body) % 16)
        offsets.append(len(body))
        body += content
    body += bytes(-len(body) % 8)
    shoff = len(body)
    for (name, stype, flags, content, link, info, align, entsize), off in zip(secs, offsets,
                                                                              strict=True):
        size = nobits_size if stype == elf.SHT_NOBITS else len(content)
        body += st.Shdr.build({"sh_name": sh_name.get(name, 0), "sh_type": stype,
                               "sh_flags": flags, "sh_addr": 0, "sh_offset": off,
                               "sh_size": size, "sh_link": link, "sh_info": info,
                               "sh_addralign": align, "sh_entsize": entsize})
    body[:64] = st.Ehdr.build({
        "e_ident": {"EI_CLASS": 2, "EI_DATA": 1 if little else 2, "EI_VERSION": 1,
                    "EI_OSABI": 0, "EI_ABIVERSION": 0, "EI_PAD": bytes(7)},
        "e_type": elf.ET_REL, "e_machine": machine, "e_version": 1, "e_entry": entry,
        "e_phoff": 0, "e_shoff": shoff, "e_flags": e_flags, "e_ehsize": 64, "e_phentsize": 0,
        "e_phnum": 0, "e_shentsize": 64, "e_shnum": len(secs), "e_shstrndx": len(secs) - 1})
    return bytes(body)


def make_vmlinux(size: int = 0x3000, *, little: bool = True, paddr: int = 0) -> bytes:
    """A ppc64 ELF64 ET_EXEC with one PT_LOAD (content patterned, memsz = 2 x filesz)."""
    st = elf.elf_structs(elf.ELFCLASS64, little)
    e = "<" if little else ">"
    payload = b"".join(struct.pack(e + "I", 0x60000000 + i) for i in range(size // 4))
    ehdr = st.Ehdr.build({
        "e_ident": {"EI_CLASS": 2, "EI_DATA": 1 if little else 2, "EI_VERSION": 1,
                    "EI_OSABI": 0, "EI_ABIVERSION": 0, "EI_PAD": bytes(7)},
        "e_type": elf.ET_EXEC, "e_machine": elf.EM_PPC64, "e_version": 1,
        "e_entry": 0xC000000000000000, "e_phoff": 64, "e_shoff": 0, "e_flags": 2,
        "e_ehsize": 64, "e_phentsize": 56, "e_phnum": 1, "e_shentsize": 64, "e_shnum": 0,
        "e_shstrndx": 0})
    ph = st.Phdr.build({"p_type": elf.PT_LOAD, "p_flags": 7, "p_offset": 0x10000,
                        "p_vaddr": 0xC000000000000000 + paddr, "p_paddr": paddr,
                        "p_filesz": size, "p_memsz": 2 * size, "p_align": 0x10000})
    head = ehdr + ph
    return head + bytes(0x10000 - len(head)) + payload


def filler(size: int, seed: int) -> bytes:
    """Deterministic non-repeating-looking bytes (cheap for large sizes)."""
    block = bytes((seed * 131 + i * 7) & 0xFF for i in range(4096))
    reps = -(-size // len(block))
    return (block * reps)[:size]


X86_RAM = (MemRange(0x100000, 0x7FF00000),)
IMA_LIST = Path(__file__).resolve().parent / "ima" / "small-le.bin"


def restorable_entries() -> list[ImaEntry]:
    """testdata/ima/small-le.bin's entries without its last, an ``ima``-template entry the next
    kernel's restore refuses."""
    entries = read_entries(IMA_LIST)
    assert entries[-1].template_name == "ima"
    return entries[:-1]


def restorable_list(path: Path) -> Path:
    """:func:`restorable_entries` written to ``path`` as a little-endian binary list."""
    path.write_bytes(encode_list(restorable_entries(), "<"))
    return path


def handover_buffer() -> bytes:
    """A kexec buffer the next kernel takes (948 bytes): the restorable entries."""
    return build_buffer(restorable_entries())


def x86_like_image(*, policy: DigestPolicy = DigestPolicy.SEED, purgatory: bool = True,
                   kernel_size: int = 0x6000, initrd_size: int = 0x5000,
                   handover: bytes | None = None, handover_size: int = 0x4000,
                   old_names: bool = False) -> KexecImage:
    """Segments in the x86-64 loader's order: purgatory, boot-params, kernel, initrd; the
    hand-over last (by default :func:`handover_buffer`). Contents are synthetic."""
    if handover is None:
        handover = handover_buffer()
    sl = SegmentList(Target("x86_64", ram=X86_RAM))
    lp = None
    if purgatory:
        obj = parse_purgatory(make_purgatory(old_names=old_names))
        sl, lp = add_purgatory(sl, obj, buf_max=0x7FFFFFFF)
    sl, _ = add_buffer(sl, KexecBuf(filler(0x1800, 1), 0x1800, Role.BOOT_PARAMS,
                                    buf_min=0x10000, buf_max=0x7FFFFFFF, top_down=True))
    sl, _ = add_buffer(sl, KexecBuf(filler(kernel_size, 2), kernel_size * 2, Role.KERNEL,
                                    buf_align=0x200000, buf_min=0x1000000, buf_max=0x7FFFFFFF))
    if initrd_size:
        sl, _ = add_buffer(sl, KexecBuf(filler(initrd_size, 3), initrd_size, Role.INITRD,
                                        buf_max=0x7FFFFFFF, top_down=True))
    sl, _ = add_buffer(sl, KexecBuf(handover, handover_size, Role.HANDOVER, top_down=True,
                                    checksummed=hashes_role(policy, Role.HANDOVER)))
    return seal(sl, policy, purgatory=lp, entry=None if purgatory else 0x1000000,
                cmdline=b"console=ttyS0 root=/dev/vda", handover_style=HandoverStyle.NONE)


def main(outdir: str) -> None:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "purgatory-x86_64.ro").write_bytes(make_purgatory())
    (out / "purgatory-x86_64-old-names.ro").write_bytes(make_purgatory(old_names=True))
    (out / "vmlinux-ppc64le").write_bytes(make_vmlinux())
    for policy in DigestPolicy:
        write_image(out / f"x86_64-{policy.value}.img", x86_like_image(policy=policy))
    write_image(out / "x86_64-no-purgatory.img", x86_like_image(purgatory=False))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent / "synthetic"))
