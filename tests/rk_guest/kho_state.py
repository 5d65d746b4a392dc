"""Run in a realkernel guest: the running kernel's KHO state for an offline build.

    kho_state.py                     # the state
    kho_state.py exec KERNEL INITRD  # kexec_file_load KERNEL and INITRD with the running
                                     # kernel's command line, and reboot into it

Prints ``kho-fdt 0xPHYS`` (``kho_out.fdt``, the tree's page: read through /proc/kcore from the
``kho_out`` symbol, whose first member is the tree's address) and the debugfs scratch areas as
``scratch 0xADDR 0xSIZE`` lines, in the kernel's order.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kexec_file import SYS_KEXEC_FILE_LOAD, Kcore, symbol

LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC = 0xFEE1DEAD, 672274793, \
    0x45584543

DEBUGFS = "/sys/kernel/debug/kho/out"


def kexec(kernel: str, initrd: str) -> int:
    """Load KERNEL and INITRD with the running kernel's command line, and boot it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    with open("/proc/cmdline", "rb") as f:
        cmdline = f.read().strip() + b"\0"
    fd, rd = os.open(kernel, os.O_RDONLY), os.open(initrd, os.O_RDONLY)
    rc = libc.syscall(SYS_KEXEC_FILE_LOAD, fd, rd, ctypes.c_ulong(len(cmdline)),
                      ctypes.c_char_p(cmdline), ctypes.c_ulong(0))
    print(f"exec-load rc={rc} errno={ctypes.get_errno()}", flush=True)
    if rc:
        return 1
    os.sync()
    libc.syscall(169, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC, None)
    print(f"exec failed errno={ctypes.get_errno()}", flush=True)
    return 1


def main() -> int:
    if sys.argv[1:2] == ["exec"]:
        return kexec(sys.argv[2], sys.argv[3])
    kc = Kcore()
    (fdt_virt,) = struct.unpack("<Q", kc.virt(symbol("kho_out"), 8))
    for _, va, pa, size in kc.loads:
        if va <= fdt_virt < va + size and pa != 0xFFFFFFFFFFFFFFFF:
            print(f"kho-fdt {pa + fdt_virt - va:#x}")
            break
    with open(f"{DEBUGFS}/scratch_phys") as a, open(f"{DEBUGFS}/scratch_len") as b:
        for addr, size in zip(a.read().split(), b.read().split(), strict=True):
            print(f"scratch {int(addr, 16):#x} {int(size, 16):#x}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
