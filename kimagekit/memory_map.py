"""A kexec image's memory map as data: the next kernel's RAM, its reservations, the segments and
the free holes left, each a :class:`Region`. The CLI draws it (a bar and a table, or SVG).

RAM and reservations are read from what the image hands the next kernel, not from the machine
that built it: the device-tree segment (``/memory`` nodes; ``/memreserve/`` and
``/reserved-memory``) on ppc64, the boot_params segment's e820 table on x86-64. An image with
neither (or one that cannot be read) has segments only, and says why in ``ram_source``."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import StrEnum

from kimagekit.errors import KimageError
from kimagekit.formats import bzimage as bz
from kimagekit.image import ImageInfo, content, open_image
from kimagekit.segments import Role

# arch/x86/include/asm/e820/types.h: RAM, reserved, ACPI, NVS, unusable, PMEM, PRAM, soft reserved
E820_TYPES = frozenset({1, 2, 3, 4, 5, 7, 12, 0xEFFFFFFF})

__all__ = ["MemoryMap", "Region", "RegionKind", "file_map", "image_map"]


class RegionKind(StrEnum):
    RAM = "ram"
    RESERVED = "reserved"
    SEGMENT = "segment"
    FREE = "free"


@dataclass(frozen=True)
class Region:
    kind: RegionKind
    start: int
    end: int  # first byte after the region
    label: str

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class MemoryMap:
    ram: tuple[Region, ...]
    reserved: tuple[Region, ...]
    segments: tuple[Region, ...]
    free: tuple[Region, ...]  # RAM minus reservations and segments (empty when RAM is unknown)
    ram_source: str  # where RAM and reservations were read, or why they are unknown

    @property
    def regions(self) -> tuple[Region, ...]:
        """Every region by address (RAM first where several start together)."""
        order = list(RegionKind)
        return tuple(sorted((*self.ram, *self.reserved, *self.segments, *self.free),
                            key=lambda r: (r.start, order.index(r.kind), r.end)))


def _segment_label(role: Role, index: int) -> str:
    return {Role.DTB: "device tree", Role.HANDOVER: "hand-over",
            Role.BOOT_PARAMS: "boot_params"}.get(role, role.value) + f" #{index}"


def _tree_ranges(data: bytes) -> tuple[list[Region], list[Region]]:
    from kimagekit import ppc_fdt
    from kimagekit.devicetree import DeviceTree

    tree = DeviceTree.parse(data)
    ram = [Region(RegionKind.RAM, r.start, r.start + r.size, f"RAM {r.source}")
           for r in ppc_fdt.ram_ranges(tree) if r.size]
    res = [Region(RegionKind.RESERVED, r.start, r.start + r.size, r.source)
           for r in ppc_fdt.reserved_ranges(tree) if r.size]
    return ram, res


def _e820_ranges(data: bytes) -> tuple[list[Region], list[Region]]:
    if len(data) < bz.OFF_E820_TABLE:
        raise ValueError("boot_params too short for its e820 table")
    count = min(data[bz.OFF_E820_ENTRIES], bz.E820_MAX_ENTRIES_ZEROPAGE)
    ram: list[Region] = []
    res: list[Region] = []
    for i in range(count):
        at = bz.OFF_E820_TABLE + i * bz.E820_ENTRY_SIZE
        if at + bz.E820_ENTRY_SIZE > len(data):
            break
        addr, size, kind = struct.unpack_from("<QQI", data, at)
        if addr + size > 1 << 64:
            raise ValueError(f"e820 entry {i} ({addr:#x}+{size:#x}) runs past 2^64")
        if kind not in E820_TYPES:
            raise ValueError(f"e820 entry {i} has type {kind}, which no kernel defines")
        if not size:
            continue
        if kind == bz.E820_TYPE_RAM:
            ram.append(Region(RegionKind.RAM, addr, addr + size, f"RAM e820 {i}"))
        else:
            res.append(Region(RegionKind.RESERVED, addr, addr + size, f"e820 {i} type {kind}"))
    return ram, res


def _subtract(ram: list[Region], taken: list[tuple[int, int]]) -> list[Region]:
    """RAM less every taken range: the holes, in address order."""
    holes = sorted({(r.start, r.end) for r in ram})
    for t0, t1 in sorted(taken):
        nxt = []
        for h0, h1 in holes:
            if t1 <= h0 or t0 >= h1:
                nxt.append((h0, h1))
                continue
            if h0 < t0:
                nxt.append((h0, t0))
            if t1 < h1:
                nxt.append((t1, h1))
        holes = nxt
    return [Region(RegionKind.FREE, a, b, "hole") for a, b in holes]


def image_map(info: ImageInfo, view: memoryview | bytes) -> MemoryMap:
    """The memory map of a read image (:func:`kimagekit.image.open_image`)."""
    segments = [Region(RegionKind.SEGMENT, s.mem, s.mem + s.memsz,
                       _segment_label(s.role, s.index)) for s in info.segments]
    by_role = {s.role: s for s in info.segments}
    ram: list[Region] = []
    res: list[Region] = []
    source = "not recorded in the image (no device tree or boot_params segment)"
    for role, reader, where in ((Role.DTB, _tree_ranges, "the device-tree segment"),
                                (Role.BOOT_PARAMS, _e820_ranges,
                                 "the boot_params segment's e820 table")):
        seg = by_role.get(role)
        if seg is None:
            continue
        try:
            ram, res = reader(bytes(content(view, seg)))
        except (KimageError, ValueError, struct.error) as exc:
            source = f"{where} cannot be read: {exc}"
        else:
            source = where
        break
    free = _subtract(ram, [(r.start, r.end) for r in (*res, *segments)]) if ram else []
    return MemoryMap(tuple(ram), tuple(res), tuple(segments), tuple(free), source)


def file_map(path: str | os.PathLike[str]) -> MemoryMap:
    """The memory map of the image file at ``path``."""
    with open_image(path) as (info, view):
        return image_map(info, view)
