"""The loading kernel's side of Kexec HandOver (KHO) in a ``kexec_file_load``, offline.

When KHO is active in the running kernel (booted with ``kho=on``, or built with
``CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT``) and the load is not a crash load:

- ``kho_fill_kimage`` adds one segment after IMA's and before the image loader's: the running
  kernel's ``kho_scratch[]`` array (``{u64 addr, u64 size}`` per area, in its order), placed
  top-down at 64 KiB alignment, hashed like any segment;
- ``kho_locate_mem_hole`` confines every hole search (that segment's and all later ones) to
  those scratch areas, walked in array order, with no fallback to the rest of RAM;
- the next kernel learns where the KHO tree and the scratch array are from x86's
  ``SETUP_KEXEC_KHO`` setup_data, or ``/chosen`` (:mod:`kimagekit.kho_chosen`).

The KHO tree is a preserved page of the running kernel (``kho_out.fdt``), not a segment: its
address is an input (:attr:`KhoLoad.fdt`), and its size is always one page. The scratch areas
are an input too (debugfs ``kho/out/scratch_phys`` and ``scratch_len`` show them). Kernels
6.16 to 6.18 had a separate "finalize" step that 7.2 no longer has; kimagekit follows 7.2, where
an active KHO always hands its tree over.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, replace
from pathlib import Path

from kimagekit.errors import UsageError
from kimagekit.segments import (
    U64_MAX,
    KexecBuf,
    MemRange,
    Role,
    Segment,
    SegmentList,
    Target,
    add_buffer,
    parse_mem_ranges,
)

__all__ = ["FMT", "SCRATCH_ALIGN", "SCRATCH_ENTRY", "KhoLoad", "add_scratch", "check_kho",
           "kho_data", "kho_target", "parse_scratch", "read_scratch", "scratch_array"]

FMT = "kho"
SCRATCH_ALIGN = 0x10000  # kho_fill_kimage: .buf_align = SZ_64K
SCRATCH_ENTRY = struct.Struct("<QQ")  # struct kho_scratch {phys_addr_t addr, size}: LE arches
_ZERO = re.compile(r"^\s*(0x[0-9a-f]+|\d+)\s*\+\s*(?:0x)?0+\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class KhoLoad:
    """An active KHO in the loading kernel: its tree's physical address (``kho_out.fdt``) and
    its scratch areas (``kho_scratch[]``, in the kernel's order)."""

    fdt: int
    scratch: tuple[MemRange, ...]


def scratch_array(areas: tuple[MemRange, ...]) -> bytes:
    """The scratch segment's bytes: ``kho_scratch[]`` as the kernel holds it."""
    return b"".join(SCRATCH_ENTRY.pack(a.start, a.size) for a in areas)


def check_kho(kho: KhoLoad, target: Target) -> None:
    """Inputs the running kernel could not have: refused naming the option."""
    if not kho.fdt or kho.fdt % target.page_size or kho.fdt > U64_MAX:
        raise UsageError(f"the KHO tree's address {kho.fdt:#x} is not a page (kho_out.fdt is "
                         "one preserved page)", fmt="--kho-fdt")
    if not kho.scratch:
        raise UsageError("no scratch area (the kernel has at least one per memory node and "
                         "two more)", fmt="--kho-scratch")
    for a in kho.scratch:
        if not any(r.start <= a.start and a.end <= r.end for r in target.ram):
            raise UsageError(f"scratch area {a} is not inside RAM (the kernel carves its "
                             "scratch areas from memblock)", fmt="--kho-scratch")


def kho_target(target: Target, kho: KhoLoad | None, *, crash: bool = False) -> Target:
    """``target`` with its hole search confined to the scratch areas (``kho_locate_mem_hole``:
    not for crash loads, which stay in the crash kernel's reservation)."""
    if kho is None or crash:
        return target
    return replace(target, kho_scratch=kho.scratch)


def add_scratch(sl: SegmentList, kho: KhoLoad | None, *, crash: bool = False
                ) -> tuple[SegmentList, Segment | None]:
    """``kho_fill_kimage``: the scratch array as a segment, top-down at 64 KiB alignment
    anywhere (``buf_max`` ULONG_MAX), hashed; nothing for a crash load or an inactive KHO."""
    if kho is None or crash:
        return sl, None
    data = scratch_array(kho.scratch)
    return add_buffer(sl, KexecBuf(data, len(data), Role.KHO_SCRATCH, buf_align=SCRATCH_ALIGN,
                                   buf_max=U64_MAX, top_down=True))


def kho_data(kho: KhoLoad, scratch: Segment, page_size: int) -> tuple[int, int, int, int]:
    """``struct kho_data`` (x86 setup_data) and the ``/chosen`` ranges: the tree's address and
    one page (``fdt_size = PAGE_SIZE``), the scratch segment's address and its bufsz."""
    return kho.fdt, page_size, scratch.mem, scratch.bufsz


def parse_scratch(text: str) -> tuple[MemRange, ...]:
    """``START+SIZE`` or ``START-LAST``, comma separated, in the kernel's array order; a size
    may be 0 (the kernel keeps an empty area for a node whose share rounds to nothing)."""
    out = []
    for part in text.split(","):
        m = _ZERO.match(part)
        if m:
            out.append(MemRange(int(m[1], 0), 0))
            continue
        try:
            out += parse_mem_ranges(part)
        except UsageError as err:
            raise UsageError(err.message, fmt="--kho-scratch") from None
    return tuple(out)


def read_scratch(spec: str) -> tuple[MemRange, ...]:
    """``--kho-scratch``: ranges, or a folder holding debugfs's ``scratch_phys`` and
    ``scratch_len`` (a copy of ``/sys/kernel/debug/kho/out``), or a file holding the raw
    array (the scratch segment's bytes)."""
    path = Path(spec)
    if not path.exists():
        return parse_scratch(spec)
    if path.is_dir():
        cols = []
        for name in ("scratch_phys", "scratch_len"):
            try:
                text = (path / name).read_text()
                cols.append([int(w, 16) for w in text.split()])
            except (OSError, ValueError) as err:
                raise UsageError(f"{path / name}: not debugfs's one hex number a line "
                                 f"({err})", fmt="--kho-scratch") from None
        if len(cols[0]) != len(cols[1]):
            raise UsageError(f"{path}: {len(cols[0])} scratch_phys lines but {len(cols[1])} "
                             "scratch_len lines", fmt="--kho-scratch")
        return tuple(MemRange(a, s) for a, s in zip(*cols, strict=True))
    from kimagekit.fileio import read_input

    raw = bytes(read_input(os.fspath(path), "--kho-scratch"))
    if not raw or len(raw) % SCRATCH_ENTRY.size:
        raise UsageError(f"{path}: {len(raw)} bytes are not whole {{u64 addr, u64 size}} "
                         "entries", fmt="--kho-scratch")
    return tuple(MemRange(*SCRATCH_ENTRY.unpack_from(raw, at))
                 for at in range(0, len(raw), SCRATCH_ENTRY.size))
