"""The hand-over segment of an image, read as the next kernel reads it: its IMA content (kexec
buffer or the 2016 header-less list), the announcement in the embedded device tree, and the
offline ``kexec_update_segment`` of it with those checks around :func:`image.patch_handover`.

The hand-over is left out of the digest (seed and 6.15 policies), so ``verify`` cannot see damage
inside it: the buffer's own checks (restore rules, template digests) are what find it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from kimagekit import ima_kexec, ima_log, ppc_fdt
from kimagekit.arch.x86_64 import announced_ima
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import KimageError, RuleError, UsageError, input_named
from kimagekit.fileio import read_input
from kimagekit.formats.ima import Endian
from kimagekit.image import (
    HandoverStyle,
    ImageInfo,
    PatchResult,
    content,
    open_image,
    patch_handover,
)
from kimagekit.segments import Role

FMT = "handover"
PCR = 10
BANKS = ("sha1", "sha256")


@dataclass(frozen=True)
class ImaContent:
    """What the hand-over buffer holds, and what is wrong with it."""

    form: str  # ima-kexec-buffer, ima-binary-list (2016, no header), empty, or unknown
    entries: int
    restored: int | None  # entries the next kernel would take (kexec buffer only)
    restore_error: str | None
    digest_mismatches: int
    first_mismatch: int | None  # entry index
    pcr10: dict[str, str]  # bank -> hex, replayed from the entries read
    damage: tuple[str, ...]


def endian_of(little: bool) -> Endian:
    return "<" if little else ">"


def decode_ima(buf: bytes | memoryview, little: bool) -> ImaContent:
    """Read ``buf`` as the next kernel would; damage is reported, never raised."""
    endian = endian_of(little)
    if not buf:
        return ImaContent("empty", 0, None, None, 0, None, {}, ())
    damage: list[str] = []
    fmt = ima_log.detect(buf[:65536], len(buf))
    restored = restore_error = None
    if fmt is None or fmt.kind == "kexec-buffer":
        # Damage to the header can hide the form: read it as the buffer the image announces.
        try:
            restored = len(ima_kexec.restore(buf, endian).entries)
        except KimageError as err:
            restore_error = str(err)
            damage.append(f"the next kernel would refuse it: {err}")
    if fmt is None:
        size = int.from_bytes(bytes(buf[8:16]), "little" if little else "big")
        fmt = ima_log.ListFormat("kexec-buffer", endian, 20, ima_kexec.HDR_SIZE,
                                 min(max(size, ima_kexec.HDR_SIZE), len(buf)))
        form = "unknown"
    else:
        form = "ima-kexec-buffer" if fmt.kind == "kexec-buffer" else f"ima-{fmt.kind}-list"
    try:
        report = ima_log.analyse(buf, fmt, banks=BANKS)
    except KimageError as err:
        damage.append(f"entries cannot be read: {err}")
        return ImaContent(form, 0, restored, restore_error, 0, None, {}, tuple(damage))
    bad = report.mismatches
    if bad:
        m = bad[0]
        damage.append(f"{len(bad)} template digest mismatch(es), first entry[{m.index}] at "
                      f"offset {m.offset:#x}: stored {m.stored.hex()}, computed "
                      f"{m.computed.hex()}")
    pcr10 = {b: report.pcrs[b][PCR].hex() for b in BANKS if PCR in report.pcrs[b]}
    return ImaContent(form, report.entries, restored, restore_error, len(bad),
                      bad[0].index if bad else None, pcr10, tuple(damage))


@dataclass(frozen=True)
class Announcement:
    """The hand-over as the embedded device tree announces it."""

    style: str
    start: int
    size: int
    reserved: bool
    matches: bool  # start and size equal the segment's mem and memsz


def embedded_tree(info: ImageInfo, view: memoryview | bytes) -> DeviceTree | None:
    seg = info.segment(Role.DTB)
    return None if seg is None else DeviceTree.parse(content(view, seg))


def announcement(info: ImageInfo, tree: DeviceTree | None) -> Announcement | None:
    """The device tree's hand-over in the image's style, compared with the segment."""
    ho = info.segment(Role.HANDOVER)
    if tree is None or ho is None or info.handover_style.value not in ppc_fdt.STYLES:
        return None
    h = ppc_fdt.get_handover(tree, info.handover_style.value)
    if h is None:
        return None
    return Announcement(h.style, h.start, h.size, h.reserved,
                        (h.start, h.size) == (ho.mem, ho.memsz))


def _announced(info: ImageInfo, view: memoryview | bytes) -> tuple[str, str] | None:
    """What tells the next kernel where the hand-over is, and what it says (``start+size`` or
    "nothing") when that differs from the segment; None when it matches or the style has no
    announcement."""
    ho = info.segment(Role.HANDOVER)
    if ho is None:
        return None
    if info.handover_style in (HandoverStyle.SEED, HandoverStyle.IMA):
        ann = announcement(info, embedded_tree(info, view))
        if ann is not None and ann.matches:
            return None
        said = "nothing" if ann is None else f"{ann.start:#x}+{ann.size:#x}"
        return "the device tree", f"announces {said} in {info.handover_style} style"
    if info.handover_style == HandoverStyle.SETUP_DATA:
        bp = info.segment(Role.BOOT_PARAMS)
        at = None if bp is None else announced_ima(content(view, bp), bp.mem)
        if at == (ho.mem, ho.memsz):
            return None
        said = "nothing" if at is None else f"{at[0]:#x}+{at[1]:#x}"
        return "the boot parameters", f"announce {said} in their SETUP_IMA setup_data"
    return None


@dataclass(frozen=True)
class PatchOutcome:
    result: PatchResult
    ima: ImaContent


def patch(path: str | os.PathLike[str], data: bytes, *,
          out: str | os.PathLike[str] | None = None, reseal: bool = False) -> PatchOutcome:
    """New hand-over contents, after checking the image announces the segment itself.

    Every style announces the segment's mem and memsz (device tree: ``-end`` = mem + memsz, the
    upstream property holds memsz; x86: the SETUP_IMA setup_data holds addr and size), and an
    update keeps both, so the announcing segment (checksummed) never needs rewriting. An image
    that announced anything else would mislead the next kernel once the contents change, so it
    is refused rather than patched around.
    """
    with open_image(path) as (info, view):
        wrong = _announced(info, view)
        ho = info.segment(Role.HANDOVER)
        if wrong is not None and ho is not None:
            who, says = wrong
            raise RuleError(f"{who} {says}, not the hand-over segment {ho.mem:#x}+{ho.memsz:#x}",
                            fmt=FMT, field=f"segment[{ho.index}]")
        little = info.little
    res = patch_handover(path, data, out=out, reseal=reseal)
    return PatchOutcome(res, decode_ima(data, little))


@dataclass(frozen=True)
class ImagePatchResult:
    output: str
    segment: int
    mem: int
    memsz: int
    old_bufsz: int
    bufsz: int
    resealed: bool
    digest: str
    ima: ImaContent | None  # the new buffer read back (from an IMA list only)


def patch_file(image: str | os.PathLike[str], out: str | os.PathLike[str] | None, *,
               ima: str | os.PathLike[str] | None = None,
               data: str | os.PathLike[str] | None = None,
               reseal: bool = False) -> ImagePatchResult:
    """:func:`patch` from files: ``data`` as is, or the IMA list ``ima`` built into a kexec
    buffer in the image's byte order. ``out`` None patches ``image`` in place (locked)."""
    if (ima is None) == (data is None):
        raise UsageError("give exactly one of an IMA list and raw contents", fmt=FMT)
    if data is not None:
        new = read_input(data, "--data")
    else:
        assert ima is not None
        with input_named(image), open_image(image) as (info, _):
            little = info.little
        with input_named(ima):
            entries = ima_log.read_entries(ima)
        new = ima_kexec.build_buffer(entries, endian=endian_of(little))
    with input_named(image):
        done = patch(image, new, out=out, reseal=reseal)
    res = done.result
    return ImagePatchResult(str(image if out is None else out), res.segment.index,
                            res.segment.mem, res.segment.memsz, res.old_bufsz,
                            res.segment.bufsz, res.resealed,
                            res.verify.digest.hex(), done.ima if ima is not None else None)
