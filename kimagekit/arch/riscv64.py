"""The riscv64 kexec_file ELF loader (7.2: ``arch/riscv/kernel/kexec_elf.c`` and
``load_extra_segments`` in ``arch/riscv/kernel/machine_kexec_file.c``), offline.

Segment order as the kernel adds them: the IMA hand-over (``ima_add_kexec_buffer``, before the
image loader), the vmlinux PT_LOADs, the purgatory, the initrd, the device tree. Holes are
searched in free memory as riscv's ``kexec_walk_memblock`` walks it (ARCH_KEEP_MEMBLOCK): RAM
less the reserved ranges, from the top for a top-down search. Not modelled: a CMA allocation
(``kexec_alloc_contig``: the kernel tries one first unless KEXEC_FILE_NO_CMA; offline there is
no CMA area), KHO scratch areas, crash loads (elfcorehdr).

Both of 7.2's loaders, probed in its order (``kexec_file_loaders``): the ELF vmlinux
(``elf_kexec_ops``), then the flat Image (``image_kexec_ops``, arch/riscv/kernel/kexec_image.c),
which is what Debian ships (``vmlinuz``: the Image with its EFI stub's PE header in front).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kimagekit import of_kexec
from kimagekit.arch.common import add_ima_buffer
from kimagekit.arch.ppc64 import DtHook, DtRequest, kernel_loads
from kimagekit.errors import ParseError
from kimagekit.formats import elf
from kimagekit.image import HandoverStyle, KexecImage, seal
from kimagekit.purgatory import (
    DigestPolicy,
    EntryRule,
    LoadedPurgatory,
    PurgatoryObject,
    add_purgatory,
    replace_purgatory,
    set_symbol,
)
from kimagekit.segments import (
    U64_MAX,
    KexecBuf,
    Role,
    SegmentList,
    Target,
    add_buffer,
    align_down,
    align_up,
    locate_mem_hole,
)

__all__ = ["ARCH", "FMT", "IMAGE_FMT", "KERNEL_ENTRY_SYMBOL", "MODELLED", "PAGE_SIZE",
           "PMD_SIZE",
           "ImageHeader", "Placement", "build", "chosen_hook", "image_header",
           "kernel_placement", "load_kernel", "set_kernel_entry"]

FMT = "vmlinux"
ARCH = "riscv64"
PAGE_SIZE = 0x1000
PMD_SIZE = 0x200000  # the RV64 boot protocol's kernel alignment (elf_find_pbase)
KERNEL_ENTRY_SYMBOL = "riscv_kernel_entry"
MODELLED = (7, 2)  # the loading kernel whose rules this module follows
IMAGE_FMT = "riscv-image"
_HEADER = struct.Struct("<IIQQQIIQ8s4sI")  # struct riscv_image_header (asm/image.h), 64 bytes
MAGIC, MAGIC2 = b"RISCV\0\0\0", b"RSC\x05"
HEADER_VERSION = 2  # RISCV_HEADER_VERSION: 0.2, the first with magic2


@dataclass(frozen=True)
class ImageHeader:
    text_offset: int
    image_size: int
    flags: int
    version: int
    magic: bytes
    magic2: bytes


@dataclass(frozen=True)
class Placement:
    """``elf_find_pbase``: the vmlinux's lowest p_paddr/p_vaddr (``old_pbase``), where it goes
    (``new_pbase``) and the kernel entry (``image->start`` before the purgatory replaces it)."""

    old_pbase: int
    lowest_vaddr: int
    new_pbase: int
    start: int


def kernel_placement(sl: SegmentList, kernel: bytes | memoryview) -> Placement:
    """``elf_find_pbase``: a hole of the whole FILE's length, page-rounded, 2 MiB aligned,
    bottom-up from the lowest p_paddr (kexec_elf.c lines 57-101)."""
    loads = kernel_loads(kernel, ARCH)
    paddr = min(ph.p_paddr for ph in loads)
    vaddr = min(ph.p_vaddr for ph in loads)
    memsz = align_up(len(kernel), PAGE_SIZE)
    kb = KexecBuf(b"", memsz, Role.KERNEL, buf_align=PMD_SIZE, buf_min=paddr, buf_max=U64_MAX)
    mem = locate_mem_hole(sl, kb, memsz, PMD_SIZE)
    entry = int.from_bytes(bytes(kernel[24:32]), "little")
    return Placement(paddr, vaddr, mem, (entry - vaddr + mem) & U64_MAX)


def image_header(kernel: bytes | memoryview) -> ImageHeader:
    """The flat Image's header as ``image_probe`` and ``image_load`` check it (kexec_image.c
    lines 18-61). The probe asks for magic2 only from header version 0.2; kimagekit also
    refuses a file with neither magic, which the kernel would load as a kernel anyway."""
    if len(kernel) < _HEADER.size:
        raise ParseError(f"file is {len(kernel)} bytes, shorter than a RISC-V Image header "
                         f"({_HEADER.size}): neither loader takes it", fmt=IMAGE_FMT,
                         field="header", offset=0)
    f = _HEADER.unpack_from(bytes(kernel[:_HEADER.size]))
    h = ImageHeader(f[2], f[3], f[4], f[5], f[8], f[9])
    if h.version >= HEADER_VERSION and h.magic2 != MAGIC2:
        raise ParseError(f"header version {h.version >> 16}.{h.version & 0xFFFF} without "
                         f"magic2 {MAGIC2!r}: neither the ELF nor the Image loader takes it "
                         "(-ENOEXEC)", fmt=IMAGE_FMT, field="magic2", offset=0x38)
    if h.magic != MAGIC and h.magic2 != MAGIC2:
        raise ParseError("not an ELF vmlinux nor a RISC-V Image (no RISCV magic at 0x30 nor "
                         "RSC\\x05 at 0x38)", fmt=IMAGE_FMT, field="magic", offset=0x30)
    if h.image_size == 0:
        raise ParseError("image_size is 0: image_load refuses it (-EINVAL)", fmt=IMAGE_FMT,
                         field="image_size", offset=0x10)
    if h.flags & 1:
        raise ParseError("a big-endian Image (flags bit 0): the little-endian kernel refuses "
                         "it (-EINVAL)", fmt=IMAGE_FMT, field="flags", offset=0x18)
    return h


def load_kernel(sl: SegmentList, kernel: bytes | memoryview
                ) -> tuple[SegmentList, int, int]:
    """The kernel segments as the loader 7.2 picks adds them; returns the list,
    ``kernel_start`` and the ``kernel_len`` it passes to ``load_extra_segments``: the entry
    and the file's length (ELF, kexec_elf.c line 129), or the load address and the page-rounded
    image_size (Image, kexec_image.c line 86)."""
    if len(kernel) >= 4 and bytes(kernel[:4]) == elf.ELFMAG:
        place = kernel_placement(sl, kernel)
        # riscv_kexec_elf_load: each PT_LOAD at a fixed address, its kexec_buf otherwise empty
        for ph in kernel_loads(kernel, ARCH):
            size = min(ph.p_filesz, ph.p_memsz)
            body = memoryview(kernel)[ph.p_offset:ph.p_offset + size]
            mem = ph.p_paddr - place.old_pbase + place.new_pbase
            sl, _ = add_buffer(sl, KexecBuf(body, ph.p_memsz, Role.KERNEL,
                                            buf_align=ph.p_align, mem=mem))
        return sl, place.start, len(kernel)
    h = image_header(kernel)
    # image_load, lines 63-81: the whole file, bottom-up anywhere, aligned to text_offset
    sl, seg = add_buffer(sl, KexecBuf(kernel, h.image_size, Role.KERNEL,
                                      buf_align=h.text_offset))
    return sl, seg.mem, seg.memsz


def build(target: Target, kernel: bytes | memoryview, dtb: bytes, dt_hook: DtHook, *,
          purgatory: PurgatoryObject, initrd: bytes | memoryview | None = None,
          handover: bytes | None = None, handover_size: int | None = None,
          handover_style: HandoverStyle = HandoverStyle.IMA, cmdline: str = "",
          policy: DigestPolicy = DigestPolicy.UPSTREAM_6_15,
          entry_rule: EntryRule = EntryRule.PURGATORY_START) -> KexecImage:
    """Compose and seal a riscv64 image. ``target`` is the running system's memory (its RAM end
    is ``max_low_pfn``, the search bound of everything after the kernel)."""
    sl = SegmentList(target)
    sl, ho = add_ima_buffer(sl, handover, handover_size, policy)
    sl, start, kernel_len = load_kernel(sl, kernel)
    # load_extra_segments(image, kernel_start, kernel_len): machine_kexec_file.c lines 276-278
    buf_min = start + kernel_len
    buf_max = align_down(max(r.end for r in target.ram), PAGE_SIZE)  # PFN_PHYS(max_low_pfn)
    sl, loaded = add_purgatory(sl, purgatory, buf_min=buf_min, buf_max=buf_max, top_down=True,
                               entry_rule=entry_rule)
    loaded = set_kernel_entry(loaded, start)
    sl = replace_purgatory(sl, loaded)
    rd = None
    if initrd is not None:
        sl, seg = add_buffer(sl, KexecBuf(initrd, len(initrd), Role.INITRD, buf_align=PAGE_SIZE,
                                          buf_min=buf_min, buf_max=buf_max, top_down=True))
        rd = (seg.mem, len(initrd))
    new_dtb = dt_hook(DtRequest(dtb, rd, ho, handover_style, cmdline))
    sl, _ = add_buffer(sl, KexecBuf(new_dtb, len(new_dtb), Role.DTB, buf_align=PAGE_SIZE,
                                    buf_min=buf_min, buf_max=buf_max, top_down=True))
    return seal(sl, policy, purgatory=loaded, cmdline=cmdline.encode(),
                handover_style=handover_style)


def chosen_hook(have_ima_kexec: bool = True) -> DtHook:
    """``of_kexec_alloc_and_setup_fdt(image, initrd_pbase, initrd_len, cmdline, 0)`` then
    ``fdt_pack`` (machine_kexec_file.c lines 355-365): no extra size, always packed. An empty
    command line is none (``cmdline_len`` 0 leaves ``cmdline_buf`` NULL)."""

    def hook(req: DtRequest) -> bytes:
        fdt = of_kexec.setup_fdt(req.dtb, of_kexec.FdtRequest(
            initrd=req.initrd, cmdline=req.cmdline or None, handover=req.handover,
            handover_style=req.handover_style),
            of_kexec.ArchFdt(PAGE_SIZE, have_ima_kexec=have_ima_kexec))
        return fdt.blob

    return hook


def set_kernel_entry(lp: LoadedPurgatory, start: int) -> LoadedPurgatory:
    """``kexec_purgatory_get_set_symbol(image, "riscv_kernel_entry", &kernel_start, 8, 0)``."""
    return set_symbol(lp, KERNEL_ENTRY_SYMBOL, start.to_bytes(8, "little"))
