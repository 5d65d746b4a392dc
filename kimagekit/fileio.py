"""Reading untrusted inputs without slurping them, and writing outputs atomically."""

from __future__ import annotations

import contextlib
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
