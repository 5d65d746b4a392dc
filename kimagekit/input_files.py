"""The one reader of every input file: regular files mapped, pipes and stdin read to a bound.

Devices are refused (``/dev/zero`` never ends, a terminal is no file). A FIFO is opened without
blocking and waited on for at most :data:`FIFO_WAIT` seconds; one whose writer never comes is
refused, so nothing hangs. What a pipe gave is kept for the rest of the process, because a
command may look at the head of an input before reading all of it and a pipe reads only once.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from kimagekit.errors import UsageError

__all__ = ["BOUNDS", "DEFAULT_BOUND", "FIFO_WAIT", "INT_MAX", "bound_for", "open_input", "too_big"]

INT_MAX = 2**31 - 1
# Bytes read from a pipe, FIFO or stdin at most, by option. Files are mapped, never read whole.
BOUNDS = {
    "--pcrs": 1 << 20,        # text for 24 PCRs in four banks is a few KiB
    "--purgatory": 16 << 20,  # the kernel's purgatories are tens of KiB
    "--data": 256 << 20,      # hand-over contents: far beyond any IMA list a kexec buffer holds
    "--handover": 256 << 20,
    "--policy": 256 << 20,    # a keylime runtime policy of a whole distribution is tens of MiB
    "--loader-config": 16 << 20,  # a kernel's .config is a few hundred KiB
}
DEFAULT_BOUND = INT_MAX  # kexec_file_load (6.1) reads a kernel or initrd of at most INT_MAX bytes
FIFO_WAIT = 3.0          # seconds; KIMAGEKIT_FIFO_WAIT overrides
_CHUNK = 1 << 20

_piped: dict[object, bytes] = {}


def bound_for(what: str) -> int:
    return BOUNDS.get(what, DEFAULT_BOUND)


def too_big(path: object, what: str, size: int) -> None:
    """Refuse a file of ``size`` bytes that is to be read whole past ``what``'s bound."""
    if size > bound_for(what):
        raise _refuse(path, what, f"{size} bytes, more than the bound for {what} "
                                  f"({bound_for(what)} bytes)")


def _refuse(path: object, what: str, why: str) -> UsageError:
    err = UsageError(why, field=what)
    err.file = str(path)
    return err


def _kind(mode: int) -> str | None:
    """Why a file of this type is refused, or None when it can be read."""
    if stat.S_ISDIR(mode):
        return "a directory, not a file"
    if stat.S_ISCHR(mode):
        return "a character device: refused (regular files, pipes and - for stdin are read)"
    if stat.S_ISBLK(mode):
        return "a block device: refused (regular files, pipes and - for stdin are read)"
    if stat.S_ISSOCK(mode):
        return "a socket: refused (regular files, pipes and - for stdin are read)"
    return None


def _fifo_wait() -> float:
    try:
        wait = float(os.environ.get("KIMAGEKIT_FIFO_WAIT", FIFO_WAIT))
    except ValueError:
        return FIFO_WAIT
    return wait if 0 <= wait <= 3600 else FIFO_WAIT  # also refuses nan


def _read_bounded(fd: int, path: object, what: str) -> bytes:
    bound = bound_for(what)
    got = bytearray()
    while True:
        chunk = os.read(fd, min(_CHUNK, bound + 1 - len(got)))
        if not chunk:
            return bytes(got)
        got += chunk
        if len(got) > bound:
            raise _refuse(path, what, f"more than {bound} bytes from a pipe (the bound for "
                                      f"{what} read from a pipe or stdin)")


def _wait_for_writer(fd: int, path: object, what: str) -> None:
    """A FIFO opened O_NONBLOCK: wait a bounded time for a writer, then read blocking."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    wait = _fifo_wait()
    if not poller.poll(int(wait * 1000)):
        raise _refuse(path, what, f"a FIFO with no writer (waited {wait:g} s): refused")
    os.set_blocking(fd, True)


def _cached(path: object, what: str, data: bytes) -> tuple[None, memoryview]:
    """A pipe read once already, held again to the bound of the option now asking."""
    if len(data) > bound_for(what):
        raise _refuse(path, what, f"more than {bound_for(what)} bytes from a pipe (the bound "
                                  f"for {what} read from a pipe or stdin)")
    return None, memoryview(data)


def _stdin(what: str) -> tuple[mmap.mmap | None, memoryview]:
    if "-" in _piped:
        return _cached("-", what, _piped["-"])
    try:
        st = os.fstat(0)
    except OSError as exc:
        raise _refuse("-", what, f"stdin cannot be read: {exc.strerror}") from exc
    why = "stdin is a terminal: refused" if os.isatty(0) else _kind(st.st_mode)
    if why is not None:
        raise _refuse("-", what, why)
    if stat.S_ISREG(st.st_mode) and st.st_size:
        # what stdin holds starts where its position is (`cmd - < f` after a seek, or a file
        # descriptor shared with a reader that went first), not at the file's first byte
        try:
            pos = os.lseek(0, 0, os.SEEK_CUR)
            mm = mmap.mmap(0, 0, access=mmap.ACCESS_READ)
        except OSError:
            pass  # a file that cannot be mapped (sysfs, procfs) is read as a pipe is
        else:
            return mm, memoryview(mm)[min(pos, len(mm)):]
    data = _piped["-"] = _read_bounded(0, "-", what)
    return None, memoryview(data)


def _open(path: object, what: str) -> tuple[mmap.mmap | None, memoryview]:
    name = os.fspath(path)  # type: ignore[call-overload]
    try:
        st = os.stat(name)
    except OSError as exc:
        raise _refuse(path, what, f"cannot open: {exc.strerror}") from exc
    why = _kind(st.st_mode)
    if why is not None:
        raise _refuse(path, what, why)
    if stat.S_ISFIFO(st.st_mode) and (st.st_dev, st.st_ino) in _piped:
        return _cached(path, what, _piped[(st.st_dev, st.st_ino)])
    try:
        # never blocks on a FIFO, and a file swapped for a device since the stat is seen below
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise _refuse(path, what, f"cannot open: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        why = _kind(st.st_mode)
        if why is not None:
            raise _refuse(path, what, why)
        if stat.S_ISFIFO(st.st_mode):
            _wait_for_writer(fd, path, what)
            data = _piped[(st.st_dev, st.st_ino)] = _read_bounded(fd, path, what)
            return None, memoryview(data)
        if st.st_size == 0:
            # sysfs, procfs and debugfs files say 0 and hold bytes (a KHO tree in
            # /sys/kernel/debug/kho/out/fdt): read as a pipe is (an empty file gives nothing)
            os.set_blocking(fd, True)
            return None, memoryview(_read_bounded(fd, path, what))
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        return mm, memoryview(mm)
    except OSError as exc:
        raise _refuse(path, what, f"cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)


@contextmanager
def open_input(path: object, what: str = "file") -> Iterator[tuple[mmap.mmap | None, memoryview]]:
    """Yield the map of ``path`` (None when it is not mapped: empty, or read from a pipe) and a
    memoryview of its bytes. ``what`` names the input (an option, or ``file``) in errors."""
    mm, view = _stdin(what) if os.fspath(path) == "-" else _open(path, what)  # type: ignore[call-overload]
    try:
        yield mm, view
    finally:
        view.release()
        if mm is not None:
            # a caller may keep a slice alive; then the map goes with the GC
            with contextlib.suppress(BufferError):
                mm.close()
