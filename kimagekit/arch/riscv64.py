"""The riscv64 kexec_file ELF loader (7.2: ``arch/riscv/kernel/kexec_elf.c`` and
``load_extra_segments`` in ``arch/riscv/kernel/machine_kexec_file.c``), offline.

Segment order as the kernel adds them: the IMA hand-over (``ima_add_kexec_buffer``, before the
image loader), the vmlinux PT_LOADs, the purgatory, the initrd, the device tree. Holes are
searched in free memory as riscv's ``kexec_walk_memblock`` walks it (ARCH_KEEP_MEMBLOCK): RAM
less the reserved ranges, from the top for a top-down search. Not modelled: a CMA allocation
(``kexec_alloc_contig``: the kernel tries one first unless KEXEC_FILE_NO_CMA; offline there is
no CMA area), KHO scratch areas, crash loads (elfcorehdr).

Only the ELF loader (``elf_kexec_ops``, probed first) is modelled; a kernel that is not ELF
would go to 7.2's flat-Image loader (``image_kexec_ops``), which kimagekit refuses to imitate.
"""

from __future__ import annotations

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

__all__ = ["ARCH", "FMT", "KERNEL_ENTRY_SYMBOL", "PAGE_SIZE", "PMD_SIZE", "Placement", "build",
           "chosen_hook", "kernel_placement", "set_kernel_entry"]

FMT = "vmlinux"
ARCH = "riscv64"
PAGE_SIZE = 0x1000
PMD_SIZE = 0x200000  # the RV64 boot protocol's kernel alignment (elf_find_pbase)
KERNEL_ENTRY_SYMBOL = "riscv_kernel_entry"


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


def _check_elf(kernel: bytes | memoryview) -> None:
    if len(kernel) >= 18 and bytes(kernel[:4]) == elf.ELFMAG:
        return
    raise ParseError("not an ELF vmlinux: 7.2 would try its flat-Image loader "
                     "(image_kexec_ops), which kimagekit does not model; give the ELF vmlinux",
                     fmt=FMT, field="e_ident", offset=0)


def build(target: Target, kernel: bytes | memoryview, dtb: bytes, dt_hook: DtHook, *,
          purgatory: PurgatoryObject, initrd: bytes | memoryview | None = None,
          handover: bytes | None = None, handover_size: int | None = None,
          handover_style: HandoverStyle = HandoverStyle.IMA, cmdline: str = "",
          policy: DigestPolicy = DigestPolicy.UPSTREAM_6_15,
          entry_rule: EntryRule = EntryRule.PURGATORY_START) -> KexecImage:
    """Compose and seal a riscv64 image. ``target`` is the running system's memory (its RAM end
    is ``max_low_pfn``, the search bound of everything after the kernel)."""
    _check_elf(kernel)
    sl = SegmentList(target)
    sl, ho = add_ima_buffer(sl, handover, handover_size, policy)
    place = kernel_placement(sl, kernel)
    # riscv_kexec_elf_load: each PT_LOAD at a fixed address, its kexec_buf otherwise empty
    for ph in kernel_loads(kernel, ARCH):
        size = min(ph.p_filesz, ph.p_memsz)
        body = memoryview(kernel)[ph.p_offset:ph.p_offset + size]
        mem = ph.p_paddr - place.old_pbase + place.new_pbase
        sl, _ = add_buffer(sl, KexecBuf(body, ph.p_memsz, Role.KERNEL, buf_align=ph.p_align,
                                        mem=mem))
    # load_extra_segments(image, image->start, kernel_len): machine_kexec_file.c lines 276-278
    buf_min = place.start + len(kernel)
    buf_max = align_down(max(r.end for r in target.ram), PAGE_SIZE)  # PFN_PHYS(max_low_pfn)
    sl, loaded = add_purgatory(sl, purgatory, buf_min=buf_min, buf_max=buf_max, top_down=True,
                               entry_rule=entry_rule)
    loaded = set_kernel_entry(loaded, place.start)
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
