"""``kimagekit verify|ls|extract IMAGE`` and the kexec-image view of ``inspect``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import typer

from kimagekit.cli.common import emit_json, input_named, out
from kimagekit.cli.inspect import Kind
from kimagekit.errors import KimageError
from kimagekit.formats import elf
from kimagekit.formats.kexec import NOTE_OWNER
from kimagekit.handover import Announcement, ImaContent, announcement, chosen_items, decode_ima
from kimagekit.handover import embedded_tree as tree_of
from kimagekit.image import (
    ImageInfo,
    VerifyResult,
    content,
    extract,
    open_image,
    segment_sha256,
    verify,
)
from kimagekit.segments import Role


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify_cmd(
        image: Path = typer.Argument(..., help="A kexec image written by kimagekit."),
    ) -> None:
        """Recompute the digest as the purgatory will at reboot: exit 0 if it matches."""
        with input_named(image):
            res = verify(image)
        if res.ok:
            out(f"ok {res.digest.hex()}")
            return
        out(f"FAILED: {res.reason}")
        raise typer.Exit(1)

    @app.command("ls")
    def ls_cmd(
        image: Path = typer.Argument(..., help="A kexec image written by kimagekit."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """List the segments: index, role, mem, memsz, bufsz, checksummed, file offset."""
        with input_named(image), open_image(image) as (info, _):
            if as_json:
                emit_json(info)
                return
            for line in ls_lines(info):
                out(line)

    @app.command("extract")
    def extract_cmd(
        image: Path = typer.Argument(..., help="A kexec image written by kimagekit."),
        segment: str = typer.Argument(..., help="Segment index or role (kernel, initrd, ...)."),
        output: Path = typer.Option(..., "-o", "--output", help="Where to write the content."),
    ) -> None:
        """Write one segment's content (bufsz bytes) to a file."""
        with input_named(image):
            seg = extract(image, segment, output)
        out(f"segment {seg.index} ({seg.role}): {seg.bufsz} bytes -> {output}")


def ls_lines(info: ImageInfo) -> list[str]:
    lines = [f"{'#':>2} {'role':<11} {'mem':>18} {'memsz':>10} {'bufsz':>10} {'sum':<3} "
             f"{'offset':>10}"]
    for s in info.segments:
        lines.append(f"{s.index:>2} {s.role.value:<11} {s.mem:#18x} {s.memsz:#10x} "
                     f"{s.bufsz:#10x} {'yes' if s.checksummed else 'no':<3} {s.offset:#10x}")
    return lines


# --- inspect -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SegmentView:
    index: int
    role: str
    mem: int
    memsz: int
    bufsz: int
    checksummed: bool
    sha256: str  # of the content now (bufsz bytes)
    unchanged: bool  # content + zeros still hash as recorded when written


@dataclass(frozen=True)
class HandoverView:
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
    segments: tuple[SegmentView, ...]
    regions: tuple[tuple[int, int], ...]
    digest: str
    digest_ok: bool
    digest_status: str
    handover: HandoverView | None
    chosen: dict[str, str] | None  # the embedded device tree's /chosen (None: no DTB segment)
    dtb_error: str | None  # why the embedded device tree could not be read


def is_image(head: bytes, size: int) -> bool:
    return (len(head) >= 64 and head[:4] == elf.ELFMAG and head[4] == elf.ELFCLASS64
            and NOTE_OWNER.encode() + b"\0" in head)


def describe(path: Path) -> ImageSummary:
    res: VerifyResult = verify(path)
    with open_image(path) as (info, view):
        segs = []
        for s in info.segments:
            data = content(view, s)
            segs.append(SegmentView(s.index, s.role.value, s.mem, s.memsz, s.bufsz,
                                    s.checksummed, hashlib.sha256(data).hexdigest(),
                                    segment_sha256(data, s.memsz) == s.sha256))
        tree, chosen, dtb_error = None, None, None
        try:
            tree = tree_of(info, view)
            chosen = None if tree is None else chosen_items(tree)
            ann = announcement(info, tree)
        except KimageError as err:
            # A damaged tree is reported like damage anywhere else, not raised.
            dtb_error, ann = str(err), None
        ho = info.segment(Role.HANDOVER)
        handover = None if ho is None else HandoverView(
            ho.mem, ho.memsz, ho.bufsz, info.handover_style.value, segs[ho.index].unchanged,
            ann, decode_ima(content(view, ho), info.little))
    return ImageSummary(info.arch, info.entry, info.policy.value, info.cmdline,
                        info.has_purgatory, tuple(segs), res.regions, res.digest.hex(), res.ok,
                        res.reason, handover, chosen, dtb_error)


def render(s: ImageSummary) -> list[str]:
    lines = [f"arch {s.arch}, entry {s.entry:#x}, digest policy {s.policy}, "
             f"purgatory {'yes' if s.purgatory else 'no (digest kept in the note)'}",
             f"cmdline {s.cmdline!r}", "segments:"]
    for g in s.segments:
        lines.append(f"  {g.index:>2} {g.role:<11} mem {g.mem:#x} memsz {g.memsz:#x} bufsz "
                     f"{g.bufsz:#x} {'checksummed' if g.checksummed else 'not checksummed'} "
                     f"sha256 {g.sha256}{'' if g.unchanged else ' (changed since written)'}")
    lines.append("regions: " + ", ".join(f"{a:#x}+{n:#x}" for a, n in s.regions))
    lines.append(f"digest {s.digest}: {'ok' if s.digest_ok else 'FAILED: ' + s.digest_status}")
    if s.handover is not None:
        h = s.handover
        lines.append(f"hand-over: {h.address:#x} size {h.size:#x} used {h.used:#x} style "
                     f"{h.style}{'' if h.unchanged else ' (content changed since written)'}")
        lines += _handover_lines(h)
    if s.dtb_error is not None:
        lines.append(f"device tree: cannot be read: {s.dtb_error}")
    for k, v in (s.chosen or {}).items():
        lines.append(f"/chosen {k} = {v}")
    return lines


def _handover_lines(h: HandoverView) -> list[str]:
    lines = []
    a = h.announced
    if a is not None:
        lines.append(f"  announced ({a.style}): {a.start:#x} size {a.size:#x}, "
                     f"{'reserved' if a.reserved else 'NOT reserved'}, "
                     f"{'matches the segment' if a.matches else 'DOES NOT match the segment'}")
    m = h.ima
    verdict = ("restore ok" if m.restored is not None
               else "restore FAILED" if m.restore_error else "no restore rules")
    lines.append(f"  IMA {m.form}: {m.entries} entries, {verdict}")
    lines += [f"  PCR 10 {bank} {value}" for bank, value in m.pcr10.items()]
    lines += [f"  DAMAGE: {d}" for d in m.damage]
    return lines


def inspect_kinds() -> list[Kind]:
    return [Kind("kexec image", is_image, describe, render)]
