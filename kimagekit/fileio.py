"""Reading untrusted inputs without slurping them, and writing outputs atomically."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kimagekit.errors import OutputError, ParseError

Buffer = bytes | bytearray | memoryview | mmap.mmap


@contextmanager
def map_file(path: str | os.PathLike[str]) -> Iterator[tuple[mmap.mmap | None, memoryview]]:
    """Map ``path`` read-only: yield the map (``None`` for an empty file, which cannot be mapped)
    and a memoryview of it. Callers that stream through big files may ``madvise`` the map."""
    p = Path(path)
    try:
        f = p.open("rb")
    except OSError as exc:
        raise ParseError(f"cannot open: {exc.strerror}", fmt="file", field=str(p)) from exc
    with f:
        if os.fstat(f.fileno()).st_size == 0:
            yield None, memoryview(b"")
            return
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mm)
        try:
            yield mm, view
        finally:
            view.release()
            # a caller may keep a slice alive; then the map goes with the GC
            with contextlib.suppress(BufferError):
                mm.close()


@contextmanager
def mapped(path: str | os.PathLike[str]) -> Iterator[memoryview]:
    """Map ``path`` read-only and yield a memoryview of it (empty files give an empty view)."""
    with map_file(path) as (_, view):
        yield view


def read_head(path: str | os.PathLike[str], size: int = 4096) -> bytes:
    """The first ``size`` bytes of ``path``: enough for format detection."""
    try:
        with Path(path).open("rb") as f:
            return f.read(size)
    except OSError as exc:
        raise ParseError(f"cannot open: {exc.strerror}", fmt="file", field=str(path)) from exc


def atomic_write(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    The result is re-read and compared before the rename, so a short write never replaces a file.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot create a file in {folder}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if Path(tmp).read_bytes() != bytes(data):
            raise OutputError(f"{target}: read-back differs from what was written")
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


def atomic_write_with_tail(path: str | os.PathLike[str], data: bytes | bytearray | memoryview,
                           source: str | os.PathLike[str], tail_offset: int) -> None:
    """:func:`atomic_write` of ``data`` followed by ``source``'s bytes from ``tail_offset`` to its
    end, copied without ever holding them: data ranges by ``copy_file_range``, holes left as
    holes (a sparse tail stays sparse). The head and every copied range are re-read and
    compared before the rename."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot create a file in {folder}: {exc.strerror}") from exc
    base = len(data) - tail_offset
    try:
        with os.fdopen(fd, "r+b") as out, Path(source).open("rb") as src:
            out.write(data)
            out.flush()
            size = os.fstat(src.fileno()).st_size
            extents = data_extents(src.fileno(), tail_offset, size)
            for a, b in extents:
                _copy_range(src.fileno(), out.fileno(), a, a + base, b - a)
            os.ftruncate(out.fileno(), len(data) + max(size - tail_offset, 0))
            os.fsync(out.fileno())
            if os.pread(out.fileno(), len(data), 0) != bytes(data):
                raise OutputError(f"{target}: read-back differs from what was written")
            for a, b in extents:
                for at in range(a, b, 1 << 20):
                    n = min(1 << 20, b - at)
                    if os.pread(out.fileno(), n, at + base) != os.pread(src.fileno(), n, at):
                        raise OutputError(f"{target}: read-back of the tail differs at "
                                          f"{at + base:#x}")
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _copy_range(src: int, dst: int, at: int, to: int, n: int) -> None:
    while n > 0:
        try:
            done = os.copy_file_range(src, dst, n, at, to)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            done = os.pwrite(dst, os.pread(src, min(n, 1 << 20), at), to)
        if done <= 0:
            raise OSError(errno.EIO, "short copy")
        at, to, n = at + done, to + done, n - done
