"""Run in a realkernel guest (the host's interpreter, chrooted into the host's root): the running
kernel's own kexec_file_load(2) of KERNEL [INITRD] with CMDLINE, then what it loaded, then its
unload.

    kexec_file.py SPEC HASH-LIMIT

SPEC holds one load a line (name, kernel, initrd or empty, a file holding the command line,
the syscall's flags; tab separated). Prints, one per line, for each:
  ``case NAME``
  ``load rc=N errno=NAME``
  ``log ...``            the kernel's own log lines of the load (its segment table, KEXEC_FILE_DEBUG
                         or dyndbg), as /dev/kmsg gives them
  ``start 0xADDR``       the loaded image's entry (``kexec_image->start``, read through /proc/kcore)
  ``segment MEM BUFSZ SHA256``  each segment of the table as loaded: its bufsz bytes gathered
                         from the image's page list (``-`` above HASH-LIMIT: TCG hashes slowly)
  ``page MEM HEX``       the boot parameters' pages, whole
  ``unload rc=N``
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import struct
import sys

SYS_KEXEC_FILE_LOAD = 320  # x86_64
KEXEC_FILE_UNLOAD = 0x1
KEXEC_FILE_NO_INITRAMFS = 0x4
PAGE = 4096
IND_DESTINATION, IND_INDIRECTION, IND_DONE, IND_SOURCE = 0x1, 0x2, 0x4, 0x8
SEGMENT = re.compile(r"segment\s*\[?(\d+)\]?:? buf=0x[0-9a-f]+ bufsz=(0x[0-9a-f]+) "
                     r"mem=(0x[0-9a-f]+) memsz=(0x[0-9a-f]+)")


def kmsg_drain(fd: int) -> list[str]:
    """The records /dev/kmsg gives FD from its position on, as text (without the prefix)."""
    out: list[str] = []
    while True:
        try:
            rec = os.read(fd, 8192)
        except BlockingIOError:
            break
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # overwritten records: go on
                continue
            raise
        text = rec.decode(errors="replace")
        out.append(text.split(";", 1)[1].split("\n", 1)[0] if ";" in text else text)
    return out


class Kcore:
    """Kernel memory through /proc/kcore: by virtual address, and RAM by physical address."""

    def __init__(self) -> None:
        self.f = open("/proc/kcore", "rb")  # noqa: SIM115 - lives as long as the object
        head = self.f.read(64)
        (phoff,) = struct.unpack_from("<Q", head, 32)
        (phnum,) = struct.unpack_from("<H", head, 56)
        self.f.seek(phoff)
        ph = self.f.read(56 * phnum)
        self.loads = []
        for i in range(phnum):
            kind, _, off, va, pa, size, _, _ = struct.unpack_from("<IIQQQQQQ", ph, 56 * i)
            if kind == 1:
                self.loads.append((off, va, pa, size))

    def virt(self, addr: int, size: int) -> bytes:
        for off, va, _, sz in self.loads:
            if va <= addr and addr + size <= va + sz:
                self.f.seek(off + addr - va)
                return self.f.read(size)
        raise ValueError(f"{addr:#x} not in /proc/kcore")

    def phys(self, addr: int, size: int) -> bytes:
        for off, _, pa, sz in self.loads:
            if pa != 0xFFFFFFFFFFFFFFFF and pa <= addr and addr + size <= pa + sz:
                self.f.seek(off + addr - pa)
                return self.f.read(size)
        raise ValueError(f"physical {addr:#x} not in /proc/kcore")


def symbol(name: str) -> int:
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == name:
                return int(parts[0], 16)
    raise LookupError(name)


def loaded_pages(kc: Kcore, head: int) -> dict[int, int]:
    """destination page -> physical source page, walking the image's entry list as the kernel's
    ``for_each_kimage_entry`` does (the head is an indirection page)."""
    pages: dict[int, int] = {}
    dest, slot, entry = 0, -1, head
    while entry and not entry & IND_DONE:
        if entry & IND_DESTINATION:
            dest = entry & ~(PAGE - 1)
        elif entry & IND_SOURCE:
            pages[dest] = entry & ~(PAGE - 1)
            dest += PAGE
        if entry & IND_INDIRECTION:
            slot = entry & ~(PAGE - 1)
        elif slot < 0:
            raise ValueError(f"kimage head {head:#x} is not an indirection entry")
        else:
            slot += 8
        (entry,) = struct.unpack("<Q", kc.phys(slot, 8))
    return pages


def load_one(libc: ctypes.CDLL, kernel: str, initrd: str, cmdline: bytes, flags: int,
             limit: int) -> None:
    kfd = os.open(kernel, os.O_RDONLY)
    ifd = -1
    if initrd:
        ifd = os.open(initrd, os.O_RDONLY)
    else:
        flags |= KEXEC_FILE_NO_INITRAMFS
    cbuf = cmdline + b"\0"
    kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(kmsg, 0, os.SEEK_END)  # only what this load logs
    rc = libc.syscall(SYS_KEXEC_FILE_LOAD, kfd, ifd, ctypes.c_ulong(len(cbuf)),
                      ctypes.c_char_p(cbuf), ctypes.c_ulong(flags))
    err = ctypes.get_errno()
    print(f"load rc={rc} errno={errno.errorcode.get(err, err) if rc else 0}", flush=True)
    log = kmsg_drain(kmsg)
    for fd in (kfd, ifd, kmsg):
        if fd >= 0:
            os.close(fd)
    for line in log:
        if "kexec" in line.lower():
            print(f"log {line}")
    if rc == 0:
        kc = Kcore()
        (image,) = struct.unpack("<Q", kc.virt(symbol("kexec_image"), 8))
        # struct kimage starts: head, entry, last_entry, start (the same since 2.6)
        head, _, _, start = struct.unpack("<QQQQ", kc.virt(image, 32))
        print(f"start {start:#x}")
        pages = loaded_pages(kc, head)
        for m in SEGMENT.finditer("\n".join(log)):
            # the buffer's bytes (the kernel zero-fills the rest of memsz itself)
            bufsz, mem = int(m.group(2), 16), int(m.group(3), 16)
            if bufsz > limit:
                print(f"segment {mem:#x} {bufsz:#x} -")
                continue
            h = hashlib.sha256()
            for p in range(mem, mem + bufsz, PAGE):
                page = kc.phys(pages[p], PAGE) if p in pages else b"\0" * PAGE
                h.update(page[:mem + bufsz - p])
            print(f"segment {mem:#x} {bufsz:#x} {h.hexdigest()}")
        bp = re.search(r"boot_param.* at (0x[0-9a-f]+)", "\n".join(log))
        if bp:
            at = int(bp.group(1), 16)
            for p in (at, at + PAGE):
                if p in pages:
                    print(f"page {p:#x} {kc.phys(pages[p], PAGE).hex()}")
        kc.f.close()
    rc2 = libc.syscall(SYS_KEXEC_FILE_LOAD, -1, -1, ctypes.c_ulong(0), None,
                       ctypes.c_ulong(KEXEC_FILE_UNLOAD))
    print(f"unload rc={rc2}", flush=True)


def main() -> int:
    """One load per line of SPEC: ``NAME<TAB>KERNEL<TAB>INITRD<TAB>CMDLINE-FILE<TAB>FLAGS``."""
    spec, limit = sys.argv[1], int(sys.argv[2])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    with open(spec) as f:
        for line in f.read().splitlines():
            name, kernel, initrd, cmdline_file, flags = line.split("\t")
            print(f"case {name}", flush=True)
            with open(cmdline_file, "rb") as c:
                cmdline = c.read()
            load_one(libc, kernel, initrd, cmdline, int(flags, 0), limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
