#!/usr/bin/env python3
"""Build issue 13's x86-64 test kernel from the shared ``linux-source`` tree, once per version.

    python scripts/build_test_kernel.py      # prints the folder holding bzImage and .config

``tinyconfig`` plus what the tests need, everything built in (the QEMU harness insmods
nothing for it): the kexec_file loader with IMA's own hand-over (``IMA_KEXEC``, a non-default
``IMA_KEXEC_EXTRA_MEMORY_KB``) and Kexec HandOver with its debugfs; a serial console, an
uncompressed initramfs, devtmpfs, securityfs, /proc/kcore and kallsyms (the tests read the
loaded image back); virtio PCI with 9p (the host's root) and virtio-rng; and what the host's
Python needs when run in the guest through chroot. IMA runs without a TPM (TPM-bypass mode).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kbuild import Recipe, build, built_dir

# range 0..40 in security/integrity/ima/Kconfig; 0 (the default) means half a page
EXTRA_MEMORY_KB = 12

_ON = (
    # the kernel itself: 64-bit, relocatable (kexec_file's bzImage loader wants
    # XLF_CAN_BE_LOADED_ABOVE_4G), printk and a serial console, ACPI for poweroff and PCI
    "64BIT", "RELOCATABLE", "PRINTK", "BUG", "TTY", "SERIAL_8250", "SERIAL_8250_CONSOLE",
    "ACPI", "PCI", "KALLSYMS", "KALLSYMS_ALL",
    # the initramfs init: an uncompressed cpio, busybox
    "BLK_DEV_INITRD", "DEVTMPFS", "PROC_FS", "PROC_KCORE", "SYSFS", "TMPFS", "SHMEM",
    "BINFMT_ELF", "BINFMT_SCRIPT", "MULTIUSER",
    # the host's Python under chroot
    "FUTEX", "EPOLL", "EVENTFD", "SIGNALFD", "TIMERFD", "POSIX_TIMERS", "FILE_LOCKING",
    "INOTIFY_USER", "FHANDLE", "AIO", "NET", "UNIX", "PROC_SYSCTL", "ADVISE_SYSCALLS",
    "MEMBARRIER", "RSEQ",
    # virtio PCI: 9p for the host's root, rng for early entropy
    "VIRTIO_MENU", "VIRTIO", "VIRTIO_PCI", "NET_9P", "NET_9P_VIRTIO", "9P_FS",
    "HW_RANDOM", "HW_RANDOM_VIRTIO",
    # the subjects: kexec_file, IMA's hand-over, KHO
    "KEXEC_FILE", "SECURITY", "SECURITYFS", "IMA", "IMA_KEXEC", "TCG_TPM",
    "KEXEC_HANDOVER", "KEXEC_HANDOVER_DEBUGFS", "DEBUG_FS",
)

RECIPE = Recipe(
    name="testkernel-x86_64",
    arch="x86",
    cross_compile="",
    base="tinyconfig",
    options={**{o: "y" for o in _ON}, "IMA_KEXEC_EXTRA_MEMORY_KB": str(EXTRA_MEMORY_KB)},
    targets=("bzImage",),
    outputs=("arch/x86/boot/bzImage",),
)


def built() -> Path | None:
    """The cached build, if there is one (no fetch, no build)."""
    return built_dir(RECIPE)


def main() -> int:
    print(build(RECIPE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
