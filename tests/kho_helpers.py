"""Synthetic KHO memory: a preserved-pages radix tree laid out in a raw memory dump as the
kernel's ``kho_radix_add_page`` builds it (kernel/liveupdate/kexec_handover.c:169-225), nodes
taken from a bump allocator. For the tests only; nothing here is read from a real kernel."""

from __future__ import annotations

import struct

from kimagekit.kho_memory import encode_key, radix_geometry

PAGE = 4096


class RadixDump:
    """Physical memory ``[base, base + size)`` holding a radix tree whose nodes start at
    ``nodes_at``."""

    def __init__(self, size: int = 1 << 20, nodes_at: int = 0x10000, base: int = 0) -> None:
        self.mem = bytearray(size)
        self.base = base
        self.next = nodes_at
        self.root = self.alloc()

    def alloc(self) -> int:
        at = self.next
        self.next += PAGE
        return at

    def entry(self, node: int, idx: int) -> int:
        (v,) = struct.unpack_from("<Q", self.mem, node - self.base + 8 * idx)
        return int(v)

    def set_entry(self, node: int, idx: int, value: int) -> None:
        struct.pack_into("<Q", self.mem, node - self.base + 8 * idx, value)

    def add(self, pa: int, order: int) -> None:
        _, tbits, bbits, depth = radix_geometry(12)
        key = encode_key(pa, order)
        node = self.root
        for level in range(depth - 1, 0, -1):
            idx = (key >> ((level - 1) * tbits + bbits)) % (1 << tbits)
            if not self.entry(node, idx):
                self.set_entry(node, idx, self.alloc())
            node = self.entry(node, idx)
        bit = key % (1 << bbits)
        self.mem[node - self.base + bit // 8] |= 1 << (bit % 8)


def elf_core(loads: list[tuple[int, bytes]]) -> bytes:
    """A minimal ELFCLASS64 little-endian core: one PT_LOAD per (physical address, bytes), its
    p_paddr the address, p_vaddr unrelated (as /proc/kcore's direct map)."""
    n = len(loads) + 1  # and a PT_NOTE, which is skipped
    head = bytearray(64)
    head[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<HHIQQQIHHHHHH", head, 16, 4, 62, 1, 0, 64, 0, 0, 64, 56, n, 0, 0, 0)
    table = bytearray(struct.pack("<IIQQQQQQ", 4, 0, 0, 0, 0, 0, 0, 0))
    body = b""
    at = 64 + 56 * n
    for pa, data in loads:
        table += struct.pack("<IIQQQQQQ", 1, 4, at + len(body), 0xFFFF_8880_0000_0000 + pa, pa,
                             len(data), len(data), PAGE)
        body += data
    return bytes(head + table + body)
