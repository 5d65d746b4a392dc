"""Reading untrusted inputs and writing outputs: the names every module uses.

The reader is :mod:`kimagekit.input_files` (files mapped, pipes and stdin bounded, devices and
writerless FIFOs refused); the writer is :mod:`kimagekit.output_files` (atomic, never over an
input, stdout for ``-``, locked in place).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from kimagekit.input_files import open_input, too_big
from kimagekit.output_files import (
    check_output,
    edit_in_place,
    is_stdout,
    locked,
    write_copy_with_edits,
    write_output,
)

__all__ = ["Buffer", "atomic_write", "atomic_write_with_tail", "check_output", "edit_in_place",
           "input_size", "is_stdout", "locked", "map_file", "mapped", "read_head", "read_input",
           "reread", "write_copy_with_edits"]

Buffer = bytes | bytearray | memoryview | mmap.mmap


@contextmanager
def map_file(path: str | os.PathLike[str],
             what: str = "file") -> Iterator[tuple[mmap.mmap | None, memoryview]]:
    """Map ``path`` read-only: yield the map (``None`` when there is none: an empty file, or a
    pipe read whole) and a memoryview. Callers that stream through big files may ``madvise``
    the map. ``what`` (an option name, or ``file``) names the input in errors."""
    with open_input(path, what) as (mm, view):
        yield mm, view


@contextmanager
def mapped(path: str | os.PathLike[str], what: str = "file") -> Iterator[memoryview]:
    """Map ``path`` read-only and yield a memoryview of it (empty files give an empty view)."""
    with open_input(path, what) as (_, view):
        yield view


def read_input(path: str | os.PathLike[str], what: str = "file") -> bytes:
    """All of ``path`` as bytes (for the side inputs that are kept whole): a file too is held to
    ``what``'s bound before it is copied."""
    with open_input(path, what) as (_, view):
        too_big(path, what, len(view))
        return bytes(view)


def input_size(path: str | os.PathLike[str], what: str = "file") -> int:
    """How many bytes ``path`` holds (a pipe: what it gave)."""
    with open_input(path, what) as (_, view):
        return len(view)


def read_head(path: str | os.PathLike[str], size: int = 4096, what: str = "file") -> bytes:
    """The first ``size`` bytes of ``path``: enough for format detection."""
    with open_input(path, what) as (_, view):
        return bytes(view[:size])


@contextmanager
def reread(path: str | os.PathLike[str],
           data: bytes | bytearray | memoryview) -> Iterator[memoryview]:
    """What was just written to ``path``, read back: the file mapped again, or ``data`` itself
    when it went to stdout (which cannot be read back)."""
    if is_stdout(path):
        yield memoryview(data)
        return
    with open_input(path) as (_, view):
        yield view


def atomic_write(path: str | os.PathLike[str], data: bytes | bytearray | memoryview, *,
                 inputs: Iterable[object | None] = (), in_place: bool = False) -> None:
    """Write ``data`` to ``path`` atomically, re-read and compared before the rename; ``-`` or
    ``/dev/stdout`` is stdout. Refused when ``path`` is one of ``inputs`` unless ``in_place``."""
    write_output(path, data, inputs=inputs, in_place=in_place)


def atomic_write_with_tail(path: str | os.PathLike[str], data: bytes | bytearray | memoryview,
                           source: str | os.PathLike[str], tail_offset: int, *,
                           inputs: Iterable[object | None] = ()) -> None:
    """:func:`atomic_write` of ``data`` followed by ``source``'s bytes from ``tail_offset`` to its
    end, copied without ever holding them (holes stay holes), each range re-read and compared."""
    write_output(path, data, inputs=inputs, tail=(os.fspath(source), tail_offset))
