"""The powerpc kexec_file ELF loader (``arch/powerpc/kexec/elf_64.c``), offline.

Segment order as a 6.x kernel adds them: the IMA hand-over first (``ima_add_kexec_buffer`` runs
before the image loader), the vmlinux PT_LOADs, the purgatory, the initrd, the device tree. The
device-tree edit is a hook so this module needs nothing from the DT layer: it is told where the
initrd and hand-over landed and returns the new tree, which is then placed last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from kimagekit.arch import ppc64_crash
from kimagekit.arch.common import add_ima_buffer
from kimagekit.arch.ppc64_purgatory import SLAVE_CODE_SIZE, PurgatoryArgs, setup_purgatory
from kimagekit.elf_model import Load
from kimagekit.errors import ParseError, UsageError, converted
from kimagekit.formats import elf
from kimagekit.image import ARCHES, HandoverStyle, KexecImage, seal
from kimagekit.of_kexec import CrashChosen
from kimagekit.purgatory import DigestPolicy, PurgatoryObject, add_purgatory, replace_purgatory
from kimagekit.segments import (
    U64_MAX,
    KexecBuf,
    MemRange,
    Role,
    SegmentList,
    Target,
    add_buffer,
)

__all__ = [
    "FMT", "NO_PURGATORY", "CrashLoad", "DtHook", "DtRequest", "build", "kernel_loads",
    "slave_code",
]

FMT = "vmlinux"
NO_PURGATORY = ("ppc64 needs --purgatory: the kernel always loads one (the ELF loader enters the "
                "purgatory, never the kernel); --no-purgatory builds an image for inspection only")


@dataclass(frozen=True)
class DtRequest:
    """What the device-tree hook must write into ``/chosen`` (ranges as (start, size))."""

    dtb: bytes
    initrd: tuple[int, int] | None
    handover: tuple[int, int] | None
    handover_style: HandoverStyle
    cmdline: str
    crash: CrashChosen | None = None  # a kdump load's /chosen items
    backup_start: int = 0  # image->arch.backup_start


@dataclass(frozen=True)
class CrashLoad:
    """A kdump load: the running system's crash facts and its crash memory ranges
    (``get_crash_memory_ranges``, read from its tree beforehand), (start, end) inclusive."""

    inputs: ppc64_crash.CrashInputs
    ranges: tuple[tuple[int, int], ...]


DtHook = Callable[[DtRequest], bytes]


def slave_code(data: bytes | memoryview, arch: str) -> memoryview:
    """The bytes ``elf64_load`` hands ``setup_purgatory`` as the slave code: the file from the
    first program header's ``p_offset`` (whatever its type), SLAVE_CODE_SIZE of them."""
    kernel_loads(data, arch)  # the header checks
    little = ARCHES[arch][1]
    at = 32
    phoff = int.from_bytes(bytes(data[at:at + 8]), "little" if little else "big")
    off = int.from_bytes(bytes(data[phoff + 8:phoff + 16]), "little" if little else "big")
    code = memoryview(data)[off:off + SLAVE_CODE_SIZE]
    return code


def kernel_loads(data: bytes | memoryview, arch: str) -> list[Load]:
    """The PT_LOAD headers of a ppc64 vmlinux, each checked against the file."""
    machine, little = ARCHES[arch]
    if len(data) < 64 or bytes(data[:4]) != elf.ELFMAG or data[4] != elf.ELFCLASS64:
        raise ParseError("not an ELF64 file", fmt=FMT, field="e_ident", offset=0)
    if data[5] != (elf.ELFDATA2LSB if little else elf.ELFDATA2MSB):
        raise ParseError(f"byte order does not match {arch}", fmt=FMT, field="e_ident.EI_DATA",
                         offset=5)
    st = elf.elf_structs(elf.ELFCLASS64, little)
    with converted(FMT, "ehdr", 0):
        eh = st.Ehdr.parse(bytes(data[:64]))
    if eh.e_machine != machine:
        raise ParseError(f"e_machine {eh.e_machine} is not {machine}", fmt=FMT,
                         field="e_machine", offset=18)
    if eh.e_phentsize != 56 or eh.e_phoff + eh.e_phnum * 56 > len(data):
        raise ParseError("program headers run past the end of the file", fmt=FMT,
                         field="e_phoff", offset=32)
    out = []
    for i in range(eh.e_phnum):
        off = eh.e_phoff + i * 56
        with converted(FMT, f"phdr[{i}]", off):
            ph = st.Phdr.parse(bytes(data[off:off + 56]))
        if ph.p_type != elf.PT_LOAD:
            continue
        if ph.p_offset + min(ph.p_filesz, ph.p_memsz) > len(data):
            raise ParseError("PT_LOAD content runs past the end of the file", fmt=FMT,
                             field=f"phdr[{i}].p_filesz", offset=off + 32)
        out.append(Load(ph.p_offset, ph.p_vaddr, ph.p_paddr, ph.p_filesz, ph.p_memsz, ph.p_flags,
                        ph.p_align))
    if not out:
        raise ParseError("no PT_LOAD segment", fmt=FMT, field="e_phnum", offset=56)
    return out


def build(target: Target, kernel: bytes | memoryview, dtb: bytes, dt_hook: DtHook, *,
          initrd: bytes | memoryview | None = None, handover: bytes | None = None,
          handover_size: int | None = None,
          handover_style: HandoverStyle = HandoverStyle.SEED, cmdline: str = "",
          purgatory: PurgatoryObject | None = None,
          policy: DigestPolicy = DigestPolicy.SEED, rma_size: int | None = None,
          no_purgatory: bool = False, opal: tuple[int, int] | None = None,
          crash: CrashLoad | None = None) -> KexecImage:
    """Compose and seal a ppc64 image from prepared bytes. ``handover_size`` is the segment's
    memsz (room for later measurements); ``rma_size`` bounds everything but the hand-over
    (``ppc64_rma_size``; default: the first RAM range). A purgatory is required unless
    ``no_purgatory`` (an image for inspection only, entered at the kernel); it is filled as
    ``setup_purgatory_ppc64`` fills it, ``opal`` being the running tree's /ibm,opal values.
    ``crash``: a kdump load (elf_64.c:50-88): everything inside the crash kernel region, the
    backup and ELF core header segments after the purgatory, ``elfcorehdr=`` before the
    command line, and no IMA buffer (ima_kexec.c:169)."""
    if purgatory is None and not no_purgatory:
        raise UsageError(NO_PURGATORY)
    if purgatory is not None and no_purgatory:
        raise UsageError("--no-purgatory and --purgatory exclude each other")
    rma = rma_size if rma_size is not None else min(r.end for r in target.ram[:1])
    p_min, top = 0, rma
    if crash is not None:
        if handover is not None:
            raise UsageError("a crash load carries no IMA hand-over: ima_add_kexec_buffer skips "
                             "KEXEC_TYPE_CRASH (security/integrity/ima/ima_kexec.c:169)")
        # elf_64.c:45-50; kexec_locate_mem_hole searches crashk_res only (kexec_file.c:596)
        start, size = crash.inputs.crashkernel
        p_min, top = start, min(crash.inputs.crash_end, rma - 1)
        target = replace(target, ram=(MemRange(start, size),))
    sl = SegmentList(target)
    sl, ho = add_ima_buffer(sl, handover, handover_size, policy)
    kernel_addr = U64_MAX
    # The loader reuses one kexec_buf: after the PT_LOADs its buf_min is still the last one's
    # p_paddr (and its buf_align the last p_align), and later segments are searched from there.
    buf_min, align = 0, 0
    for ph in kernel_loads(kernel, target.arch):
        size = min(ph.p_filesz, ph.p_memsz)
        body = memoryview(kernel)[ph.p_offset:ph.p_offset + size]
        buf_min, align = ph.p_paddr, ph.p_align
        sl, seg = add_buffer(sl, KexecBuf(body, ph.p_memsz, Role.KERNEL, buf_align=ph.p_align,
                                          buf_min=buf_min, buf_max=top))
        kernel_addr = min(kernel_addr, seg.mem)
    loaded = None
    if purgatory is not None:
        sl, loaded = add_purgatory(sl, purgatory, buf_min=p_min, buf_max=top, top_down=True)
    backup, chosen = 0, None
    if crash is not None:
        sl, backup, chosen, cmdline = _crash_segments(sl, crash, buf_min, top, align, cmdline)
    rd = None
    if initrd is not None:
        sl, seg = add_buffer(sl, KexecBuf(initrd, len(initrd), Role.INITRD, buf_min=buf_min,
                                          buf_max=top))
        rd = (seg.mem, len(initrd))
    new_dtb = dt_hook(DtRequest(dtb, rd, ho, handover_style, cmdline, chosen, backup))
    sl, dt_seg = add_buffer(sl, KexecBuf(new_dtb, len(new_dtb), Role.DTB, buf_min=buf_min,
                                         buf_max=top, top_down=True))
    if loaded is not None:
        # elf64_load's last step, after the tree is placed.
        loaded = setup_purgatory(loaded, slave_code(kernel, target.arch),
                                 PurgatoryArgs(kernel_addr, dt_seg.mem, backup_start=backup,
                                               crash=crash is not None, opal=opal))
        sl = replace_purgatory(sl, loaded)
    # Without a purgatory (inspection only) the entry is the kernel's load address.
    return seal(sl, policy, purgatory=loaded, entry=kernel_addr, cmdline=cmdline.encode(),
                handover_style=handover_style)


def _crash_segments(sl: SegmentList, crash: CrashLoad, buf_min: int, top: int, align: int,
                    cmdline: str) -> tuple[SegmentList, int, CrashChosen, str]:
    """load_crashdump_segments_ppc64 (file_load_64.c:463-486): the backup region (64 KiB of
    zeros the purgatory fills at crash time, 344-375) and the ELF core headers (402-453), both
    bottom-up with the kexec_buf the kernel segments left; then the kdump command line."""
    little = ARCHES[sl.target.arch][1]
    zeros = bytes(ppc64_crash.BACKUP_SRC_SIZE)
    sl, seg = add_buffer(sl, KexecBuf(zeros, len(zeros), Role.OTHER, buf_align=align,
                                      buf_min=buf_min, buf_max=top))
    backup = seg.mem
    ranges = list(crash.ranges)
    headers = ppc64_crash.sync_backup_region_phdr(
        ppc64_crash.elf_headers(ranges, crash.inputs, little), backup, little)
    memsz = ppc64_crash.elfcorehdr_memsz(len(headers), len(ranges), crash.inputs)
    sl, seg = add_buffer(sl, KexecBuf(headers, memsz, Role.OTHER, buf_align=align,
                                      buf_min=buf_min, buf_max=top))
    # elf_headers_sz is kbuf->memsz after kexec_add_buffer page-aligned it (kexec_file.c:781)
    chosen = CrashChosen((seg.mem, seg.memsz), (crash.inputs.crashkernel,))
    return sl, backup, chosen, ppc64_crash.kdump_cmdline(seg.mem, cmdline)
