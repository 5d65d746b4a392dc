"""The pages a KHO tree's ``preserved-memory-map`` preserves, read from a memory dump.

The map (``kho-v2`` on, ``include/linux/kho/abi/kexec_handover.h``) is a radix tree of pages:
``KHO_TREE_MAX_DEPTH - 1`` levels of tables of physical addresses, then leaf bitmaps. A page of
order ``o`` at ``pa`` is bit ``key % 2^KHO_BITMAP_SIZE_LOG2`` of its leaf, where ``key = 1 <<
(64 - PAGE_SHIFT - o) | pa >> (PAGE_SHIFT + o)``; the walk (``__kho_radix_walk_tree``) rebuilds
the key from the table indices and decodes it (``kho_radix_decode_key``). ``kho-v1`` kept a list
of per-order bitmap chunks instead, which is not read here.

The dump is untrusted: every node is read at most once (a table naming a page already walked,
an ancestor included, is damage and not followed), so the walk is bounded by the dump's pages
and by the tree's fixed depth; a node outside the dump, a key that encodes no page, a leaf
past the bitmap are damage, and the rest of the tree is still walked.

A dump is a raw file of physical memory starting at BASE (``FILE@BASE``, default 0) or an ELF
core whose PT_LOAD headers give physical addresses (``/proc/kcore``, ``/proc/vmcore``, QEMU's
``dump-guest-memory``); it is read page by page, never whole.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from types import TracebackType

from kimagekit.errors import ParseError, UsageError

__all__ = ["FMT", "PhysMemory", "PreservedMemory", "decode_key", "encode_key", "radix_geometry",
           "walk_radix"]

FMT = "memory"
_NO_PADDR = (1 << 64) - 1
_MASK64 = (1 << 64) - 1
_MAX_DAMAGE = 64  # messages kept; the rest counted


@dataclass(frozen=True)
class PreservedMemory:
    root: int
    page_size: int
    ranges: tuple[tuple[int, int], ...]  # [start, end) merged, in address order
    orders: tuple[tuple[int, int], ...]  # (order, pages of that order preserved), by order
    nodes: int  # table and leaf pages read
    damage: tuple[str, ...]


class PhysMemory:
    """Physical memory from a dump file, read on demand (``read`` gives None outside it)."""

    def __init__(self, spec: str) -> None:
        # a file whose own name holds an @ is that file, with no base
        path, at, base_text = spec.rpartition("@") if "@" in spec and not os.path.exists(
            spec) else (spec, "", "")
        base: int | None = None
        if at:
            try:
                base = int(base_text, 0)
            except ValueError:
                raise UsageError(f"{spec!r}: BASE {base_text!r} is not a number",
                                 fmt="--memory") from None
        self.name = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as err:
            raise UsageError(f"{path}: {err.strerror}", fmt="--memory") from None
        head = os.pread(self.fd, 64, 0)
        if head[:4] == b"\x7fELF" and base is None:
            self.loads = self._elf(head)
        else:
            size = os.fstat(self.fd).st_size
            self.loads = [(base or 0, 0, size)]

    def _elf(self, head: bytes) -> list[tuple[int, int, int]]:
        if len(head) < 64 or head[4] != 2 or head[5] != 1:
            raise ParseError("an ELF core but not ELFCLASS64 little-endian", fmt=FMT,
                             field="e_ident", offset=4)
        (phoff,) = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        if phentsize != 56 or phnum == 0xFFFF:
            raise ParseError(f"program headers of {phentsize} bytes, {phnum} of them: not read",
                             fmt=FMT, field="e_phentsize", offset=54)
        table = os.pread(self.fd, 56 * phnum, phoff)
        if len(table) != 56 * phnum:
            raise ParseError(f"{phnum} program headers at {phoff:#x} run past the file",
                             fmt=FMT, field="e_phoff", offset=32)
        out = []
        for i in range(phnum):
            kind, _, off, _, pa, filesz = struct.unpack_from("<IIQQQQ", table, 56 * i)
            if kind == 1 and pa != _NO_PADDR:
                out.append((pa, off, filesz))
        return out

    def read(self, addr: int, size: int) -> bytes | None:
        for pa, off, n in self.loads:
            if pa <= addr and addr + size <= pa + n:
                data = os.pread(self.fd, size, off + addr - pa)
                return data if len(data) == size else None
        return None

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> PhysMemory:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def radix_geometry(page_shift: int) -> tuple[int, int, int, int]:
    """``enum kho_radix_consts`` for a page size: (KHO_ORDER_0_LOG2, KHO_TABLE_SIZE_LOG2,
    KHO_BITMAP_SIZE_LOG2, KHO_TREE_MAX_DEPTH)."""
    order0 = 64 - page_shift
    table = page_shift - 3  # PAGE_SIZE / sizeof(phys_addr_t)
    bitmap = page_shift + 3  # bits in a page
    depth = -(-(order0 - bitmap + 1) // table) + 1
    return order0, table, bitmap, depth


def encode_key(pa: int, order: int, page_shift: int = 12) -> int:
    """``kho_radix_encode_key``."""
    return (1 << (64 - page_shift - order)) | (pa >> (page_shift + order))


def decode_key(key: int, page_shift: int = 12) -> tuple[int, int] | None:
    """``kho_radix_decode_key``: (pa, order), or None for a key that encodes no page (no order
    bit, or an order whose shift leaves no address)."""
    order = 64 - page_shift - key.bit_length() + 1
    if key == 0 or order < 0 or page_shift + order >= 64:
        return None
    return (key << (page_shift + order)) & _MASK64, order


def walk_radix(mem: PhysMemory, root: int, page_size: int = 4096) -> PreservedMemory:
    """Every page the tree at ``root`` preserves, as ``kho_radix_walk_tree`` visits them."""
    shift = page_size.bit_length() - 1
    _, tbits, bbits, depth = radix_geometry(shift)
    entries = page_size // 8
    damage: list[str] = []
    dropped = 0
    seen: set[int] = set()
    pages: list[tuple[int, int]] = []

    def note(msg: str) -> None:
        nonlocal dropped
        if len(damage) < _MAX_DAMAGE:
            damage.append(msg)
        else:
            dropped += 1

    def node(addr: int, what: str) -> bytes | None:
        if addr in seen:
            note(f"{what} {addr:#x} is a page already walked: not followed")
            return None
        seen.add(addr)
        data = mem.read(addr, page_size) if addr % page_size == 0 else None
        if data is None:
            why = "not page aligned" if addr % page_size else "not in the memory dump"
            note(f"{what} {addr:#x}: {why}")
        return data

    def leaf(data: bytes, key: int) -> None:
        bits = int.from_bytes(data, "little")
        while bits:
            low = bits & -bits
            i = low.bit_length() - 1
            bits ^= low
            got = decode_key(key | i, shift)
            if got is None:
                note(f"leaf bit {i} of key {key:#x}: encodes no page")
            else:
                pages.append(got)

    # depth first in index order, as the kernel's recursion: (node, level, key so far, name);
    # level 0 is a leaf bitmap
    todo: list[tuple[int, int, int, str]] = [(root, depth - 1, 0, "root")]
    while todo:
        addr, level, start, what = todo.pop()
        data = node(addr, what)
        if data is None:
            continue
        if level == 0:
            leaf(data, start)
            continue
        table = struct.unpack(f"<{entries}Q", data)
        s = (level - 1) * tbits + bbits
        for i in reversed(range(entries)):  # popped back in index order
            key = start | (i << s)
            if not table[i]:
                continue
            if key >> 64:
                note(f"level {level} entry {i}: a key past 64 bits")
                continue
            todo.append((table[i], level - 1, key, f"level {level} entry {i}:"))
    if dropped:
        damage.append(f"... and {dropped} more")
    return PreservedMemory(root, page_size, _merge(pages, page_size),
                           tuple(sorted(_count(pages).items())), len(seen), tuple(damage))


def _count(pages: list[tuple[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for _, o in pages:
        out[o] = out.get(o, 0) + 1
    return out


def _merge(pages: list[tuple[int, int]], page_size: int) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for pa, o in sorted(pages):
        end = pa + (page_size << o)
        if out and pa <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((pa, end))
    return tuple(out)
