"""``kimagekit verify|ls|extract IMAGE`` and the text of the kexec-image kind of ``inspect``."""

from __future__ import annotations

from pathlib import Path

import typer

from kimagekit.arch.ppc64_purgatory import INSPECTION_ONLY, image_notes
from kimagekit.cli.common import emit_json, input_named, jsonable, out
from kimagekit.cli.memory_map import map_lines, write_svg
from kimagekit.cli.progress import Progress
from kimagekit.handover import verify_image
from kimagekit.image import ImageInfo, extract, open_image
from kimagekit.image_info import HandoverSummary, ImageSummary
from kimagekit.memory_map import image_map


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify_cmd(
        image: Path = typer.Argument(..., metavar="IMAGE", help="A kexec image written by "
                                     "kimagekit ('-': stdin)."),
    ) -> None:
        """Recompute the digest as the purgatory will at reboot, and read the hand-over as the
        next kernel will: exit 0 if both hold.

        Example: kimagekit verify kexec.img"""
        with input_named(image), Progress(f"verifying {image}"):
            res = verify_image(image)
        if res.ok:
            out(f"ok {res.digest.digest.hex()}")
        for problem in res.problems:
            out(f"FAILED: {problem}")
        for note in res.notes:
            out(note)
        if not res.ok:
            raise typer.Exit(1)

    @app.command("ls")
    def ls_cmd(
        image: Path = typer.Argument(..., metavar="IMAGE", help="A kexec image written by "
                                     "kimagekit ('-': stdin)."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output: the "
                                     "segments and the memory map."),
        svg: Path | None = typer.Option(None, "--svg", metavar="FILE", help="Also write the "
                                        "memory map as SVG ('-': stdout)."),
    ) -> None:
        """List the segments and the memory map: RAM, reservations, segments and free holes.

        The segment table (index, role, mem, memsz, bufsz, checksummed, file offset), then
        the map as a bar (one column per 1/64 of the range) and a table with end addresses and
        sizes.

        Example: kimagekit ls kexec.img --svg map.svg"""
        with input_named(image), open_image(image) as (info, view):
            memory = image_map(info, view)
        if svg is not None:
            write_svg(svg, memory, (image,))
        if as_json:
            emit_json({**jsonable(info), "memory_map": jsonable(memory)})
            return
        for line in [*ls_lines(info), "", *map_lines(memory)]:
            out(line)

    @app.command("extract")
    def extract_cmd(
        image: Path = typer.Argument(..., metavar="IMAGE", help="A kexec image written by "
                                     "kimagekit ('-': stdin)."),
        segment: str = typer.Argument(..., metavar="SEGMENT", help="Segment index or role: "
                                      "kernel, initrd, dtb, purgatory, handover, boot-params."),
        output: Path = typer.Option(..., "-o", "--output", metavar="FILE",
                                    help="Where to write the content ('-': stdout)."),
    ) -> None:
        """Write one segment's content (bufsz bytes) to a file.

        Example: kimagekit extract kexec.img handover -o handover.bin"""
        with input_named(image):
            seg = extract(image, segment, output)
        out(f"segment {seg.index} ({seg.role}): {seg.bufsz} bytes -> {output}")


def ls_lines(info: ImageInfo) -> list[str]:
    lines = [f"{'#':>2} {'role':<11} {'mem':>18} {'memsz':>10} {'bufsz':>10} {'sum':<3} "
             f"{'offset':>10}"]
    for s in info.segments:
        lines.append(f"{s.index:>2} {s.role.value:<11} {s.mem:#18x} {s.memsz:#10x} "
                     f"{s.bufsz_at_load:#10x} {'yes' if s.checksummed else 'no':<3} "
                     f"{s.offset:#10x}")
    lines += [f"segment {s.index} ({s.role.value}): added empty at load (bufsz 0), filled at "
              f"execute: the file holds {s.bufsz:#x} bytes, the list at execute"
              for s in info.segments if s.filled_at_execute]
    # ls and build: an image without the purgatory the ppc64 kernel always loads is said so
    lines += [n for n in image_notes(info.arch, info.has_purgatory) if n == INSPECTION_ONLY]
    return lines


# --- inspect -------------------------------------------------------------------------------------

def render_summary(s: ImageSummary) -> list[str]:
    lines = [f"arch {s.arch}, entry {s.entry:#x}, digest policy {s.policy}, "
             f"purgatory {'yes' if s.purgatory else 'no (digest kept in the note)'}",
             f"cmdline {s.cmdline!r}", "segments:"]
    for g in s.segments:
        late = (f" (filled at execute: {g.bufsz:#x} bytes)" if g.bufsz_at_load != g.bufsz
                else "")
        lines.append(f"  {g.index:>2} {g.role:<11} mem {g.mem:#x} memsz {g.memsz:#x} bufsz "
                     f"{g.bufsz_at_load:#x}{late} "
                     f"{'checksummed' if g.checksummed else 'not checksummed'} "
                     f"sha256 {g.sha256}{'' if g.unchanged else ' (changed since written)'}")
    lines.append("regions: " + ", ".join(f"{a:#x}+{n:#x}" for a, n in s.regions))
    lines.append(f"digest {s.digest}: {'ok' if s.digest_ok else 'FAILED: ' + s.digest_status}")
    lines += s.notes
    if s.handover is not None:
        h = s.handover
        lines.append(f"hand-over: {h.address:#x} size {h.size:#x} used {h.used:#x} style "
                     f"{h.style}{'' if h.unchanged else ' (content changed since written)'}")
        lines += _handover_lines(h)
    if s.dtb_error is not None:
        lines.append(f"device tree: cannot be read: {s.dtb_error}")
    for k, v in (s.chosen or {}).items():
        lines.append(f"/chosen {k} = {v}")
    if s.memory_map is not None:
        lines += map_lines(s.memory_map)
    return lines


def _handover_lines(h: HandoverSummary) -> list[str]:
    lines = []
    a = h.announced
    if a is not None:
        lines.append(f"  announced ({a.style}): {a.start:#x} size {a.size:#x}, "
                     f"{'reserved' if a.reserved else 'NOT reserved'}, "
                     f"{'matches the segment' if a.matches else 'DOES NOT match the segment'}")
    m = h.ima
    verdict = ("restore FAILED" if m.restore_error else "restore ok" if m.restored is not None
               else "no restore rules")
    lines.append(f"  IMA {m.form}: {m.entries} entries, {verdict}")
    lines += [f"  PCR 10 {bank} {value}" for bank, value in m.pcr10.items()]
    lines += [f"  DAMAGE: {d}" for d in m.damage]
    return lines
