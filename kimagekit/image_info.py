"""What ``inspect`` reports about a kexec image: every segment hashed as it is now, the digest
checked, the hand-over read as the next kernel reads it, and the embedded ``/chosen``. Damage is
reported in the summary, never raised."""

from __future__ import annotations

import os
from dataclasses import dataclass

from kimagekit.arch.ppc64_purgatory import image_notes
from kimagekit.errors import KimageError
from kimagekit.formats import elf
from kimagekit.formats.kexec import NOTE_OWNER
from kimagekit.handover import Announcement, ImaContent, announcement, handover_problems
from kimagekit.handover import embedded_tree as tree_of
from kimagekit.image import content, open_image, segment_sha256, verify
from kimagekit.memory_map import MemoryMap, image_map
from kimagekit.ppc_fdt import chosen_items
from kimagekit.segments import Role

__all__ = ["HandoverSummary", "ImageSummary", "SegmentSummary", "describe", "is_image"]


@dataclass(frozen=True)
class SegmentSummary:
    index: int
    role: str
    mem: int
    memsz: int
    bufsz: int
    checksummed: bool
    # of the segment as it lies in memory now (content, then zeros to memsz): the same hash the
    # note records at write time and `ls` shows, so the two compare directly
    sha256: str
    unchanged: bool  # content + zeros still hash as recorded when written
    bufsz_at_load: int  # as the loading kernel's table shows it (6.15+ IMA segment: 0)


@dataclass(frozen=True)
class HandoverSummary:
    address: int
    size: int
    used: int
    style: str
    unchanged: bool
    announced: Announcement | None  # as the embedded device tree announces it
    ima: ImaContent  # the buffer read as the next kernel reads it


@dataclass(frozen=True)
class ImageSummary:
    arch: str
    entry: int
    policy: str
    cmdline: str
    purgatory: bool
    segments: tuple[SegmentSummary, ...]
    regions: tuple[tuple[int, int], ...]
    digest: str
    digest_ok: bool
    digest_status: str
    handover: HandoverSummary | None
    chosen: dict[str, str] | None  # the embedded device tree's /chosen (None: no DTB segment)
    dtb_error: str | None  # why the embedded device tree could not be read
    # every reason the image would not boot as built: digest, hand-over, announcement, tree
    damage: tuple[str, ...]
    memory_map: MemoryMap | None = None  # RAM, reservations, segments, free holes
    notes: tuple[str, ...] = ()  # what the machine does not do (ppc64: no digest check)


def is_image(head: bytes) -> bool:
    """An ELF64 file carrying the kimagekit note (somewhere in ``head``)."""
    return (len(head) >= 64 and head[:4] == elf.ELFMAG and head[4] == elf.ELFCLASS64
            and NOTE_OWNER.encode() + b"\0" in head)


def describe(path: str | os.PathLike[str]) -> ImageSummary:
    res = verify(path)
    with open_image(path) as (info, view):
        segs = []
        for s in info.segments:
            data = content(view, s)
            now = segment_sha256(data, s.memsz)
            segs.append(SegmentSummary(s.index, s.role.value, s.mem, s.memsz, s.bufsz,
                                       s.checksummed, now.hex(), now == s.sha256,
                                       s.bufsz_at_load))
        tree, chosen, dtb_error = None, None, None
        try:
            tree = tree_of(info, view)
            chosen = None if tree is None else chosen_items(tree)
            ann = announcement(info, tree)
        except KimageError as err:
            # A damaged tree is reported like damage anywhere else, not raised.
            dtb_error, ann = str(err), None
        ho = info.segment(Role.HANDOVER)
        ima, problems = handover_problems(info, view)
        handover = None if ho is None or ima is None else HandoverSummary(
            ho.mem, ho.memsz, ho.bufsz, info.handover_style.value, segs[ho.index].unchanged,
            ann, ima)
        memory = image_map(info, view)
    damage = ((() if res.ok else (f"digest: {res.reason}",)) + problems
              + (() if dtb_error is None else (f"device tree: {dtb_error}",)))
    return ImageSummary(info.arch, info.entry, info.policy.value, info.cmdline,
                        info.has_purgatory, tuple(segs), res.regions, res.digest.hex(), res.ok,
                        res.reason, handover, chosen, dtb_error, damage, memory,
                        image_notes(info.arch, info.has_purgatory))
