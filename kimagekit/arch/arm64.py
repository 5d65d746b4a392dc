"""The arm64 kexec_file Image loader (``arch/arm64/kernel/kexec_image.c`` and
``machine_kexec_file.c`` of 7.2), offline.

Segment order as the kernel adds them: the IMA hand-over (``ima_add_kexec_buffer`` runs before
the image loader), the kernel, the initrd, the device tree. arm64 loads no purgatory: the
kernel's relocation code copies the segments and enters the kernel with the tree's address in
x0, and nothing checks a digest at reboot. Line numbers are linux-source 7.2.13's.

Not modelled, so an image stands for a load that does not use them: the CMA first fit
(``kexec_alloc_contig``, 6.17+: a load without ``KEXEC_FILE_NO_CMA`` on a kernel with a CMA
area puts each segment wherever CMA has room, ignoring the bounds below), KHO scratch areas,
and crash loads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kimagekit import of_kexec
from kimagekit.arch.common import add_ima_buffer
from kimagekit.arch.ppc64 import DtHook, DtRequest
from kimagekit.errors import ParseError, RuleError
from kimagekit.formats import arm64 as a64
from kimagekit.image import HandoverStyle, KexecImage, seal
from kimagekit.purgatory import DigestPolicy
from kimagekit.segments import FMT as PLACEMENT_FMT
from kimagekit.segments import (
    U64_MAX,
    KexecBuf,
    Role,
    Segment,
    SegmentList,
    Target,
    add_buffer,
    align_down,
    align_up,
)

__all__ = [
    "DTB_ALIGN", "FMT", "INITRD_WINDOW", "MAX_FDT_SIZE", "MIN_KIMG_ALIGN", "ZBOOT_REFUSED",
    "Arm64Header",
    "build", "chosen_hook", "probe",
]

FMT = "arm64-image"
MIN_KIMG_ALIGN = 2 << 20  # arch/arm64/include/asm/boot.h:18
DTB_ALIGN = 2 << 20  # machine_kexec_file.c:182 (SZ_2M: the tree must not cross 2 MiB)
MAX_FDT_SIZE = 2 << 20  # asm/boot.h:13: the most of its tree an arm64 kernel maps at boot
INITRD_WINDOW = 32 << 30  # machine_kexec_file.c:152-153 (a 1 GiB-aligned window of 32 GiB)
ZBOOT_REFUSED = ("an EFI zboot image (compressed Image inside a PE file): 7.2's arm64 "
                 "kexec_file loader probes only the ARM\\x64 magic at 0x38 (kexec_image.c:30) "
                 "and has no zboot path, so the kernel refuses it (-ENOEXEC); kexec-tools "
                 "unwraps it in user space: give the decompressed Image")


def chosen_hook(page_size: int, notes: list[str] | None = None, *,
                seeds: of_kexec.Seeds | None = None) -> DtHook:
    """The new tree as machine_kexec_file.c:166-175 makes it: ``of_kexec_alloc_and_setup_fdt``
    with no extra size (arm64 passes 0), then packed. ``seeds``: the ``kaslr-seed`` and
    ``rng-seed`` a kernel with an initialised RNG writes (random there; offline they are inputs,
    and without them both are omitted, as a kernel whose RNG is not ready omits them); what is
    not modelled is appended to ``notes``."""
    arch = of_kexec.ArchFdt(page_size, pack=True, extra_size=0)

    def hook(req: DtRequest) -> bytes:
        new = of_kexec.setup_fdt(req.dtb, of_kexec.FdtRequest(
            initrd=req.initrd, cmdline=req.cmdline or None, handover=req.handover,
            handover_style=req.handover_style, seeds=seeds), arch)
        if notes is not None:
            notes.extend(n for n in new.notes if n not in notes)
        return new.blob

    return hook


@dataclass(frozen=True)
class Arm64Header:
    """The Image header fields the loader reads (``struct arm64_image_header``)."""

    text_offset: int
    image_size: int
    flags: int

    @property
    def big_endian(self) -> bool:
        return bool(self.flags >> a64.FLAG_BE_SHIFT & 1)

    @property
    def page_size(self) -> int | None:
        """The page size the Image was built for (None: the flag leaves it unspecified)."""
        return a64.PAGE_SIZES[self.flags >> a64.FLAG_PAGE_SIZE_SHIFT & a64.FLAG_PAGE_SIZE_MASK]

    @property
    def phys_anywhere(self) -> bool:
        return bool(self.flags & a64.FLAG_PHYS_ANYWHERE)


def _no(msg: str, field: str, offset: int | None) -> ParseError:
    return ParseError(msg, fmt=FMT, field=field, offset=offset)


def probe(kernel: bytes | memoryview, *, mixed_endian: bool = False,
          granules: frozenset[int] = frozenset(a64.GRANULES)) -> Arm64Header:
    """``image_probe`` and the checks at the top of ``image_load``, for a little-endian loading
    kernel on a CPU that supports ``granules`` (page sizes) and, when ``mixed_endian``, both
    byte orders at EL0/EL1. A PE-wrapped Image (the EFI stub's) is an Image: the probe reads
    its header at offset 0 whatever precedes the magic."""
    head = bytes(kernel[:a64.ARM64_HEADER_SIZE])
    if head[:2] == b"MZ" and head[a64.ZBOOT_MAGIC_OFFSET:a64.ZBOOT_MAGIC_OFFSET + 4] \
            == a64.ZBOOT_MAGIC:
        raise _no(ZBOOT_REFUSED, "image_type", a64.ZBOOT_MAGIC_OFFSET)
    if len(head) < a64.ARM64_HEADER_SIZE:
        raise _no(f"file is {len(kernel)} bytes, shorter than the Image header (64): "
                  "kexec_image.c:27 refuses it", "header", 0)
    h = a64.image_header.parse(head)
    if h.magic != a64.ARM64_IMAGE_MAGIC:
        raise _no("no ARM\\x64 magic at 0x38: kexec_image.c:30 refuses it", "magic",
                  a64.ARM64_MAGIC_OFFSET)
    if h.image_size == 0:
        raise _no("image_size is 0 (a header older than 3.17, ambiguous): kexec_image.c:55 "
                  "refuses it", "image_size", 0x10)
    hdr = Arm64Header(h.text_offset, h.image_size, h.flags)
    if hdr.big_endian and not mixed_endian:
        raise _no("a big-endian Image: a little-endian loading kernel takes it only on a CPU "
                  "with mixed-endian support (kexec_image.c:62)", "flags", 0x18)
    if hdr.page_size is not None and hdr.page_size not in granules:
        raise _no(f"built for {hdr.page_size // 1024} KiB pages, a granule this CPU lacks "
                  "(kexec_image.c:66-72)", "flags", 0x18)
    return hdr


def _other_segments(sl: SegmentList, kernel: Segment, dtb: bytes, dt_hook: DtHook,
                    initrd: bytes | memoryview | None, handover: tuple[int, int] | None,
                    style: HandoverStyle, cmdline: str, force: bool) -> SegmentList:
    """``load_other_segments``: the initrd and the tree, never below the kernel's end."""
    buf_min = kernel.mem + kernel.memsz  # machine_kexec_file.c:105
    rd = None
    if initrd is not None:
        # machine_kexec_file.c:145-156: bottom-up, page aligned, ending in the window
        window = align_down(kernel.mem, 1 << 30) + INITRD_WINDOW
        sl, seg = add_buffer(sl, KexecBuf(initrd, len(initrd), Role.INITRD, buf_min=buf_min,
                                          buf_max=window))
        rd = (seg.mem, len(initrd))
    new = dt_hook(DtRequest(dtb, rd, handover, style, cmdline))  # :166, packed at :175
    if len(new) > MAX_FDT_SIZE and not force:
        # the loading kernel takes it; the next one cannot map it (fixmap.c:166) and stops
        raise RuleError(f"the new tree is {len(new)} bytes, more than the {MAX_FDT_SIZE} an "
                        "arm64 kernel maps at boot (asm/boot.h:13, mm/fixmap.c:166): the next "
                        "kernel would not boot (--force builds it anyway)", fmt="dtb",
                        field="totalsize")
    # machine_kexec_file.c:177-186: the same kbuf, so buf_min is still the kernel's end
    sl, _ = add_buffer(sl, KexecBuf(new, len(new), Role.DTB, buf_align=DTB_ALIGN,
                                    buf_min=buf_min, buf_max=U64_MAX, top_down=True))
    return sl


def build(target: Target, kernel: bytes | memoryview, dtb: bytes, dt_hook: DtHook, *,
          initrd: bytes | memoryview | None = None, handover: bytes | None = None,
          handover_size: int | None = None, handover_style: HandoverStyle = HandoverStyle.IMA,
          cmdline: str = "", policy: DigestPolicy = DigestPolicy.SEED,
          force: bool = False) -> KexecImage:
    """Compose and seal an arm64 image. ``target.page_size`` is the loading kernel's page size
    (``kexec_add_buffer`` rounds with it); ``handover_size`` the hand-over's memsz. ``force``:
    build a tree the next kernel cannot map (over MAX_FDT_SIZE) anyway."""
    hdr = probe(kernel)
    sl = SegmentList(target)
    sl, ho = add_ima_buffer(sl, handover, handover_size, policy)
    memsz = hdr.image_size + hdr.text_offset  # kexec_image.c:83-88
    if len(kernel) > align_up(memsz, target.page_size) - hdr.text_offset:
        # placed first, then refused by sanity_check_segment_list once all are added
        raise RuleError(f"the file ({len(kernel):#x} bytes) is longer than image_size "
                        f"({hdr.image_size:#x}) rounded to the page: sanity_check_segment_list "
                        "refuses bufsz > memsz (kexec_core.c:171)", fmt=FMT, field="image_size",
                        offset=0x10)
    buf_min, why = 0, None
    while True:  # kexec_image.c:97-113: the next hole up until the other segments fit
        try:
            with_kernel, kseg = add_buffer(sl, KexecBuf(kernel, memsz, Role.KERNEL,
                                                        buf_align=MIN_KIMG_ALIGN,
                                                        buf_min=buf_min))
        except RuleError as err:
            raise RuleError("could not find any suitable kernel location (kexec_image.c:116): "
                            f"{why or err.message}", fmt=PLACEMENT_FMT,
                            field=err.field) from None
        try:
            sl_all = _other_segments(with_kernel, kseg, dtb, dt_hook, initrd, ho,
                                     handover_style, cmdline, force)
            break
        except RuleError as err:
            if err.fmt != PLACEMENT_FMT:
                raise  # the tree itself is wrong: no other kernel place changes that
            why = f"{err.field}: {err.message}"
            buf_min = kseg.mem + kseg.memsz  # kexec_image.c:111
    k = sl_all.index_of(Role.KERNEL)
    assert k is not None
    seg = sl_all.segments[k]
    # kexec_image.c:121-123: the segment starts text_offset in; the entry is its start
    seg = replace(seg, mem=seg.mem + hdr.text_offset, memsz=seg.memsz - hdr.text_offset)
    sl_all = replace(sl_all, segments=(*sl_all.segments[:k], seg, *sl_all.segments[k + 1:]))
    return seal(sl_all, policy, entry=seg.mem, cmdline=cmdline.encode(),
                handover_style=handover_style)

