"""``kimagekit load``/``unload``: a kimagekit image handed to the running kernel through
``kexec_load(2)``, its segments and entry exactly as the image holds them.

Everything that can be judged offline is judged before the syscall (the architecture, the
segment count, the digest, the hand-over as the next kernel reads it); the kernel's own refusals
come back as errno values and are explained. The system calls go through a :class:`System`, so
the tests drive every path with a fake one and no root.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kimagekit.errors import Refused
from kimagekit.formats.kexec import KEXEC_SEGMENT_MAX
from kimagekit.handover import ImageVerdict, handover_problems
from kimagekit.image import ImageInfo, read_image, verify_bytes
from kimagekit.input_files import open_input

__all__ = ["CAP_SYS_BOOT", "KEXEC_ARCH_DEFAULT", "LINUX_REBOOT_CMD_KEXEC", "SYSCALL_KEXEC_LOAD",
           "UNAME_MACHINE",
           "LinuxSystem", "LoadPlan", "LoadReport", "SyscallSegment", "System", "UnloadReport",
           "check_target", "explain", "load", "plan", "plan_info", "reboot", "unload"]

FMT = "load"
KEXEC_ARCH_DEFAULT = 0
LINUX_REBOOT_CMD_KEXEC = 0x45584543
CAP_SYS_BOOT = 22

# kexec_load's number per architecture (uname -m), from each arch's syscall table: x86-64's
# syscall_64.tbl, powerpc's syscall.tbl, and the generic unistd.h that arm64 and riscv use.
SYSCALL_KEXEC_LOAD: dict[str, int] = {
    "x86_64": 246,
    "ppc64le": 268,
    "ppc64": 268,
    "aarch64": 104,
    "riscv64": 104,
}

# an image's arch name -> uname -m where they differ
UNAME_MACHINE = {"arm64": "aarch64"}

NOTHING = "nothing loaded"


@dataclass(frozen=True)
class SyscallSegment:
    """One ``struct kexec_segment`` as the image gives it; ``buf`` is this offset in the image
    file, mapped privately at run time."""

    index: int
    role: str
    buf_offset: int
    bufsz: int
    mem: int
    memsz: int


@dataclass(frozen=True)
class LoadPlan:
    """The exact ``kexec_load`` call for an image, and what ``--force`` let through."""

    file: str
    machine: str
    syscall: str
    number: int
    entry: int
    nr_segments: int
    flags: int
    segments: tuple[SyscallSegment, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class LoadReport:
    plan: LoadPlan
    loaded: bool  # False for a dry run


class System(Protocol):
    """What ``load`` needs from the running system. Syscalls return 0 or an errno value."""

    def machine(self) -> str: ...

    def can_boot(self) -> bool: ...

    def read(self, path: str) -> str | None: ...

    def kexec_load(self, number: int, entry: int,
                   segments: Sequence[tuple[int, int, int, int]], flags: int) -> int: ...

    def sync(self) -> None: ...

    def reboot_kexec(self) -> int: ...


class _KexecSegment(ctypes.Structure):
    # struct kexec_segment on a 64-bit kernel: buf, bufsz, mem, memsz
    _fields_ = [("buf", ctypes.c_uint64), ("bufsz", ctypes.c_uint64),
                ("mem", ctypes.c_uint64), ("memsz", ctypes.c_uint64)]


class LinuxSystem:
    """The real thing: ``uname``, ``/proc`` and ``/sys``, and ctypes system calls."""

    def machine(self) -> str:
        return os.uname().machine

    def can_boot(self) -> bool:
        """CAP_SYS_BOOT in the effective set (root has it unless a container took it away)."""
        status = self.read("/proc/self/status") or ""
        for line in status.splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_BOOT & 1)
        return os.geteuid() == 0

    def read(self, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except OSError:
            return None

    def kexec_load(self, number: int, entry: int,
                   segments: Sequence[tuple[int, int, int, int]], flags: int) -> int:
        table = (_KexecSegment * len(segments))(*(_KexecSegment(*s) for s in segments))
        return _syscall(number, ctypes.c_ulong(entry), ctypes.c_ulong(len(segments)),
                        table if segments else None, ctypes.c_ulong(flags))

    def sync(self) -> None:
        os.sync()

    def reboot_kexec(self) -> int:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.reboot(ctypes.c_int(LINUX_REBOOT_CMD_KEXEC)) == 0:
            return 0
        return ctypes.get_errno()


def _syscall(number: int, *args: object) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(number), *args) == 0:
        return 0
    return ctypes.get_errno()


# --- judging the image ---------------------------------------------------------------------------

def _refused(message: str) -> Refused:
    return Refused(f"{message}; {NOTHING}", fmt=FMT)


def _number_for(machine: str, op: str = "load") -> int:
    number = SYSCALL_KEXEC_LOAD.get(machine)
    if number is None:
        raise Refused(f"kimagekit does not know kexec_load's system call number on {machine} "
                      f"(it knows {', '.join(SYSCALL_KEXEC_LOAD)}); nothing {op}ed", fmt=op)
    return number


def check_target(info: ImageInfo, machine: str) -> int:
    """kexec_load's number on ``machine``, after the checks that need no hashing: the image's
    architecture is the running one, and its segments fit the call. Refused otherwise."""
    if UNAME_MACHINE.get(info.arch, info.arch) != machine:
        raise _refused(f"the image is for {info.arch} but this system is {machine} (kexec_load "
                       "boots a kernel of the running architecture only)")
    number = _number_for(machine)
    if len(info.segments) > KEXEC_SEGMENT_MAX:
        raise _refused(f"the image has {len(info.segments)} segments, more than kexec_load "
                       f"takes (KEXEC_SEGMENT_MAX {KEXEC_SEGMENT_MAX})")
    return number


def plan_info(info: ImageInfo, verdict: ImageVerdict, file: str, *, machine: str,
              force: bool) -> LoadPlan:
    """The ``kexec_load`` arguments for an image already read and verified (``verdict``), after
    every check that can be made before the syscall; Refused (exit 1) naming the first that
    fails. ``force`` lets a failed verification through (as warnings), nothing else."""
    number = check_target(info, machine)
    problems = list(verdict.problems)
    if not verdict.digest.ok:  # the digest's line comes first
        problems[0] = f"the image does not verify: {problems[0]}"
    if problems and not force:
        raise Refused(f"{problems[0]}; {NOTHING} (--force loads it anyway)", fmt=FMT)
    segs = tuple(SyscallSegment(s.index, s.role.value, s.offset, s.bufsz, s.mem, s.memsz)
                 for s in info.segments)
    return LoadPlan(file, machine, "kexec_load", number, info.entry, len(segs),
                    KEXEC_ARCH_DEFAULT, segs, tuple(problems))


@contextmanager
def _snapshot(path: str | os.PathLike[str]) -> Iterator[tuple[mmap.mmap, memoryview]]:
    """The image (a file, or ``-``: stdin) copied into anonymous memory: what is judged is
    what is loaded, even if the file changes meanwhile (a private file mapping would still
    show later writes to pages not yet copied)."""
    with open_input(path) as (_, src):
        size = len(src)
        mm = mmap.mmap(-1, max(size, 1))
        mm[:size] = src
    view = memoryview(mm)[:size]
    try:
        yield mm, view
    finally:
        view.release()
        mm.close()


def _judge(view: memoryview, file: str, machine: str, force: bool) -> LoadPlan:
    info = read_image(view)
    check_target(info, machine)  # before hashing anything
    digest = verify_bytes(view)
    ima, problems = handover_problems(info, view)
    verdict = ImageVerdict(digest.ok and not problems, digest, ima,
                           (() if digest.ok else (digest.reason,)) + problems)
    return plan_info(info, verdict, file, machine=machine, force=force)


def plan(path: str | os.PathLike[str], *, force: bool = False,
         system: System | None = None) -> LoadPlan:
    """:func:`plan_info` of the image at ``path`` (what ``--dry-run`` shows)."""
    system = system or LinuxSystem()
    with _snapshot(path) as (_, view):
        return _judge(view, os.fspath(path), system.machine(), force)


def load(path: str | os.PathLike[str], *, force: bool = False, dry_run: bool = False,
         system: System | None = None) -> LoadReport:
    """Judge the image, then (unless ``dry_run``) ``kexec_load`` it from the very bytes judged.
    :func:`reboot` boots it."""
    system = system or LinuxSystem()
    with _snapshot(path) as (data, view):
        p = _judge(view, os.fspath(path), system.machine(), force)
        if dry_run:
            return LoadReport(p, False)
        if not system.can_boot():
            raise _refused("kexec_load needs CAP_SYS_BOOT (run it as root)")
        anchor = ctypes.c_char.from_buffer(data)
        try:
            base = ctypes.addressof(anchor)
            segs = [(base + s.buf_offset, s.bufsz, s.mem, s.memsz) for s in p.segments]
            err = system.kexec_load(p.number, p.entry, segs, p.flags)
        finally:
            del anchor  # the buffer export ends before the snapshot is unmapped
    if err:
        raise Refused(f"kexec_load failed: {explain(err, system, 'load')}", fmt=FMT)
    return LoadReport(p, True)


def reboot(system: System | None = None) -> None:
    """Sync the file systems and reboot into the loaded image (``kexec -e`` without the
    orderly shutdown ``systemctl kexec`` does). Returns only by raising."""
    system = system or LinuxSystem()
    system.sync()
    err = system.reboot_kexec()
    why = explain(err, system, "exec") if err else "it returned without rebooting"
    raise Refused(f"reboot(LINUX_REBOOT_CMD_KEXEC) failed: {why}", fmt=FMT)


@dataclass(frozen=True)
class UnloadReport:
    machine: str
    syscall: str
    number: int
    entry: int
    nr_segments: int
    flags: int
    was_loaded: bool | None  # /sys/kernel/kexec_loaded before the call (None: unreadable)
    unloaded: bool  # False for a dry run


def unload(*, dry_run: bool = False, system: System | None = None) -> UnloadReport:
    """``kexec_load`` with no segments: the kernel frees the loaded image, if any."""
    system = system or LinuxSystem()
    machine = system.machine()
    number = _number_for(machine, "unload")
    flag = (system.read("/sys/kernel/kexec_loaded") or "").strip()
    was = {"0": False, "1": True}.get(flag)
    report = UnloadReport(machine, "kexec_load", number, 0, 0, KEXEC_ARCH_DEFAULT, was,
                          not dry_run)
    if dry_run:
        return report
    if not system.can_boot():
        raise Refused("kexec_load needs CAP_SYS_BOOT (run it as root); nothing unloaded",
                      fmt="unload")
    err = system.kexec_load(number, 0, [], KEXEC_ARCH_DEFAULT)
    if err:
        raise Refused(f"kexec_load failed: {explain(err, system, 'unload')}", fmt="unload")
    return report


# --- the kernel's answers ------------------------------------------------------------------------

def _sysctl(system: System, name: str) -> int | None:
    text = (system.read(f"/proc/sys/kernel/{name}") or "").strip()
    return int(text) if text.lstrip("-").isdigit() else None


def _lockdown(system: System) -> str | None:
    """The active lockdown mode, when not ``none`` (``[integrity]`` forbids kexec_load)."""
    text = system.read("/sys/kernel/security/lockdown") or ""
    for word in text.split():
        if word.startswith("[") and word != "[none]":
            return word.strip("[]")
    return None


def _eperm(system: System, op: str) -> str:
    reasons = []
    if not system.can_boot():
        reasons.append("this process lacks CAP_SYS_BOOT (not root)")
    if op != "exec":
        if _sysctl(system, "kexec_load_disabled") == 1:
            reasons.append("/proc/sys/kernel/kexec_load_disabled is 1 (set once, it stays "
                           "until reboot)")
        if _sysctl(system, "kexec_load_limit_reboot") == 0:
            reasons.append("/proc/sys/kernel/kexec_load_limit_reboot is 0 (no loads left "
                           "until reboot)")
        mode = _lockdown(system)
        if mode is not None:
            reasons.append(f"the kernel is locked down ({mode}): it takes only signed kernels "
                           "through kexec_file_load")
    if not reasons:
        reasons.append("not CAP_SYS_BOOT, kexec_load_disabled, kexec_load_limit_reboot nor "
                       "lockdown explains it (a security module or seccomp filter?)")
    return "EPERM: not permitted: " + "; ".join(reasons)


_EXPLAINED: dict[str, dict[int, str]] = {
    "load": {
        errno.EBUSY: "EBUSY: the kexec lock is held: another kexec load, unload or reboot is "
                     "in progress (an image loaded before is simply replaced)",
        errno.EINVAL: "EINVAL: the kernel refused the segment list: segments overlap, a bufsz "
                      "exceeds its memsz, a segment is larger than half of RAM, or the flags "
                      "or architecture are not its own",
        errno.EADDRNOTAVAIL: "EADDRNOTAVAIL: a segment's mem or end is not page aligned or lies "
                             "past the memory the kernel can load into "
                             "(KEXEC_DESTINATION_MEMORY_LIMIT): not this machine's RAM",
        errno.ENOMEM: "ENOMEM: the kernel could not allocate pages to hold the segments "
                      "until the reboot (too large for its free memory)",
        errno.ENOSYS: "ENOSYS: no kexec_load here (a kernel built without CONFIG_KEXEC, or a "
                      "sandbox or seccomp filter that hides it)",
        errno.EFAULT: "EFAULT: the kernel could not read a segment's buffer",
    },
    "unload": {
        errno.EBUSY: "EBUSY: the kexec lock is held: another kexec load, unload or reboot is "
                     "in progress",
        errno.ENOSYS: "ENOSYS: no kexec_load here (a kernel built without CONFIG_KEXEC, or a "
                      "sandbox or seccomp filter that hides it)",
    },
    "exec": {
        errno.EINVAL: "EINVAL: no kexec image is loaded",
        errno.EBUSY: "EBUSY: the kexec lock is held: a kexec load or unload is in progress",
    },
}


def explain(err: int, system: System, op: str) -> str:
    """One line on what the kernel's ``err`` means for ``op`` (load, unload, exec)."""
    if err == errno.EPERM:
        return _eperm(system, op)
    text = _EXPLAINED[op].get(err)
    if text is not None:
        return text
    return f"{errno.errorcode.get(err, f'errno {err}')}: {os.strerror(err)}"
