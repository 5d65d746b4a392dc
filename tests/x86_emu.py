"""Run the real x86-64 purgatory of a kexec image under unicorn, as the CPU would at reboot.

The machine is what ``relocate_kernel`` leaves behind: 64-bit long mode with an identity map
(2 MiB pages over every GiB a segment touches), every segment copied to its physical address
and zero-filled to memsz. Execution starts at ``e_entry``; it ends either at the kernel's 64-bit
entry (load address + 0x200) or on the purgatory's failure loop, a jump to itself (``EB FE``)
inside ``purgatory()``: reaching that instruction proves it never leaves.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from emu_common import run_to_kernel
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn.x86_const import (
    UC_X86_REG_CR0,
    UC_X86_REG_CR3,
    UC_X86_REG_CR4,
    UC_X86_REG_RBX,
    UC_X86_REG_RIP,
    UC_X86_REG_RSI,
    UC_X86_REG_RSP,
)

from kimagekit.image import content, open_image
from kimagekit.segments import Role

PAGE = 0x1000
TABLES = 0x10000  # below 1 MiB: free under the x86 default RAM and MIN_*_ADDR rules
EFER = 0xC0000080
SPIN = b"\xeb\xfe"
# Wall-clock backstop only: a run ends on the kernel entry or on the proven spin.


@dataclass(frozen=True)
class Run:
    outcome: str  # "kernel-entry", "spin", "timeout" or "fault: ..."
    rip: int
    rsi: int
    rbx: int
    rsp: int
    seconds: float
    hashed_bytes: int


def _page_tables(top: int) -> tuple[bytes, int]:
    """PML4 + PDPT + one page directory per GiB up to ``top``, identity, 2 MiB pages."""
    gibs = max(1, -(-top // (1 << 30)))
    pml4 = struct.pack("<Q", (TABLES + PAGE) | 3).ljust(PAGE, b"\0")
    pdpt = b"".join(struct.pack("<Q", (TABLES + (2 + i) * PAGE) | 3)
                    for i in range(gibs)).ljust(PAGE, b"\0")
    pds = b"".join(struct.pack("<Q", ((g * 512 + j) << 21) | 0x83)
                   for g in range(gibs) for j in range(512))
    return pml4 + pdpt + pds, (2 + gibs) * PAGE


def run_image(path: Path) -> Run:
    with open_image(path) as (info, view):
        kernel = info.segment(Role.KERNEL)
        purg = info.segment(Role.PURGATORY)
        spin_fn = info.symbol("purgatory")
        assert kernel is not None and purg is not None and spin_fn is not None
        mu = Uc(UC_ARCH_X86, UC_MODE_64)
        top = 0
        for s in info.segments:
            assert s.mem >= TABLES + 0x10000, "segment overlaps the test's page tables"
            mu.mem_map(s.mem, s.memsz)
            mu.mem_write(s.mem, bytes(content(view, s)))
            top = max(top, s.end if hasattr(s, "end") else s.mem + s.memsz)
        hashed = sum(ln for _, ln in info.regions)
        entry, kentry = info.entry, kernel.mem + 0x200
    tables, size = _page_tables(top)
    mu.mem_map(TABLES, size)
    mu.mem_write(TABLES, tables)
    mu.reg_write(UC_X86_REG_CR3, TABLES)
    mu.reg_write(UC_X86_REG_CR4, 1 << 5)  # PAE
    mu.msr_write(EFER, (1 << 8) | (1 << 10))  # LME, LMA
    mu.reg_write(UC_X86_REG_CR0, (1 << 31) | (1 << 4) | 1)  # PG, ET, PE
    outcome, rip, secs = run_to_kernel(mu, spin_fn.value, spin_fn.size, entry, kentry,
                                       UC_X86_REG_RIP, lambda b: b[:2] == SPIN)
    return Run(outcome, rip, mu.reg_read(UC_X86_REG_RSI), mu.reg_read(UC_X86_REG_RBX),
               mu.reg_read(UC_X86_REG_RSP), secs, hashed)
