"""kexec segments placed as ``kexec_add_buffer`` places them, checked as the kernel checks them.

Addresses are physical. A :class:`SegmentList` is immutable: adding or updating returns a new one.
Ranges here use exclusive ends; the kernel's inclusive ``end`` appears only inside the hole search,
where its arithmetic (and one old off-by-one) is reproduced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum

from kimagekit.errors import RuleError, UsageError
from kimagekit.formats.kexec import KEXEC_SEGMENT_MAX

__all__ = [
    "DEFAULT_RAM", "FMT", "U64_MAX", "Content", "HoleSearch", "KexecBuf", "MemRange", "Role",
    "Segment", "SegmentList", "Target", "add_buffer", "align_down", "align_up", "locate_mem_hole",
    "parse_mem_ranges", "sanity_check", "update_segment",
]

Content = bytes | memoryview
U64_MAX = (1 << 64) - 1
FMT = "kexec"


class Role(StrEnum):
    KERNEL = "kernel"
    INITRD = "initrd"
    DTB = "dtb"
    PURGATORY = "purgatory"
    HANDOVER = "handover"
    BOOT_PARAMS = "boot-params"
    OTHER = "other"
    KHO_SCRATCH = "kho-scratch"


@dataclass(frozen=True)
class MemRange:
    start: int
    size: int

    @property
    def end(self) -> int:
        """First byte after the range."""
        return self.start + self.size

    def __str__(self) -> str:
        return f"{self.start:#x}-{self.end - 1:#x}"


# Without a device tree or --mem: 1 MiB to 4 GiB, the low RAM every x86-64 and pseries guest has.
DEFAULT_RAM = (MemRange(0x100000, (4 << 30) - 0x100000),)


class HoleSearch(StrEnum):
    """Which kernel's generic hole search (``kexec_locate_mem_hole``, used by x86-64) to follow.

    upstream-6.8: a top-down search walks RAM from the highest range and starts at the range's
    last full page. pre-6.8 (6.1 and the other older kernels): it walks RAM upwards, takes the
    first range with room, and starts one byte too low, so it lands a page under the top.
    """

    UPSTREAM_6_8 = "upstream-6.8"
    PRE_6_8 = "pre-6.8"


@dataclass(frozen=True)
class Target:
    """Where the segments go and which kernel's placement rules apply.

    ``destination_limit`` is KEXEC_DESTINATION_MEMORY_LIMIT (a segment's end must stay below it).
    ``reverse_top_down_walk``: since 6.8 a top-down search walks RAM from the highest range; before,
    it walked upwards and took the top of the first range with room. ``legacy_top_down_bound``: the
    old top-down search started one byte too low, which can cost a page at the top of a range.
    """

    arch: str
    page_size: int = 4096
    ram: tuple[MemRange, ...] = DEFAULT_RAM
    reserved: tuple[MemRange, ...] = ()
    destination_limit: int = U64_MAX
    reverse_top_down_walk: bool = True
    legacy_top_down_bound: bool = False
    # KHO active (not a crash load): every hole is searched in these areas only, in the
    # running kernel's kho_scratch[] order (kho_locate_mem_hole); None: KHO inactive
    kho_scratch: tuple[MemRange, ...] | None = None

    def free_ranges(self) -> tuple[MemRange, ...]:
        """RAM minus the reserved ranges, sorted, as the powerpc exclude-list walk sees it."""
        out: list[MemRange] = []
        for ram in sorted(self.ram, key=lambda r: r.start):
            pieces = [(ram.start, ram.end)]
            for res in self.reserved:
                nxt = []
                for s, e in pieces:
                    if res.end <= s or res.start >= e:
                        nxt.append((s, e))
                        continue
                    if s < res.start:
                        nxt.append((s, res.start))
                    if res.end < e:
                        nxt.append((res.end, e))
                pieces = nxt
            out.extend(MemRange(s, e - s) for s, e in pieces if e > s)
        return tuple(out)

    def with_hole_search(self, rules: HoleSearch) -> Target:
        """This target with the generic hole search of ``rules``."""
        old = rules == HoleSearch.PRE_6_8
        return replace(self, reverse_top_down_walk=not old, legacy_top_down_bound=old)


@dataclass(frozen=True)
class Segment:
    content: Content
    mem: int
    memsz: int
    role: Role
    checksummed: bool = True

    @property
    def bufsz(self) -> int:
        return len(self.content)

    @property
    def end(self) -> int:
        return self.mem + self.memsz


@dataclass(frozen=True)
class KexecBuf:
    """A request to add a segment (the kernel's ``struct kexec_buf``). ``mem`` None means
    KEXEC_BUF_MEM_UNKNOWN: search for a hole; a value fixes the address (checked, not searched)."""

    content: Content
    memsz: int
    role: Role
    buf_align: int = 0
    buf_min: int = 0
    buf_max: int = U64_MAX
    top_down: bool = False
    mem: int | None = None
    checksummed: bool = True


@dataclass(frozen=True)
class SegmentList:
    target: Target
    segments: tuple[Segment, ...] = ()

    def index_of(self, role: Role) -> int | None:
        return next((i for i, s in enumerate(self.segments) if s.role == role), None)


def align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def align_down(value: int, align: int) -> int:
    return value // align * align


def _field(i: int) -> str:
    return f"segment[{i}]"


def _conflict(segments: tuple[Segment, ...], start: int, end: int) -> Segment | None:
    """The first segment overlapping [start, end) (the kernel's kimage_is_destination_range)."""
    return next((s for s in segments if end > s.mem and start < s.end), None)


def _hole_top_down(t: Target, segs: tuple[Segment, ...], rng: MemRange, kb: KexecBuf,
                   memsz: int, align: int) -> int | None:
    last = min(rng.end - 1, kb.buf_max)  # the kernel's inclusive end
    cand = last - memsz + (0 if t.legacy_top_down_bound else 1)
    while True:
        cand = align_down(cand, align)
        if cand < rng.start or cand < kb.buf_min:
            return None
        hit = _conflict(segs, cand, cand + memsz)
        if hit is None:
            return cand
        # The kernel steps down a page and re-aligns; jumping below the conflict visits the
        # same first fit without walking every page.
        cand = hit.mem - memsz


def _hole_bottom_up(segs: tuple[Segment, ...], rng: MemRange, kb: KexecBuf,
                    memsz: int, align: int) -> int | None:
    cand = max(rng.start, kb.buf_min)
    while True:
        cand = align_up(cand, align)
        last = cand + memsz - 1
        if last > rng.end - 1 or last > kb.buf_max:
            return None
        hit = _conflict(segs, cand, cand + memsz)
        if hit is None:
            return cand
        cand = hit.end


def locate_mem_hole(sl: SegmentList, kb: KexecBuf, memsz: int, align: int) -> int:
    """Where ``kexec_locate_mem_hole`` puts a buffer of ``memsz`` bytes (already page-rounded)."""
    t = sl.target
    ranges = list(t.free_ranges())
    if kb.top_down and t.reverse_top_down_walk:
        ranges.reverse()
    if t.kho_scratch is not None:  # the scratch areas as they are: array order, no exclusions
        ranges = list(t.kho_scratch)
    for rng in ranges:
        if rng.size < memsz or rng.end - 1 < kb.buf_min or rng.start > kb.buf_max:
            continue
        if kb.top_down:
            found = _hole_top_down(t, sl.segments, rng, kb, memsz, align)
        else:
            found = _hole_bottom_up(sl.segments, rng, kb, memsz, align)
        if found is not None:
            return found
    where = " of the KHO scratch areas" if t.kho_scratch is not None else ""
    raise RuleError(
        f"no free memory{where} for {memsz:#x} bytes aligned to {align:#x} in "
        f"[{kb.buf_min:#x}, {kb.buf_max:#x}] ({'top-down' if kb.top_down else 'bottom-up'})",
        fmt=FMT, field=f"{_field(len(sl.segments))}({kb.role})")


def add_buffer(sl: SegmentList, kb: KexecBuf) -> tuple[SegmentList, Segment]:
    """``kexec_add_buffer``: round memsz up to a page, raise buf_align to a page, place, append."""
    t = sl.target
    field = f"{_field(len(sl.segments))}({kb.role})"
    if len(sl.segments) >= KEXEC_SEGMENT_MAX:
        raise RuleError(f"already {KEXEC_SEGMENT_MAX} segments, the kernel's maximum",
                        fmt=FMT, field=field)
    memsz = align_up(kb.memsz, t.page_size)
    align = max(kb.buf_align, t.page_size)
    if align & (align - 1):
        raise RuleError(f"buf_align {align:#x} is not a power of two", fmt=FMT, field=field)
    if len(kb.content) > memsz:
        raise RuleError(f"bufsz {len(kb.content):#x} exceeds memsz {memsz:#x}",
                        fmt=FMT, field=field)
    if memsz == 0:
        raise RuleError("memsz is 0", fmt=FMT, field=field)
    if kb.mem is None:
        mem = locate_mem_hole(sl, kb, memsz, align)
    else:
        mem = kb.mem
        _check_fixed(sl, kb, mem, memsz, align, field)
    seg = Segment(kb.content, mem, memsz, kb.role, kb.checksummed)
    return replace(sl, segments=(*sl.segments, seg)), seg


def _check_fixed(sl: SegmentList, kb: KexecBuf, mem: int, memsz: int, align: int,
                 field: str) -> None:
    if mem % align:
        raise RuleError(f"fixed address {mem:#x} is not aligned to {align:#x}",
                        fmt=FMT, field=field)
    if mem < kb.buf_min or mem + memsz - 1 > kb.buf_max:
        raise RuleError(f"fixed range {mem:#x}-{mem + memsz - 1:#x} is outside "
                        f"[{kb.buf_min:#x}, {kb.buf_max:#x}]", fmt=FMT, field=field)
    if not any(r.start <= mem and mem + memsz <= r.end for r in sl.target.free_ranges()):
        raise RuleError(f"fixed range {mem:#x}-{mem + memsz - 1:#x} is not inside free RAM",
                        fmt=FMT, field=field)
    hit = _conflict(sl.segments, mem, mem + memsz)
    if hit is not None:
        raise RuleError(f"fixed range {mem:#x}-{mem + memsz - 1:#x} overlaps "
                        f"{_field(sl.segments.index(hit))}", fmt=FMT, field=field)


def sanity_check(sl: SegmentList) -> None:
    """``sanity_check_segment_list`` (non-crash kernels), in the kernel's order of checks."""
    t, segs = sl.target, sl.segments
    if len(segs) > KEXEC_SEGMENT_MAX:
        raise RuleError(f"{len(segs)} segments, more than {KEXEC_SEGMENT_MAX}", fmt=FMT,
                        field="segments")
    mask = t.page_size - 1
    for i, s in enumerate(segs):
        if s.mem & mask or s.end & mask:
            raise RuleError(f"mem {s.mem:#x} or end {s.end:#x} is not page aligned "
                            f"({t.page_size:#x})", fmt=FMT, field=_field(i))
        if s.end >= t.destination_limit:
            raise RuleError(f"end {s.end:#x} is not below the destination limit "
                            f"{t.destination_limit:#x}", fmt=FMT, field=_field(i))
    for i, s in enumerate(segs):
        for j in range(i):
            if s.end > segs[j].mem and s.mem < segs[j].end:
                raise RuleError(f"overlaps {_field(j)}", fmt=FMT, field=_field(i))
    for i, s in enumerate(segs):
        if s.bufsz > s.memsz:
            raise RuleError(f"bufsz {s.bufsz:#x} exceeds memsz {s.memsz:#x}",
                            fmt=FMT, field=_field(i))
    ram_pages = sum(r.size for r in t.free_ranges()) // t.page_size
    total = 0
    for i, s in enumerate(segs):
        pages = align_up(s.memsz, t.page_size) // t.page_size
        total += pages
        if pages > ram_pages // 2 or total > ram_pages // 2:
            raise RuleError(f"segments take more than half of RAM ({ram_pages} pages)",
                            fmt=FMT, field=_field(i))


def update_segment(sl: SegmentList, mem: int, memsz: int, content: Content, *,
                   allow_checksummed: bool = False) -> SegmentList:
    """The offline ``kexec_update_segment``: new contents for the segment at exactly ``mem`` and
    ``memsz``; only one left out of the checksum may change (``allow_checksummed`` is for a caller
    that recomputes the digest afterwards); nothing else moves."""
    i = next((k for k, g in enumerate(sl.segments) if g.mem == mem and g.memsz == memsz), -1)
    if i < 0:
        raise RuleError(f"no segment at mem {mem:#x} with memsz {memsz:#x}", fmt=FMT,
                        field="segments")
    s = sl.segments[i]
    if s.checksummed and not allow_checksummed:
        raise RuleError(f"the {s.role} segment is checksummed: only a segment left out of "
                        "the checksum may change", fmt=FMT, field=_field(i))
    if len(content) > s.memsz:
        raise RuleError(f"new contents are {len(content)} bytes, {len(content) - s.memsz} more "
                        f"than the segment's memsz {s.memsz}", fmt=FMT, field=_field(i))
    new = replace(s, content=content)
    return replace(sl, segments=(*sl.segments[:i], new, *sl.segments[i + 1:]))


_RANGE = re.compile(r"^\s*(0x[0-9a-f]+|\d+)\s*([-+])\s*(0x[0-9a-f]+|\d+)\s*$", re.IGNORECASE)


def parse_mem_ranges(text: str, option: str = "--mem") -> tuple[MemRange, ...]:
    """``START-LAST`` (inclusive, e820 style) or ``START+SIZE``, comma separated; errors name
    OPTION."""
    out = []
    for part in text.split(","):
        m = _RANGE.match(part)
        if not m:
            raise UsageError(f"{part.strip()!r} is not START-LAST or START+SIZE", fmt=option)
        a, op, b = int(m[1], 0), m[2], int(m[3], 0)
        size = b - a + 1 if op == "-" else b
        if size <= 0:
            raise UsageError(f"{part.strip()!r} is empty", fmt=option)
        if a + size > U64_MAX + 1:
            # e820 holds u64 addresses and sizes: memory ends at 2^64.
            raise UsageError(f"{part.strip()!r} ends past 2^64", fmt=option)
        if size > U64_MAX:
            raise UsageError(f"{part.strip()!r} is 2^64 bytes: an e820 size holds at most "
                             "2^64 - 1", fmt=option)
        out.append(MemRange(a, size))
    return tuple(out)
