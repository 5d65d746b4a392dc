"""Run the real riscv64 purgatory of a kexec image under unicorn, as the hart would at reboot.

The machine is what ``riscv_kexec_norelocate`` leaves behind: the MMU off (unicorn's RISCV64
starts in machine mode without translation), every segment at its physical address zero-filled
to memsz, a0 = the hart id, a1 = the device tree: the first segment whose content passes
``fdt_check_header`` (``machine_kexec_prepare``), pc = the image's entry. The run ends at the
kernel entry the purgatory loads from ``riscv_kernel_entry``, or on the failure loop of
``purgatory()``: a jump to itself (``c.j 0`` or ``j 0``), which proves it never leaves.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from emu_common import run_to_kernel
from unicorn import UC_ARCH_RISCV, UC_MODE_RISCV64, Uc
from unicorn.riscv_const import UC_RISCV_REG_A0, UC_RISCV_REG_A1, UC_RISCV_REG_PC

from kimagekit.formats.fdt import FDT_MAGIC
from kimagekit.image import ImageInfo, content, open_image
from kimagekit.segments import Role

SPINS = (b"\x01\xa0", b"\x6f\x00\x00\x00")  # c.j 0, j 0
HART_ID = 3  # any hart: the purgatory must pass it on untouched


@dataclass(frozen=True)
class Run:
    outcome: str  # "kernel-entry", "spin", "timeout" or "fault: ..."
    pc: int
    a0: int
    a1: int
    fdt: int  # the a1 the kernel starts the purgatory with
    kernel_entry: int  # riscv_kernel_entry as the image holds it
    seconds: float
    hashed_bytes: int


def fdt_segment(info: ImageInfo, view: memoryview) -> int:
    """``machine_kexec_prepare``: the first segment, in index order, whose memsz exceeds a
    header and whose first bytes carry the FDT magic (libfdt's header check, version fields
    aside)."""
    for s in info.segments:
        head = bytes(content(view, s)[:40])
        if s.memsz > 40 and len(head) == 40 and struct.unpack(">I", head[:4])[0] == FDT_MAGIC:
            return s.mem
    raise AssertionError("no device-tree segment: the kernel refuses to kexec")


def run_image(path: Path, hart: int = HART_ID) -> Run:
    with open_image(path) as (info, view):
        purg = info.segment(Role.PURGATORY)
        spin_fn = info.symbol("purgatory")
        entry_sym = info.symbol("riscv_kernel_entry")
        assert purg is not None and spin_fn is not None and entry_sym is not None
        mu = Uc(UC_ARCH_RISCV, UC_MODE_RISCV64)
        for s in info.segments:
            mu.mem_map(s.mem, s.memsz)
            mu.mem_write(s.mem, bytes(content(view, s)))
        fdt = fdt_segment(info, view)
        at = purg.offset + entry_sym.value - purg.mem
        kentry = struct.unpack("<Q", bytes(view[at:at + 8]))[0]
        hashed = sum(ln for _, ln in info.regions)
        entry = info.entry
    mu.reg_write(UC_RISCV_REG_A0, hart)
    mu.reg_write(UC_RISCV_REG_A1, fdt)
    outcome, pc, secs = run_to_kernel(mu, spin_fn.value, spin_fn.size, entry, kentry,
                                      UC_RISCV_REG_PC, lambda b: b in SPINS)
    return Run(outcome, pc, mu.reg_read(UC_RISCV_REG_A0), mu.reg_read(UC_RISCV_REG_A1), fdt,
               kentry, secs, hashed)
