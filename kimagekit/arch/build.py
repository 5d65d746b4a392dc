"""``build``: a kexec image composed from files by an arch loader, written atomically, re-read and
verified. The arch modules compose from bytes; this one reads the inputs, prepares the hand-over
and the purgatory the same way for every arch, and reports what was written."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from kimagekit import ima_kexec, ima_log, kernels
from kimagekit.arch import ppc64, ppc64_dt, x86_64
from kimagekit.dtb_file import load_tree
from kimagekit.errors import KimageError, ParseError, UsageError, about_file, input_named
from kimagekit.fileio import check_output, mapped, read_input
from kimagekit.formats import bzimage as bz
from kimagekit.formats import fdt
from kimagekit.formats.ima import Endian
from kimagekit.handover import judge_new_handover
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
from kimagekit.loader_profile import LoaderProfile, resolve
from kimagekit.purgatory import FMT as PURGATORY_FMT
from kimagekit.purgatory import DigestPolicy, PurgatoryObject, check_target, parse_purgatory
from kimagekit.segments import DEFAULT_RAM, HoleSearch, MemRange, Role, Target
from kimagekit.sig.kexec_sig import check_kernel_signature

__all__ = [
    "PPC_ARCHES", "X86_PAGE_SIZE", "BuildInputs", "Built", "Pathish", "Ppc64BuildResult",
    "X86BuildResult", "build_ppc64", "build_x86_64", "running_tree",
]

Pathish = str | os.PathLike[str]
PPC_ARCHES = ("ppc64le", "ppc64")
X86_PAGE_SIZE = 4096


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
class Built:
    result: Ppc64BuildResult | X86BuildResult
    image: ImageInfo  # the written image, re-read
    warnings: tuple[str, ...] = ()  # what --force wrote anyway


def build_ppc64(inputs: BuildInputs, *, arch: str, dtb: Pathish,
                handover_style: HandoverStyle = HandoverStyle.SEED,
                page_size: int = ppc64_dt.PPC64_PAGE_SIZE,
                profile: LoaderProfile | None = None, no_purgatory: bool = False) -> Built:
    """The powerpc ELF loader: RAM, reservations and ``/chosen`` come from ``dtb`` (DTB or DTS).
    ``profile``: the loading kernel (its IMA spare room; the page size is ``page_size``).
    ``no_purgatory``: an image for inspection only (the kernel always loads a purgatory)."""
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
    ho, entries, ho_size = _handover(inputs, _endian(ARCHES[arch][1]), page_size,
                                     prof.ima_extra_memory)
    with input_named(dtb):
        tree = load_tree(dtb)
        target = ppc64_dt.target_from_tree(tree, arch, page_size)
        opal = ppc64_dt.opal_from_tree(tree) if inputs.purgatory is not None else None
    purg = _purgatory(inputs.purgatory, arch)
    rd = _initrd(inputs.initrd)

    def compose(kernel: memoryview) -> KexecImage:
        return ppc64.build(target, kernel, tree.build(), ppc64_dt.chosen_hook(page_size),
                           initrd=rd, handover=ho, handover_size=ho_size,
                           handover_style=handover_style, cmdline=inputs.cmdline,
                           purgatory=purg, policy=inputs.policy, no_purgatory=no_purgatory,
                           opal=opal)

    # Only the vmlinux's own faults name it; placement refusals are about the layout.
    digest, info, warnings = _write_verified(inputs, compose, (ppc64.FMT,), inputs.purgatory)
    return Built(Ppc64BuildResult(str(inputs.output), arch, page_size, inputs.policy.value,
                                  info.entry, digest, entries), info, warnings)


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
    ho, entries, ho_size = _handover(inputs, "<", target.page_size, prof.ima_extra_memory)
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
              extra: int | None = None) -> tuple[bytes | None, int | None, int | None]:
    """The hand-over's bytes, the IMA entries in it (None for raw bytes), and its memsz (spare
    room: ``extra`` bytes, None for IMA's half page)."""
    if inputs.ima is not None:
        with input_named(inputs.ima):
            listed = ima_log.read_entries(inputs.ima)
        data, entries = ima_kexec.build_buffer(listed, endian=endian), len(listed)
    elif inputs.handover is not None:
        data, entries = read_input(inputs.handover, "--handover"), None
    else:
        return None, None, inputs.handover_size
    size = inputs.handover_size
    late = inputs.ima is not None and inputs.policy == DigestPolicy.UPSTREAM_6_15
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
