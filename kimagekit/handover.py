"""The hand-over segment of an image, read as the next kernel reads it: its IMA content (kexec
buffer or the 2016 header-less list), the announcement in the embedded device tree, and the
offline ``kexec_update_segment`` of it with those checks around :func:`image.patch_handover`.

The hand-over is left out of the digest (seed and 6.15 policies), so ``verify`` cannot see damage
inside it: the buffer's own checks (restore rules, template digests) are what find it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from kimagekit import ima_kexec, ima_log, ppc_fdt
from kimagekit.arch.ppc64_purgatory import image_notes
from kimagekit.arch.x86_64 import announced_ima
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import KimageError, Refused, RuleError, UsageError, input_named
from kimagekit.fileio import check_output, is_stdout, read_input
from kimagekit.formats import ima as ima_schema
from kimagekit.formats.ima import Endian
from kimagekit.image import (
    ARCHES,
    HandoverStyle,
    ImageInfo,
    KexecImage,
    PatchResult,
    VerifyResult,
    content,
    open_image,
    patch_handover,
    verify,
)
from kimagekit.segments import Role

__all__ = [
    "BANKS", "EMPTY", "FMT", "PCR", "Announcement", "Continuation", "ImaContent",
    "ImagePatchResult", "ImageVerdict", "PatchOutcome", "announcement", "decode_ima",
    "embedded_tree", "endian_of", "handover_problems", "judge_new_handover", "patch", "patch_file",
    "verify_image",
]

FMT = "handover"
PCR = 10
Continuation = Literal["off", "warn", "refuse"]
BANKS = ("sha1", "sha256")


@dataclass(frozen=True)
class ImaContent:
    """What the hand-over buffer holds, and what is wrong with it."""

    form: str  # ima-kexec-buffer, ima-binary-list (2016, no header), empty, or unknown
    entries: int
    # entries the next kernel would take (kexec buffer only): None when it refuses the list
    # whole; with restore_error, the entries before the one it stops at
    restored: int | None
    restore_error: str | None
    digest_mismatches: int
    first_mismatch: int | None  # entry index
    pcr10: dict[str, str]  # bank -> hex, replayed from the entries read
    damage: tuple[str, ...]


def endian_of(little: bool) -> Endian:
    return "<" if little else ">"


EMPTY = ("the hand-over is empty: the next kernel reads zeros where it expects a measurement "
         "list (version 0) and takes nothing")


def decode_ima(buf: bytes | memoryview, little: bool,
               style: HandoverStyle = HandoverStyle.IMA) -> ImaContent:
    """Read ``buf`` as the next kernel would; damage is reported, never raised.

    Whatever the style, the next kernel gives the hand-over to IMA and nothing else: upstream
    (``ima`` and ``setup-data`` styles) it must be a kexec buffer (``ima_kexec_hdr`` first); the
    2016 series (``seed``) also took the header-less list, in the target's byte order with SHA-1
    template digests, and its entries are held to the same restore rules. Anything else (opaque
    data included) is damage: the next kernel would refuse it.
    """
    endian = endian_of(little)
    if not buf:
        return ImaContent("empty", 0, None, None, 0, None, {}, (EMPTY,))
    damage: list[str] = []
    fmt = ima_log.detect(buf[:65536], len(buf))
    headerless = style == HandoverStyle.SEED and fmt is not None and fmt.kind != "kexec-buffer"
    restored = restore_error = None
    if not headerless:
        # Damage to the header can hide the form: read it as the buffer the image announces.
        # The kernel reads memsz bytes, zeros past the content: a short buffer's header is
        # completed with them (memsz is at least a page).
        padded = bytes(buf) + bytes(ima_kexec.HDR_SIZE - len(buf)) \
            if len(buf) < ima_kexec.HDR_SIZE else buf
        try:
            restored = len(ima_kexec.restore(padded, endian).entries)
        except ima_kexec.RestoreStopped as err:
            # the kernel stops at the refused entry and keeps those before it
            restored, restore_error = err.kept, ima_kexec.refusal(err)
            damage.append(f"the next kernel would refuse it: {restore_error}")
        except KimageError as err:
            restore_error = str(err)
            damage.append(f"the next kernel would refuse it: {err}")
    elif fmt is not None and (fmt.kind, fmt.endian, fmt.digest_size) != ("binary", endian, 20):
        order = {"<": "little-endian", ">": "big-endian"}
        restore_error = (f"a {order[fmt.endian]} {fmt.kind} list with {fmt.digest_size}-byte "
                         f"digests, where it reads {order[endian]} binary entries with 20-byte "
                         "digests")
        damage.append(f"the next kernel would refuse it: {restore_error}")
    if fmt is None:
        size = int.from_bytes(bytes(buf[8:16]), "little" if little else "big")
        fmt = ima_log.ListFormat("kexec-buffer", endian, 20, ima_kexec.HDR_SIZE,
                                 min(max(size, ima_kexec.HDR_SIZE), len(buf)))
        form = "unknown"
    else:
        form = "ima-kexec-buffer" if fmt.kind == "kexec-buffer" else f"ima-{fmt.kind}-list"
    try:
        report = ima_log.analyse(buf, fmt, banks=BANKS, method="per-bank")  # as ima replay
    except KimageError as err:
        damage.append(f"entries cannot be read: {err}")
        return ImaContent(form, 0, restored, restore_error, 0, None, {}, tuple(damage))
    if headerless and not damage:
        try:
            restored = _restore_headerless(buf, endian, report.entries)
        except ima_kexec.RestoreStopped as err:
            restored, restore_error = err.kept, ima_kexec.refusal(err)
            damage.append(f"the next kernel would refuse it: {restore_error}")
        except KimageError as err:
            restore_error = str(err)
            damage.append(f"the next kernel would refuse it: {err}")
    bad = report.mismatches
    if bad:
        m = bad[0]
        damage.append(f"{len(bad)} template digest mismatch(es), first entry[{m.index}] at "
                      f"offset {m.offset:#x}: stored {m.stored.hex()}, computed "
                      f"{m.computed.hex()}")
    pcr10 = {b: report.pcrs[b][PCR].hex() for b in BANKS if PCR in report.pcrs[b]}
    return ImaContent(form, report.entries, restored, restore_error, len(bad),
                      bad[0].index if bad else None, pcr10, tuple(damage))


def _restore_headerless(buf: bytes | memoryview, endian: Endian, count: int) -> int:
    """The restore rules on a header-less (2016) list: walked behind the header it lacks, the
    error's offset given back in the list's own terms."""
    hdr = bytes(ima_schema.kexec_hdr(endian).build(
        {"version": ima_schema.IMA_KEXEC_HDR_VERSION, "_reserved0": 0, "_reserved1": 0,
         "buffer_size": ima_kexec.HDR_SIZE + len(buf), "count": count}))
    try:
        return len(ima_kexec.restore(hdr + bytes(buf), endian).entries)
    except ima_kexec.RestoreStopped as err:
        at = None if err.offset is None else err.offset - ima_kexec.HDR_SIZE
        raise ima_kexec.RestoreStopped(err.message, kept=err.kept, field=err.field, offset=at,
                                       fmt="ima-list") from err
    except RuleError as err:
        at = None if err.offset is None else err.offset - ima_kexec.HDR_SIZE
        raise RuleError(err.message, fmt="ima-list", field=err.field, offset=at) from err


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


def handover_problems(info: ImageInfo, view: memoryview | bytes
                      ) -> tuple[ImaContent | None, tuple[str, ...]]:
    """The hand-over read as the next kernel reads it, and one line per reason it would not take
    it: damage in the buffer, or an announcement that does not name the segment."""
    ho = info.segment(Role.HANDOVER)
    if ho is None:
        return None, ()
    ima = decode_ima(content(view, ho), info.little, info.handover_style)
    problems = [f"hand-over segment {ho.index}: {d}" for d in ima.damage]
    try:
        wrong = _announced(info, view)
    except KimageError as err:
        return ima, (*problems, f"hand-over segment {ho.index}: the device tree that announces "
                                f"it cannot be read: {err}")
    if wrong is not None:
        problems.append(f"hand-over segment {ho.index}: {wrong[0]} {wrong[1]}, not the segment "
                        f"{ho.mem:#x}+{ho.memsz:#x}")
    return ima, tuple(problems)


@dataclass(frozen=True)
class ImageVerdict:
    """``verify``: the digest as the purgatory checks it, and the hand-over as the next kernel
    reads it; ``ok`` only when both hold."""

    ok: bool
    digest: VerifyResult
    handover: ImaContent | None
    problems: tuple[str, ...]  # one line each, the digest's first
    notes: tuple[str, ...] = ()  # what the machine does not check (ppc64: the digest)


def verify_image(path: str | os.PathLike[str]) -> ImageVerdict:
    res = verify(path)
    with open_image(path) as (info, view):
        ima, problems = handover_problems(info, view)
    all_problems = (() if res.ok else (res.reason,)) + problems
    return ImageVerdict(not all_problems, res, ima, all_problems,
                        image_notes(info.arch, info.has_purgatory))


def _judged(data: bytes, little: bool, style: HandoverStyle, index: int,
            force: bool) -> ImaContent:
    """The new hand-over as the next kernel reads it; Refused (exit 1) when it would not take it,
    unless ``force``."""
    ima = decode_ima(data, little, style)
    if ima.damage and not force:
        raise Refused(f"{ima.damage[0]}; nothing written (--force writes it anyway)", fmt=FMT,
                      field=f"segment[{index}]")
    return ima


def judge_new_handover(img: KexecImage, force: bool) -> ImaContent | None:
    """:func:`_judged` for an image about to be written (``build``)."""
    i = img.segments.index_of(Role.HANDOVER)
    if i is None:
        return None
    data = bytes(img.segments.segments[i].content)
    return _judged(data, ARCHES[img.arch][1], img.handover_style, i, force)


@dataclass(frozen=True)
class PatchOutcome:
    result: PatchResult
    ima: ImaContent
    extends: bool | None  # the old hand-over's entries are a prefix of the new one's
    warnings: tuple[str, ...]


def patch(path: str | os.PathLike[str], data: bytes, *,
          out: str | os.PathLike[str] | None = None, reseal: bool = False, force: bool = False,
          continuation: Continuation = "warn") -> PatchOutcome:
    """New hand-over contents, after checking the image announces the segment itself and that
    the next kernel would take the new contents (Refused otherwise, unless ``force``).

    Every style announces the segment's mem and memsz (device tree: ``-end`` = mem + memsz, the
    upstream property holds memsz; x86: the SETUP_IMA setup_data holds addr and size), and an
    update keeps both, so the announcing segment (checksummed) never needs rewriting. An image
    that announced anything else would mislead the next kernel once the contents change, so it
    is refused rather than patched around.

    ``extends`` says whether the new buffer carries on the old one (its entries a prefix of the
    new); when it does not, ``continuation`` says what follows: a warning, Refused, or nothing.
    """
    if out is None and is_stdout(path):
        raise UsageError("an image on stdin cannot be patched in place (use -o OUT)",
                         field="--in-place")
    check_output(path if out is None else out, (path,), in_place=out is None, stdout=False)
    with open_image(path) as (info, view):
        wrong = _announced(info, view)
        ho = info.segment(Role.HANDOVER)
        if wrong is not None and ho is not None:
            who, says = wrong
            raise RuleError(f"{who} {says}, not the hand-over segment {ho.mem:#x}+{ho.memsz:#x}",
                            fmt=FMT, field=f"segment[{ho.index}]")
        if ho is None:
            raise RuleError("the image has no hand-over segment", fmt="image", field="segments")
        little, style = info.little, info.handover_style
        old = bytes(content(view, ho))
    ima = _judged(data, little, style, ho.index, force)
    warnings = [f"written with --force: {d}" for d in ima.damage]
    extends, why = (None, None) if continuation == "off" else _extends(old, data, little)
    if why is not None:
        if continuation == "refuse":
            raise Refused(f"{why}; nothing written (--continuation)", fmt=FMT,
                          field=f"segment[{ho.index}]")
        warnings.append(why)
    res = patch_handover(path, data, out=out, reseal=reseal)
    return PatchOutcome(res, ima, extends, tuple(warnings))


def _entries(buf: bytes, little: bool) -> list[tuple[int, bytes, str, bytes]] | None:
    fmt = ima_log.detect(buf[:65536], len(buf))
    if fmt is None or fmt.kind == "ascii" or fmt.endian != endian_of(little):
        return None
    try:
        return [(e.pcr, e.template_digest, e.template_name, e.template_data)
                for e in ima_log.iter_entries(buf, fmt)]
    except KimageError:
        return None


def _extends(old: bytes, new: bytes, little: bool) -> tuple[bool | None, str | None]:
    """Whether ``new`` carries on ``old`` (every old entry, in order, first), and why not."""
    before, after = _entries(old, little), _entries(new, little)
    if before is None or after is None:
        which = "old" if before is None else "new"
        return None, (f"the {which} hand-over is not a readable measurement list, so whether "
                      "the new one extends the old is unknown")
    for i, entry in enumerate(before):
        if i >= len(after):
            return False, (f"the new list has {len(after)} entries, fewer than the "
                           f"{len(before)} of the image's hand-over: it does not extend it")
        if after[i] != entry:
            return False, (f"the new list does not extend the image's hand-over: entry[{i}] "
                           "differs (a list from another boot?)")
    return True, None


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
    extends: bool | None  # --ima: the old hand-over's entries come first in the new list
    warnings: tuple[str, ...]


def patch_file(image: str | os.PathLike[str], out: str | os.PathLike[str] | None, *,
               ima: str | os.PathLike[str] | None = None,
               data: str | os.PathLike[str] | None = None,
               reseal: bool = False, force: bool = False,
               continuation: bool = False) -> ImagePatchResult:
    """:func:`patch` from files: ``data`` as is, or the IMA list ``ima`` built into a kexec
    buffer in the image's byte order. ``out`` None patches ``image`` in place (locked).
    The continuation check is for ``ima`` only: raw ``data`` is whatever the user made."""
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
        done = patch(image, new, out=out, reseal=reseal, force=force,
                     continuation="off" if ima is None else "refuse" if continuation else "warn")
    res = done.result
    return ImagePatchResult(str(image if out is None else out), res.segment.index,
                            res.segment.mem, res.segment.memsz, res.old_bufsz,
                            res.segment.bufsz, res.resealed,
                            res.verify.digest.hex(), done.ima if ima is not None else None,
                            done.extends, done.warnings)
