"""Run in a realkernel guest of the test kernel (IMA_KEXEC): the loading kernel's own IMA
hand-over, from load to reboot.

    ima_save.py KERNEL INITRD CMDLINE-FILE FIRST-DIR SECOND-DIR

Waits until the measurement list is stable (this interpreter's own files measured), reads every
file of FIRST-DIR (root reads are measured under ima_policy=tcb), then kexec_file_load(2)s KERNEL
with INITRD and the command line (KEXEC_FILE_DEBUG: the kernel prints its segment table), reads
every file of SECOND-DIR, and reboots into the loaded kernel (LINUX_REBOOT_CMD_KEXEC). Prints,
one per line:
  ``ram START-END``      System RAM (/proc/iomem, inclusive)
  ``before HEX``         binary_runtime_measurements right before the load
  ``load rc=N errno=NAME``
  ``log ...``            the kernel's log lines of the load (/dev/kmsg)
  ``after HEX``          the list right after the load
  ``reboot HEX``         the list right before the reboot call (nothing is opened after it)
Nothing this script does between the reads opens a file outside /proc, /sys and /dev (not
measured), so the lists change only by the files read and what the kernel adds itself.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import time

from kexec_file import kmsg_drain

SYS_KEXEC_FILE_LOAD = 320  # x86_64
KEXEC_FILE_DEBUG = 0x8
LINUX_REBOOT_CMD_KEXEC = 0x45584543
LIST = "/sys/kernel/security/ima/binary_runtime_measurements"


def read_list() -> bytes:
    with open(LIST, "rb") as f:
        return f.read()


def read_all(folder: str) -> None:
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            f.read()


def main() -> int:
    kernel, initrd, cmdline_file, first, second = sys.argv[1:6]
    with open(cmdline_file, "rb") as f:
        cmdline = f.read() + b"\0"
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    with open("/proc/iomem") as f:
        for line in f:
            if line.strip().endswith(": System RAM"):
                print("ram", line.split(":")[0].strip())
    prev = read_list()
    while True:  # warm: this interpreter's lazily opened files are measured by now
        time.sleep(0.5)
        cur = read_list()
        if cur == prev:
            break
        prev = cur
    read_all(first)
    kfd, ifd = os.open(kernel, os.O_RDONLY), os.open(initrd, os.O_RDONLY)
    kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(kmsg, 0, os.SEEK_END)
    before = read_list()
    rc = libc.syscall(SYS_KEXEC_FILE_LOAD, kfd, ifd, ctypes.c_ulong(len(cmdline)),
                      ctypes.c_char_p(cmdline), ctypes.c_ulong(KEXEC_FILE_DEBUG))
    err = ctypes.get_errno() if rc else 0
    after = read_list()
    log = kmsg_drain(kmsg)
    print("before", before.hex())
    print(f"load rc={rc} errno={errno.errorcode.get(err, err) if err else 0}")
    for line in log:
        print("log", line)
    print("after", after.hex())
    if rc:
        return 1
    read_all(second)
    last = read_list()
    print("reboot", last.hex(), flush=True)
    libc.sync()
    libc.reboot(LINUX_REBOOT_CMD_KEXEC)
    print("kexec failed", ctypes.get_errno(), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
