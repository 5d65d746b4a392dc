"""The memory map drawn: a proportional bar and a table in text (no colour: the same on a
terminal and off one), or an SVG with one ``rect`` per region, for ``ls``, ``inspect`` and
``build``."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

from kimagekit.memory_map import MemoryMap, Region, RegionKind
from kimagekit.output_files import write_output

__all__ = ["BAR_WIDTH", "human_size", "map_lines", "svg_text", "write_svg"]

BAR_WIDTH = 64
# a segment's letter by the first word of its label
LETTERS = {"kernel": "K", "initrd": "I", "purgatory": "P", "device": "D", "hand-over": "H",
           "boot_params": "B", "other": "O"}
RESERVED, FREE, NOT_RAM = "#", ".", " "
COLOURS = {RegionKind.RAM: "#dddddd", RegionKind.RESERVED: "#999999",
           RegionKind.FREE: "#ffffff", RegionKind.SEGMENT: "#4a7ebb"}


def human_size(n: int) -> str:
    """Binary units, whole where exact, else two decimals (so a rounded size never reads as
    exact): 4096 -> '4 KiB', 1536 -> '1.50 KiB'."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            whole, part = divmod(n, 1 << shift)
            return f"{whole} {unit}" if not part else f"{n / (1 << shift):.2f} {unit}"
    return f"{n} B"


def _letter(r: Region) -> str:
    return LETTERS.get(r.label.split()[0], "O")


def _bar(m: MemoryMap, lo: int, hi: int) -> str:
    """One character per 1/BAR_WIDTH of [lo, hi): a segment's letter wherever a segment lies
    (the largest share of the cell wins), else '#' for a reservation, '.' for free RAM and
    ' ' outside RAM. A segment that lost its every cell to a larger one takes the nearest
    cell holding no letter, so each segment shows at least once."""
    span = hi - lo
    cells = []
    for i in range(BAR_WIDTH):
        c0 = lo + span * i // BAR_WIDTH
        c1 = max(lo + span * (i + 1) // BAR_WIDTH, c0 + 1)

        def share(r: Region, c0: int = c0, c1: int = c1) -> int:
            return max(0, min(r.end, c1) - max(r.start, c0))

        best = max(m.segments, key=share, default=None)
        if best is not None and share(best):
            cells.append(_letter(best))
        elif any(share(r) for r in m.reserved):
            cells.append(RESERVED)
        elif any(share(r) for r in m.free):
            cells.append(FREE)
        else:
            cells.append(NOT_RAM)
    letters = set(LETTERS.values())
    shown = set(cells)
    for s in sorted(m.segments, key=lambda r: r.start):
        if _letter(s) in shown:
            continue
        home = min(BAR_WIDTH - 1, (s.start - lo) * BAR_WIDTH // span)
        free = [i for i in range(BAR_WIDTH) if cells[i] not in letters]
        if free:
            cells[min(free, key=lambda i: (abs(i - home), i))] = _letter(s)
            shown.add(_letter(s))
    return "".join(cells)


def map_lines(m: MemoryMap) -> list[str]:
    """The text: bar with its bounds, a legend, then one table line per region."""
    regions = m.regions
    if not regions:
        return ["memory map: empty"]
    lo = min(r.start for r in regions)
    hi = max(r.end for r in regions)
    legend = sorted({f"{_letter(s)} {s.label.rsplit(' #', 1)[0]}" for s in m.segments})
    if m.reserved:
        legend.append(f"{RESERVED} reserved")
    if m.free:
        legend.append(f"{FREE} free")
    if m.ram:
        legend.append("blank: not RAM")
    lines = [f"memory map (RAM and reservations: {m.ram_source}):",
             f"  {lo:#x} |{_bar(m, lo, hi)}| {hi:#x}",
             f"  {', '.join(legend)}; one column {human_size(max(1, (hi - lo) // BAR_WIDTH))}",
             f"  {'range':<41} {'size':>10}  {'kind':<8} label"]
    for r in regions:
        span = f"[{r.start:#x}, {r.end:#x})"
        lines.append(f"  {span:<41} {human_size(r.size):>10}  {r.kind.value:<8} {r.label}")
    return lines


def svg_text(m: MemoryMap, width: int = 960) -> str:
    """The same map as SVG: one ``rect`` per region (title: kind, range, size, label), rows by
    kind, x proportional to the address; a label under each segment."""
    regions = m.regions
    lo = min((r.start for r in regions), default=0)
    hi = max((r.end for r in regions), default=1)
    span = max(hi - lo, 1)
    rows = [RegionKind.RAM, RegionKind.RESERVED, RegionKind.SEGMENT, RegionKind.FREE]
    row_h, top, left = 28, 24, 90
    inner = width - left - 10
    height = top + row_h * len(rows) + 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="11">',
           f"<title>kimagekit memory map {lo:#x}-{hi:#x}</title>"]
    for k, kind in enumerate(rows):
        out.append(f'<text x="4" y="{top + k * row_h + 17}">{kind.value}</text>')
    for r in regions:
        k = rows.index(r.kind)
        x = left + inner * (r.start - lo) / span
        w = max(inner * r.size / span, 1.0)
        y = top + k * row_h
        tip = xml_escape(f"{r.kind.value} [{r.start:#x}, {r.end:#x}) {human_size(r.size)} "
                         f"{r.label}")
        out.append(f'<rect class="{r.kind.value}" x="{x:.2f}" y="{y}" width="{w:.2f}" '
                   f'height="{row_h - 4}" fill="{COLOURS[r.kind]}" stroke="#333333" '
                   f'data-start="{r.start:#x}" data-end="{r.end:#x}" '
                   f'data-label="{xml_escape(r.label, {chr(34): "&quot;"})}">'
                   f"<title>{tip}</title></rect>")
    for n, s in enumerate(m.segments):
        x = left + inner * (s.start - lo) / span
        y = top + len(rows) * row_h + 14 + 14 * (n % 3)
        out.append(f'<text x="{x:.2f}" y="{y}">{xml_escape(s.label)}</text>')
    out.append(f'<text x="{left}" y="{top - 8}">{lo:#x}</text>')
    out.append(f'<text x="{width - 10}" y="{top - 8}" text-anchor="end">{hi:#x}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_svg(path: Path, m: MemoryMap, inputs: tuple[object, ...] = ()) -> None:
    """``--svg FILE`` (``-``: stdout), written like every output: atomically, read back."""
    write_output(path, svg_text(m).encode(), inputs=inputs)
