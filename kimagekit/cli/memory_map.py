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
           "boot_params": "B", "other": "O", "kho-scratch": "S"}
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
    """One character per 1/BAR_WIDTH of [lo, hi): '#' where a reservation lies, else '.' for
    free RAM, ' ' outside RAM; then each segment's letter over the cells it covers. Every
    segment shows at least once and in address order: one that shares its first cell with
    another takes the next cell (or the previous one, at the end of the bar)."""
    span = hi - lo

    def cell(addr: int) -> int:
        return min(BAR_WIDTH - 1, (addr - lo) * BAR_WIDTH // span)

    def touches(r: Region, i: int) -> bool:
        c0 = lo + span * i // BAR_WIDTH
        c1 = max(lo + span * (i + 1) // BAR_WIDTH, c0 + 1)
        return r.start < c1 and r.end > c0

    cells = [RESERVED if any(touches(r, i) for r in m.reserved)
             else FREE if any(touches(r, i) for r in m.free) else NOT_RAM
             for i in range(BAR_WIDTH)]
    segs = sorted(m.segments, key=lambda r: (r.start, r.end))[:BAR_WIDTH]
    pos: list[int] = []
    for s in segs:  # first cells, strictly increasing
        pos.append(max(cell(s.start), pos[-1] + 1 if pos else 0))
    for k in range(len(pos) - 1, -1, -1):  # pushed past the end: back, keeping the order
        pos[k] = min(pos[k], BAR_WIDTH - 1 if k == len(pos) - 1 else pos[k + 1] - 1)
    for k, s in enumerate(segs):
        stop = pos[k + 1] if k + 1 < len(segs) else BAR_WIDTH
        for i in range(pos[k], max(pos[k] + 1, min(cell(s.end - 1) + 1, stop))):
            cells[i] = _letter(s)
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
             f"  {'range':<41} {'size':>12}  {'kind':<8} label"]
    for r in regions:
        span = f"[{r.start:#x}, {r.end:#x})"
        lines.append(f"  {span:<41} {human_size(r.size):>12}  {r.kind.value:<8} {r.label}")
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
