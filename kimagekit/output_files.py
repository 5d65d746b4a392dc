"""Writing outputs: atomically, never over an input, through symlinks, to stdout, locked in place.

A file is written into an unnamed ``O_TMPFILE`` in the target's folder, synced, re-read and
compared, then given a name and renamed over the target, so a kill leaves at most a
``.NAME.kimagekit-tmp.PID`` file for the instant between the two; the next write into that folder
removes those whose process is gone. Filesystems without ``O_TMPFILE`` get that name from the
start. New files get ``0666 & ~umask``; a replaced file keeps its mode (and, in place, its owner).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from kimagekit.errors import OutputError

__all__ = [
    "STDOUT_NAMES", "Edit", "Tail", "check_output", "data_extents", "edit_in_place", "is_stdout",
    "locked", "state", "sweep", "write_copy_with_edits", "write_output",
]

STDOUT_NAMES = ("-", "/dev/stdout")
_TMP = re.compile(r"\..*\.kimagekit-tmp\.(\d+)\Z")
_CHUNK = 1 << 20
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT)
Tail = tuple[str, int]  # a source file, and the offset its copied tail starts at


class _State:
    wrote_stdout = False  # the CLI then prints its report to stderr


state = _State()


def is_stdout(path: object) -> bool:
    return os.fspath(path) in STDOUT_NAMES  # type: ignore[call-overload]


def _out_error(path: object, why: str, what: str = "-o") -> OutputError:
    err = OutputError(why, field=what)
    err.file = str(path)
    return err


def check_output(path: object, inputs: Iterable[object | None] = (), *, in_place: bool = False,
                 stdout: bool = True) -> None:
    """Refuse an output that is not a regular file (stdout aside) or that is one of ``inputs``
    (same inode) unless ``in_place``. ``stdout=False``: the command must re-read its output."""
    if is_stdout(path):
        if not stdout:
            raise _out_error(path, "stdout is refused here: the output is re-read and verified "
                                   "after it is written, so it must be a file")
        return
    try:
        st = os.stat(os.fspath(path))  # type: ignore[call-overload]
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _out_error(path, f"cannot write: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise _out_error(path, "not a regular file: refused (-o writes files, or - for stdout)")
    if in_place:
        return
    for given in inputs:
        if given is None or is_stdout(given):
            continue
        try:
            other = os.stat(os.fspath(given))  # type: ignore[call-overload]
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            raise _out_error(path, f"the same file as the input {given}: refused (inputs are "
                                   "never overwritten; patch-handover has --in-place)")


def sweep(folder: str) -> None:
    """Remove temporary files left in ``folder`` by kimagekit processes that no longer run."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            m = _TMP.match(entry.name)
            if m is None or int(m.group(1)) == os.getpid():
                continue
            try:
                os.kill(int(m.group(1)), 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            except OSError:
                pass  # alive, but someone else's


def _write_all(fd: int, data: memoryview) -> None:
    done = 0
    while done < len(data):
        done += os.write(fd, data[done:done + _CHUNK])


def _same_as_written(fd: int, data: memoryview, *, whole: bool = True) -> bool:
    for pos in range(0, len(data), _CHUNK):
        if os.pread(fd, min(_CHUNK, len(data) - pos), pos) != data[pos:pos + _CHUNK]:
            return False
    return not whole or os.pread(fd, 1, len(data)) == b""


def _create(folder: str, name: str) -> tuple[int, str | None]:
    """An unnamed file in ``folder`` (name None), else one named for :func:`sweep`."""
    if os.path.isdir("/proc/self/fd"):
        try:
            return os.open(folder, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o666), None
        except OSError as exc:
            if exc.errno not in _NO_TMPFILE:
                raise
    tmp = os.path.join(folder, f".{name}.kimagekit-tmp.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    return os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o666), tmp


def _link(fd: int, name: str) -> None:
    """Give the unnamed file ``fd`` the name ``name`` (linkat through /proc, which needs no
    privilege, unlike AT_EMPTY_PATH)."""
    proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(fd), name, src_dir_fd=proc, follow_symlinks=True)
    finally:
        os.close(proc)


def _to_stdout(data: memoryview, tail: Tail | None = None) -> None:
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
        _write_all(1, data)
        if tail is not None:
            source, start = tail
            with open(source, "rb") as src:
                size = os.fstat(src.fileno()).st_size
                for at in range(start, size, _CHUNK):
                    _write_all(1, memoryview(os.pread(src.fileno(), min(_CHUNK, size - at),
                                                      at)))
    except BrokenPipeError:
        raise  # the reader left: the CLI ends quietly, as by SIGPIPE
    except OSError as exc:
        raise _out_error("-", f"cannot write stdout: {exc.strerror}") from exc
    state.wrote_stdout = True


def data_extents(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """The ``[a, b)`` ranges of ``fd`` between ``start`` and ``end`` that hold data (holes left
    out, as ``SEEK_DATA``/``SEEK_HOLE`` report them; all of it where they are not supported)."""
    out: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                break
            return [(start, end)] if start < end else []
        if data >= end:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        out.append((data, hole))
        pos = hole
    return out


def _copy_range(src: int, dst: int, at: int, to: int, n: int) -> None:
    while n > 0:
        try:
            done = os.copy_file_range(src, dst, n, at, to)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            done = os.pwrite(dst, os.pread(src, min(n, _CHUNK), at), to)
        if done <= 0:
            raise OSError(errno.EIO, "short copy")
        at, to, n = at + done, to + done, n - done


def _append_tail(fd: int, head: int, tail: Tail) -> bool:
    """Copy ``tail`` (a file and the offset its tail starts at) after ``head`` bytes of ``fd``
    without holding it: data ranges by ``copy_file_range``, holes left as holes (a sparse tail
    stays sparse). Each copied range is re-read and compared; False when one differs."""
    source, start = tail
    with open(source, "rb") as src:
        size = os.fstat(src.fileno()).st_size
        base = head - start
        extents = data_extents(src.fileno(), start, size)
        for a, b in extents:
            _copy_range(src.fileno(), fd, a, a + base, b - a)
        os.ftruncate(fd, head + max(size - start, 0))
        for a, b in extents:
            for at in range(a, b, _CHUNK):
                n = min(_CHUNK, b - at)
                if os.pread(fd, n, at + base) != os.pread(src.fileno(), n, at):
                    return False
    return True


def write_output(path: object, data: bytes | bytearray | memoryview, *,
                 inputs: Iterable[object | None] = (), in_place: bool = False,
                 tail: Tail | None = None) -> None:
    """Write ``data`` to ``path`` as the module docstring says (``-``: stdout); ``tail`` (a
    source file and an offset in it) follows ``data`` byte for byte, copied sparse."""
    check_output(path, inputs, in_place=in_place)
    view = memoryview(data).cast("B")
    if is_stdout(path):
        _to_stdout(view, tail)
        return
    with _new_file(path, in_place=in_place) as fd:
        _write_all(fd, view)
        if tail is not None and not _append_tail(fd, len(view), tail):
            raise _out_error(path, "read-back of the copied tail differs from its source")
        os.fsync(fd)
        if not _same_as_written(fd, view, whole=tail is None):
            raise _out_error(path, "read-back differs from what was written")


@contextmanager
def _new_file(path: object, *, in_place: bool = False) -> Iterator[int]:
    """A new file for ``path`` (symlinks followed), unnamed where the filesystem allows: yields
    its descriptor, and once the block has written, synced and read it back without raising,
    gives it the target's name by an atomic rename. A replaced file's mode is kept, and its
    owner too ``in_place``; on any error nothing is left behind."""
    target = os.path.realpath(os.fspath(path))  # type: ignore[call-overload]
    folder, name = os.path.split(target)
    sweep(folder)
    try:
        old: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        old = None
    tmp: str | None = None
    try:
        fd, tmp = _create(folder, name)
    except OSError as exc:
        raise _out_error(path, f"cannot create a file in {folder}: {exc.strerror}") from exc
    try:
        if old is not None:
            os.fchmod(fd, stat.S_IMODE(old.st_mode))
            if in_place and (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
                try:
                    os.fchown(fd, old.st_uid, old.st_gid)
                except OSError as exc:
                    raise _out_error(path, f"cannot keep the owner {old.st_uid}:{old.st_gid} "
                                           f"in place: {exc.strerror}") from exc
                os.fchmod(fd, stat.S_IMODE(old.st_mode))  # chown drops set-id bits
        yield fd
        if tmp is None:
            tmp = os.path.join(folder, f".{name}.kimagekit-tmp.{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            _link(fd, tmp)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise _out_error(path, f"cannot write: {exc.strerror}") from exc
    finally:
        os.close(fd)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextmanager
def locked(path: object) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file at ``path`` (a read-modify-write in place): a
    second holder is refused at once rather than left waiting. A file replaced while the lock
    was taken is locked again, so the lock is always on what the path names."""
    name = os.fspath(path)  # type: ignore[call-overload]
    for _ in range(100):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as exc:
            raise _out_error(path, f"cannot open: {exc.strerror}", "--in-place") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _out_error(path, "being rewritten in place by another process (locked): "
                                   "try again when it has finished", "--in-place") from None
        try:
            now, held = os.stat(name), os.fstat(fd)
        except OSError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            try:
                yield
            finally:
                os.close(fd)
            return
        os.close(fd)
    raise _out_error(path, "replaced again and again while being locked", "--in-place")


Edit = tuple[int, bytes]  # an offset in the output, and the bytes that go there


def _pwrite_all(fd: int, at: int, data: bytes) -> None:
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:done + _CHUNK], at + done)


def _edits_read_back(fd: int, edits: Iterable[Edit]) -> bool:
    return all(os.pread(fd, min(_CHUNK, len(data) - pos), at + pos) == data[pos:pos + _CHUNK]
               for at, data in edits for pos in range(0, len(data), _CHUNK))


def write_copy_with_edits(path: object, source: str, edits: list[Edit], size: int, *,
                          inputs: Iterable[object | None] = (),
                          compare: Iterable[tuple[int, int]] = ()) -> None:
    """The atomic write of :func:`write_output` for a file that is ``source`` with a few ranges
    changed: ``source`` copied by ``copy_file_range`` (never held; holes stay holes), cut or
    extended to ``size``, then ``edits`` written over it. Read back before the rename: every
    edit, and the ``compare`` ranges ``[a, b)`` against ``source`` (the caller's other checks,
    such as a digest, cover the rest)."""
    check_output(path, inputs, stdout=False)
    with _new_file(path) as fd, open(source, "rb") as src:
        end = min(os.fstat(src.fileno()).st_size, size)
        for a, b in data_extents(src.fileno(), 0, end):
            _copy_range(src.fileno(), fd, a, a, b - a)
        os.ftruncate(fd, size)
        for at, data in edits:
            _pwrite_all(fd, at, data)
        os.fsync(fd)
        same = _edits_read_back(fd, edits) and all(
            os.pread(fd, min(_CHUNK, b - at), at) == os.pread(src.fileno(), min(_CHUNK, b - at), at)
            for a, b in compare for at in range(a, b, _CHUNK))
        if not same or os.fstat(fd).st_size != size:
            raise _out_error(path, "read-back differs from what was written")


def edit_in_place(path: object, edits: list[Edit], size: int) -> None:
    """Write ``edits`` into the file at ``path`` where it lies (same inode: mode and owner
    kept), in the order given with a sync after each, so a crash leaves the earlier edits
    whole; then cut or extend it to ``size``, sync, and read every edit back. Not atomic: the
    caller orders the edits so any torn state is detectable, and holds :func:`locked`."""
    name = os.fspath(path)  # type: ignore[call-overload]
    try:
        fd = os.open(name, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise _out_error(path, f"cannot open: {exc.strerror}", "--in-place") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _out_error(path, "not a regular file: refused", "--in-place")
        for at, data in edits:
            _pwrite_all(fd, at, data)
            os.fdatasync(fd)
        if os.fstat(fd).st_size != size:
            os.ftruncate(fd, size)
        os.fsync(fd)
        if not _edits_read_back(fd, edits) or os.fstat(fd).st_size != size:
            raise _out_error(path, "read-back differs from what was written", "--in-place")
    except OSError as exc:
        raise _out_error(path, f"cannot write in place: {exc.strerror}", "--in-place") from exc
    finally:
        os.close(fd)
