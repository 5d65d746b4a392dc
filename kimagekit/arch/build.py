"""``build``: a kexec image composed from files by an arch loader, written atomically, re-read and
verified. The arch modules compose from bytes; this one reads the inputs, prepares the hand-over
and the purgatory the same way for every arch, and reports what was written."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

from kimagekit import ima_kexec, ima_log, kernels, of_kexec
from kimagekit.arch import arm64, ppc64, ppc64_crash, ppc64_dt, riscv64, x86_64
from kimagekit.dtb_file import load_tree
from kimagekit.errors import KimageError, ParseError, UsageError, about_file, input_named
from kimagekit.fileio import check_output, mapped, read_input
from kimagekit.formats import bzimage as bz
from kimagekit.formats import fdt
from kimagekit.formats.ima import Endian
from kimagekit.handover import judge_new_handover
from kimagekit.ima_kexec_events import KexecEvents, with_kexec_events
from kimagekit.image import (
    ARCHES,
    HandoverStyle,
    ImageInfo,
    KexecImage,
    check_page_size,
    read_image,
    write_image,
)
from kimagekit.kho_load import KhoLoad
from kimagekit.loader_profile import NEWEST, LoaderProfile, resolve
from kimagekit.purgatory import FMT as PURGATORY_FMT
from kimagekit.purgatory import DigestPolicy, PurgatoryObject, check_target, parse_purgatory
from kimagekit.segments import DEFAULT_RAM, HoleSearch, MemRange, Role, Target
from kimagekit.sig.kexec_sig import check_kernel_signature

__all__ = [
    "ARM64_PAGE_SIZE", "PPC_ARCHES", "X86_PAGE_SIZE", "Arm64BuildResult", "BuildInputs", "Built",
    "Pathish", "Ppc64BuildResult", "Riscv64BuildResult", "X86BuildResult", "build_arm64",
    "build_ppc64", "build_riscv64", "build_x86_64", "running_tree",
]

Pathish = str | os.PathLike[str]
PPC_ARCHES = ("ppc64le", "ppc64")
X86_PAGE_SIZE = 4096
# Debian's arm64 kernels: CONFIG_ARM64_4K_PAGES=y (the loading kernel's PAGE_SIZE)
ARM64_PAGE_SIZE = 4096


@dataclass(frozen=True)
class BuildInputs:
    """What every arch takes. ``ima`` is a measurement list built into the hand-over (a kexec
    buffer in the target's byte order); ``handover`` raw hand-over bytes instead (not x86-64);
    ``handover_size`` the hand-over's memsz (default: as IMA sizes it). A hand-over the next
    kernel would refuse is Refused unless ``force``."""

    kernel: Pathish
    output: Pathish
    initrd: Pathish | None = None
    cmdline: str = ""
    purgatory: Pathish | None = None
    ima: Pathish | None = None
    handover: Pathish | None = None
    handover_size: int | None = None
    policy: DigestPolicy = DigestPolicy.SEED
    force: bool = False
    require_signature: Pathish | None = None  # x86-64: KEXEC_SIG_FORCE against these certs
    # the loading kernel's kexec_load/kexec_execute entries appended to ``ima`` (6.15+), their
    # digest algorithm (None: the profile's CONFIG_IMA_DEFAULT_HASH)
    ima_events: KexecEvents = KexecEvents.NONE
    ima_hash: str | None = None


@dataclass(frozen=True)
class Ppc64BuildResult:
    output: str
    arch: str
    page_size: int
    policy: str
    entry: int
    digest: str
    handover_entries: int | None  # IMA entries in the hand-over buffer (None: raw or none)


@dataclass(frozen=True)
class X86BuildResult:
    output: str
    arch: str
    policy: str
    entry: int  # the purgatory's
    kernel_entry: int
    boot_params: int
    digest: str
    handover_entries: int | None
    signature_warning: str | None = None  # unsigned or digest mismatch, without --require
    loader_profile: str | None = None  # the loading kernel's rules followed (LoaderProfile.name)


@dataclass(frozen=True)
class Riscv64BuildResult:
    output: str
    arch: str
    policy: str
    entry: int  # the purgatory's
    kernel_entry: int  # riscv_kernel_entry: where the purgatory jumps
    dtb: int  # the tree's address: a1 at the purgatory's entry and the kernel's
    digest: str
    handover_entries: int | None
    loader_profile: str | None = None


@dataclass(frozen=True)
class Arm64BuildResult:
    output: str
    arch: str
    page_size: int  # the loading kernel's
    policy: str
    entry: int  # the kernel's (image->start: its segment's start after the text_offset shift)
    dtb: int  # the tree's address, handed to the kernel in x0
    digest: str  # kimagekit's own: no purgatory checks it on arm64
    handover_entries: int | None
    signature_warning: str | None = None  # unsigned or digest mismatch, without --require
    notes: tuple[str, ...] = ()  # what the new tree leaves out offline (the seeds)


@dataclass(frozen=True)
class Built:
    result: Ppc64BuildResult | X86BuildResult | Arm64BuildResult | Riscv64BuildResult
    image: ImageInfo  # the written image, re-read
    warnings: tuple[str, ...] = ()  # what --force wrote anyway


def build_ppc64(inputs: BuildInputs, *, arch: str, dtb: Pathish,
                handover_style: HandoverStyle = HandoverStyle.SEED,
                page_size: int = ppc64_dt.PPC64_PAGE_SIZE,
                profile: LoaderProfile | None = None, no_purgatory: bool = False,
                running_tree: bool = False,
                crash: ppc64_crash.CrashInputs | None = None,
                exclude: tuple[MemRange, ...] = ()) -> Built:
    """The powerpc ELF loader: RAM, reservations and ``/chosen`` come from ``dtb`` (DTB or DTS).
    ``profile``: the loading kernel (its IMA spare room; the page size is ``page_size``).
    ``no_purgatory``: an image for inspection only (the kernel always loads a purgatory).
    ``running_tree``: ``dtb`` is the running kernel's (/sys/firmware/fdt): the new tree is
    also edited as ``setup_new_fdt_ppc64`` does (else a firmware dump: ``/chosen`` only).
    ``crash``: a kdump load (needs ``running_tree``; no hand-over).
    ``exclude``: ranges the loading kernel's exclude list holds that its tree does not show,
    e.g. its own image ``[0, __pa(_end))`` (``add_kernel_mem_range``,
    ``arch/powerpc/kexec/ranges.c``): no segment is placed there; the tree is unchanged."""
    prof = profile if profile is not None else resolve()
    if arch not in PPC_ARCHES:
        raise UsageError(f"{arch!r} is not one of {', '.join(PPC_ARCHES)}", fmt=ppc64.FMT,
                         field="arch")
    check_output(inputs.output, (*_inputs(inputs), dtb), stdout=False)
    why = check_page_size(page_size)
    if why is not None:
        raise UsageError(f"page size {why}", fmt=ppc64.FMT, field="page_size")
    if inputs.require_signature is not None:
        raise UsageError("--require-signature checks PE kernels (x86_64): a ppc64 vmlinux "
                         "carries no Authenticode signature")
    if (inputs.purgatory is None) != no_purgatory:
        raise UsageError(ppc64.NO_PURGATORY if inputs.purgatory is None else
                         "--no-purgatory and --purgatory exclude each other")
    ho, entries, ho_size = _handover(inputs, _endian(ARCHES[arch][1]), page_size, prof)
    with input_named(dtb):
        tree = load_tree(dtb)
        target = ppc64_dt.target_from_tree(tree, arch, page_size)
        target = replace(target, reserved=target.reserved + exclude)
        opal = ppc64_dt.opal_from_tree(tree) if inputs.purgatory is not None else None
        load = None
        if crash is not None:
            if not running_tree:
                raise UsageError("--crash needs --dtb-from running: the kdump tree's ranges "
                                 "come from the running kernel's tree")
            ppc64_crash.check_memory(tree, crash)
            load = ppc64.CrashLoad(crash, tuple(ppc64_crash.crash_memory_ranges(tree, crash)))
    purg = _purgatory(inputs.purgatory, arch)
    rd = _initrd(inputs.initrd)

    def compose(kernel: memoryview) -> KexecImage:
        return ppc64.build(target, kernel, tree.build(),
                           ppc64_dt.chosen_hook(page_size, running_tree, crash),
                           initrd=rd, handover=ho, handover_size=ho_size,
                           handover_style=handover_style, cmdline=inputs.cmdline,
                           purgatory=purg, policy=inputs.policy, no_purgatory=no_purgatory,
                           opal=opal, crash=load)

    # Only the vmlinux's own faults name it; placement refusals are about the layout.
    digest, info, warnings = _write_verified(inputs, compose, (ppc64.FMT,), inputs.purgatory)
    return Built(Ppc64BuildResult(str(inputs.output), arch, page_size, inputs.policy.value,
                                  info.entry, digest, entries), info, warnings)


def build_arm64(inputs: BuildInputs, *, dtb: Pathish,
                handover_style: HandoverStyle = HandoverStyle.IMA,
                page_size: int = ARM64_PAGE_SIZE,
                profile: LoaderProfile | None = None,
                seeds: of_kexec.Seeds | None = None) -> Built:
    """The arm64 Image loader: RAM, reservations and ``/chosen`` come from ``dtb`` (DTB or DTS);
    ``page_size`` is the loading kernel's. No purgatory: one given is refused. The PE-wrapped
    Image's signature is checked as for x86_64 (``inputs.require_signature``). ``seeds``: the
    tree's ``kaslr-seed`` and ``rng-seed`` (omitted without them: nothing random is invented)."""
    prof = profile if profile is not None else resolve()
    check_output(inputs.output, (*_inputs(inputs), dtb), stdout=False)
    why = check_page_size(page_size)
    if why is not None:
        raise UsageError(f"page size {why}", fmt=arm64.FMT, field="page_size")
    if inputs.purgatory is not None:
        raise UsageError("arm64 loads no purgatory (the kernel's relocation code enters the "
                         "next kernel directly): --purgatory is not taken")
    # kexec_image.c:135: the Image's PE signature (CONFIG_KEXEC_IMAGE_VERIFY_SIG)
    sig_warning = check_kernel_signature(inputs.kernel, inputs.require_signature)
    ho, entries, ho_size = _handover(inputs, "<", page_size, prof)
    with input_named(dtb):
        tree = load_tree(dtb)
        target = ppc64_dt.target_from_tree(tree, "arm64", page_size)
    rd = _initrd(inputs.initrd)

    notes: list[str] = []

    def compose(kernel: memoryview) -> KexecImage:
        return arm64.build(target, kernel, tree.build(),
                           arm64.chosen_hook(page_size, notes, seeds=seeds),
                           initrd=rd, handover=ho, handover_size=ho_size,
                           handover_style=handover_style, cmdline=inputs.cmdline,
                           policy=inputs.policy, force=inputs.force)

    digest, info, warnings = _write_verified(inputs, compose, (arm64.FMT,))
    dt = info.segment(Role.DTB)
    assert dt is not None
    if dt.bufsz > arm64.MAX_FDT_SIZE:
        warnings += (f"written with --force: the tree is {dt.bufsz} bytes, more than the "
                     f"{arm64.MAX_FDT_SIZE} an arm64 kernel maps at boot",)
    return Built(Arm64BuildResult(str(inputs.output), "arm64", page_size, inputs.policy.value,
                                  info.entry, dt.mem, digest, entries, sig_warning,
                                  tuple(notes)), info, warnings)


def build_x86_64(inputs: BuildInputs, *, purgatory_from: Pathish | None = None,
                 ram: tuple[MemRange, ...] = DEFAULT_RAM,
                 hole_search: HoleSearch | None = None,
                 ima_kexec: bool | None = None,
                 profile: LoaderProfile | None = None,
                 force_dtb: Pathish | None = None, five_level: bool = False,
                 kho: KhoLoad | None = None) -> Built:
    """The bzImage64 loader; the purgatory is ``inputs.purgatory`` or the one ``purgatory_from``
    (a kernel) embeds; the IMA hand-over is announced by SETUP_IMA setup_data. ``profile`` is
    the loading kernel (default: the newest rules); ``hole_search`` and ``ima_kexec``
    (CONFIG_IMA_KEXEC) override its rules. ``force_dtb``: the running system's DTB, carried in
    SETUP_DTB (KEXEC_FILE_FORCE_DTB, 6.18+); ``five_level``: the loading kernel runs with
    5-level paging (the probe then wants XLF_5LEVEL). ``kho``: KHO active in the loading kernel
    (its tree's address and scratch areas)."""
    prof = profile if profile is not None else resolve()
    if hole_search is None:
        hole_search = prof.hole_search
    if ima_kexec is None:
        ima_kexec = prof.ima_kexec
    if inputs.handover is not None:
        raise UsageError("x86-64 hands over an IMA list only", fmt=x86_64.FMT, field="handover")
    check_output(inputs.output, (*_inputs(inputs), purgatory_from, force_dtb), stdout=False)
    carried = None if force_dtb is None else running_tree(force_dtb)
    sig_warning = check_kernel_signature(inputs.kernel, inputs.require_signature)
    # The destination limit (MAXMEM - 1, set by the paging mode at run time) is not modelled.
    target = Target("x86_64", X86_PAGE_SIZE, ram).with_hole_search(hole_search)
    if (inputs.purgatory is None) == (purgatory_from is None):
        raise UsageError("x86-64 needs exactly one purgatory source", fmt=x86_64.FMT,
                         field="purgatory")
    if purgatory_from is not None:
        with input_named(purgatory_from), mapped(purgatory_from, "--purgatory-from") as view:
            purg = parse_purgatory(kernels.purgatory_while_decompressing(view))
            check_target(purg, "x86_64", *ARCHES["x86_64"])
    else:
        given = _purgatory(inputs.purgatory, "x86_64")
        assert given is not None
        purg = given
    if inputs.handover_size is not None and inputs.ima is None:
        raise UsageError("--handover-size needs --ima")
    ho, entries, ho_size = _handover(inputs, "<", target.page_size, prof)
    rd = _initrd(inputs.initrd)

    def compose(kernel: memoryview) -> KexecImage:
        return x86_64.build(target, kernel, purg, initrd=rd, cmdline=inputs.cmdline,
                            handover=ho, handover_size=ho_size, policy=inputs.policy,
                            ima_kexec=ima_kexec, profile=prof, force_dtb=carried,
                            five_level=five_level, kho=kho)

    digest, info, warnings = _write_verified(inputs, compose, (x86_64.FMT, "pe", "vmlinux"),
                                             inputs.purgatory or purgatory_from)
    k, bp = info.segment(Role.KERNEL), info.segment(Role.BOOT_PARAMS)
    assert k is not None and bp is not None
    return Built(X86BuildResult(str(inputs.output), "x86_64", inputs.policy.value, info.entry,
                                k.mem + bz.KERNEL_ENTRY64_OFFSET, bp.mem, digest, entries,
                                sig_warning, prof.name), info, warnings)


def build_riscv64(inputs: BuildInputs, *, dtb: Pathish,
                  handover_style: HandoverStyle = HandoverStyle.IMA,
                  profile: LoaderProfile | None = None) -> Built:
    """The riscv64 ELF loader (7.2): RAM and reservations come from ``dtb`` (the running
    system's tree, standing for its memblock), which also gets the new ``/chosen``. The
    purgatory is required: the kernel always loads its own."""
    prof = profile if profile is not None else resolve()
    if prof.version != NEWEST and prof.version[:2] != riscv64.MODELLED:
        raise UsageError(f"riscv64: kimagekit models the kexec_file loader of "
                         f"{'.'.join(map(str, riscv64.MODELLED))} only (its loaders, placement "
                         f"and relocations changed before), not {prof.name} ({prof.source}); "
                         "--loader-version 7.2 names a 7.2 loading kernel")
    check_output(inputs.output, (*_inputs(inputs), dtb), stdout=False)
    if inputs.require_signature is not None:
        raise UsageError("--require-signature checks PE kernels (x86_64): the riscv64 ELF "
                         "loader checks no signature kimagekit models")
    if inputs.purgatory is None:
        raise UsageError("riscv64 needs --purgatory: the kernel always loads one (its "
                         "riscv_kernel_entry is where the next kernel starts)")
    ho, entries, ho_size = _handover(inputs, "<", riscv64.PAGE_SIZE, prof)
    with input_named(dtb):
        tree = load_tree(dtb)
        target = ppc64_dt.target_from_tree(tree, riscv64.ARCH, riscv64.PAGE_SIZE)
    purg = _purgatory(inputs.purgatory, riscv64.ARCH)
    assert purg is not None
    rd = _initrd(inputs.initrd)

    def compose(kernel: memoryview) -> KexecImage:
        return riscv64.build(target, kernel, tree.build(), riscv64.chosen_hook(), purgatory=purg,
                             initrd=rd, handover=ho, handover_size=ho_size,
                             handover_style=handover_style, cmdline=inputs.cmdline,
                             policy=inputs.policy, entry_rule=prof.entry_rule)

    digest, info, warnings = _write_verified(inputs, compose, (riscv64.FMT, riscv64.IMAGE_FMT),
                                             inputs.purgatory)
    dt = info.segment(Role.DTB)
    kentry = info.symbol(riscv64.KERNEL_ENTRY_SYMBOL)
    assert dt is not None and kentry is not None
    with mapped(inputs.output) as view:
        start = int.from_bytes(bytes(view[_symbol_offset(info, kentry.value):][:8]), "little")
    return Built(Riscv64BuildResult(str(inputs.output), riscv64.ARCH, inputs.policy.value,
                                    info.entry, start, dt.mem, digest, entries, prof.name),
                 info, warnings)


def _symbol_offset(info: ImageInfo, addr: int) -> int:
    p = info.segment(Role.PURGATORY)
    assert p is not None
    return p.offset + addr - p.mem


def running_tree(path: Pathish) -> bytes:
    """The tree ``setup_dtb`` copies: ``fdt_totalsize(initial_boot_params)`` bytes of the
    running system's DTB (``/sys/firmware/fdt``), exactly as they are."""
    with input_named(path):
        data = read_input(path, "--force-dtb")
        if len(data) < 8 or struct.unpack_from(">I", data)[0] != fdt.FDT_MAGIC:
            raise ParseError("not a flattened device tree (no 0xd00dfeed magic)", fmt="dtb",
                             field="header.magic", offset=0)
        (total,) = struct.unpack_from(">I", data, 4)
        if not 40 <= total <= len(data):
            raise ParseError(f"totalsize {total} does not fit the {len(data)} bytes of the "
                             "file", fmt="dtb", field="header.totalsize", offset=4)
        return bytes(data[:total])


def _inputs(i: BuildInputs) -> tuple[Pathish | None, ...]:
    return i.kernel, i.initrd, i.purgatory, i.ima, i.handover


def _endian(little: bool) -> Endian:
    return "<" if little else ">"


def _handover(inputs: BuildInputs, endian: Endian, page_size: int,
              prof: LoaderProfile) -> tuple[bytes | None, int | None, int | None]:
    """The hand-over's bytes, the IMA entries in it (None for raw bytes), and its memsz (spare
    room: the profile's, None for IMA's half page)."""
    extra = prof.ima_extra_memory
    size = inputs.handover_size
    late = inputs.ima is not None and inputs.policy == DigestPolicy.UPSTREAM_6_15
    if inputs.ima is not None:
        with input_named(inputs.ima):
            listed = ima_log.read_entries(inputs.ima)
        if inputs.ima_events != KexecEvents.NONE:
            if not late:
                raise UsageError("--ima-events: the kexec_load/kexec_execute events are "
                                 "measured by 6.15+ loaders (digest policy upstream-6.15), "
                                 f"not under the {inputs.policy.value} policy")
            # the segment is sized from the list given (at load), or as --handover-size says
            size = size or ima_kexec.segment_size(
                len(ima_kexec.build_buffer(listed, endian=endian)), page_size=page_size,
                extra=extra)
            listed = with_kexec_events(listed, -(-size // page_size) * page_size,
                                       inputs.ima_events, hash_algo=inputs.ima_hash
                                       or prof.ima_hash, pcr=prof.ima_pcr, endian=endian)
        data, entries = ima_kexec.build_buffer(listed, endian=endian), len(listed)
    elif inputs.handover is not None:
        data, entries = read_input(inputs.handover, "--handover"), None
    else:
        return None, None, inputs.handover_size
    if size is not None and late and len(data) > -(-size // page_size) * page_size:
        # filled at execute into the page-rounded segment: the kernel copies what fits (the
        # restore rules then judge the cut entry)
        cut = -(-size // page_size) * page_size
        filled = ima_kexec.fill_at_execute(listed, cut, endian)
        (count,) = struct.unpack_from(endian + "Q", filled, 16)  # the entries started
        return filled, count, size
    if size is not None and size < len(data):
        raise UsageError(f"--handover-size {size} is smaller than the hand-over buffer "
                         f"({len(data)} bytes)")
    return data, entries, size or ima_kexec.segment_size(len(data), page_size=page_size,
                                                          extra=extra)


def _purgatory(path: Pathish | None, arch: str) -> PurgatoryObject | None:
    if path is None:
        return None
    with input_named(path):
        obj = parse_purgatory(read_input(path, "--purgatory"))
        check_target(obj, arch, *ARCHES[arch])
        return obj


def _initrd(path: Pathish | None) -> bytes | None:
    return None if path is None else read_input(path, "--initrd")


def _write_verified(inputs: BuildInputs, compose: Callable[[memoryview], KexecImage],
                    kernel_fmts: tuple[str, ...], purgatory_file: Pathish | None = None
                    ) -> tuple[str, ImageInfo, tuple[str, ...]]:
    """Compose from the mapped kernel, judge the hand-over as the next kernel would, write
    atomically (verified), and re-read what was written: the digest as stored, the image, and
    the hand-over's damage written under ``force``."""
    with mapped(inputs.kernel, "--kernel") as view:
        try:
            img = compose(view)
        except KimageError as err:
            if err.fmt in kernel_fmts:
                raise about_file(err, inputs.kernel) from err.__cause__
            if err.fmt == PURGATORY_FMT and purgatory_file is not None:
                raise about_file(err, purgatory_file) from err.__cause__
            raise
        source = inputs.ima if inputs.ima is not None else inputs.handover
        with input_named(source or inputs.output):
            ima = judge_new_handover(img, inputs.force)
        res = write_image(inputs.output, img)
        del img  # its segments are views into the kernel's map
    warnings = () if ima is None else tuple(f"written with --force: {d}" for d in ima.damage)
    with mapped(inputs.output) as written:
        return res.digest.hex(), read_image(written), warnings
