"""Run in a realkernel guest: the running kernel's KHO state for an offline build.

    kho_state.py

Prints ``kho-fdt 0xPHYS`` (``kho_out.fdt``, the tree's page: read through /proc/kcore from the
``kho_out`` symbol, whose first member is the tree's address) and the debugfs scratch areas as
``scratch 0xADDR 0xSIZE`` lines, in the kernel's order.
"""

from __future__ import annotations

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kexec_file import Kcore, symbol  # noqa: E402

DEBUGFS = "/sys/kernel/debug/kho/out"


def main() -> int:
    kc = Kcore()
    (fdt_virt,) = struct.unpack("<Q", kc.virt(symbol("kho_out"), 8))
    for off, va, pa, size in kc.loads:
        if va <= fdt_virt < va + size and pa != 0xFFFFFFFFFFFFFFFF:
            print(f"kho-fdt {pa + fdt_virt - va:#x}")
            break
    with open(f"{DEBUGFS}/scratch_phys") as a, open(f"{DEBUGFS}/scratch_len") as b:
        for addr, size in zip(a.read().split(), b.read().split(), strict=True):
            print(f"scratch {int(addr, 16):#x} {int(size, 16):#x}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
