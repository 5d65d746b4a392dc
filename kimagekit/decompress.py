"""Kernel payload decompression: the compression told by its magic, decompressed by streaming with
a hard bound on the output, so a decompression bomb costs at most ``limit`` bytes and a corrupt
stream is a :class:`ParseError`, never a hang.

Decompressor modules are imported when first needed. ``lz4`` and ``zstandard`` are the
``compressors`` extra: a payload that needs a missing one is refused, naming the package and the
extra.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kimagekit.errors import ParseError

__all__ = [
    "DEFAULT_LIMIT", "LZ4_LEGACY_BLOCK", "LZ4_LEGACY_MAGIC", "MAGICS", "Decompressed", "Pieces",
    "decompress", "detect", "stream",
]

# A decompressed vmlinux is tens of MiB (Debian 6.1 amd64: 63 MiB); 512 MiB leaves room for debug
# kernels while keeping a bomb from exhausting memory.
DEFAULT_LIMIT = 512 << 20
_IN_CHUNK = 1 << 20
_OUT_CHUNK = 4 << 20
LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
LZ4_LEGACY_BLOCK = 8 << 20  # the legacy format's fixed uncompressed block size

# (name, magic) in the order they are tried
MAGICS: tuple[tuple[str, bytes], ...] = (
    ("gzip", b"\x1f\x8b"),
    ("bzip2", b"BZh"),
    ("xz", b"\xfd7zXZ\x00"),
    ("lzma", b"\x5d\x00\x00"),
    ("lz4", LZ4_LEGACY_MAGIC),
    ("lz4", b"\x04\x22\x4d\x18"),
    ("zstd", b"\x28\xb5\x2f\xfd"),
    ("lzo", b"\x89LZO"),
)


def detect(data: bytes | memoryview) -> str | None:
    """The compression of ``data`` by its magic, or None."""
    head = bytes(data[:8])
    return next((name for name, magic in MAGICS if head.startswith(magic)), None)


@dataclass(frozen=True)
class Decompressed:
    compression: str
    data: bytes
    consumed: int | None  # input bytes the stream used, when the decompressor tells


def decompress(data: bytes | memoryview, *, fmt: str, field: str, offset: int,
               limit: int = DEFAULT_LIMIT, compression: str | None = None) -> Decompressed:
    """Decompress ``data`` (whose first byte is at ``offset`` in the input named by ``fmt``);
    more than ``limit`` bytes of output is refused as a bomb."""
    kind = compression or detect(data)
    out = bytearray()
    consumed: int | None = None
    for piece in _pieces(data, kind, fmt, field, offset, limit):
        if isinstance(piece, int):
            consumed = piece
        else:
            out += piece
    assert kind is not None  # _pieces refused it otherwise
    return Decompressed(kind, bytes(out), consumed)


def stream(data: bytes | memoryview, *, fmt: str, field: str, offset: int,
           limit: int = DEFAULT_LIMIT) -> Iterator[bytes]:
    """:func:`decompress`'s output piece by piece as it is produced, with the same bound and
    the same errors (raised when the stream gets there), for a reader that may stop early."""
    for piece in _pieces(data, detect(data), fmt, field, offset, limit):
        if not isinstance(piece, int):
            yield piece


def _pieces(data: bytes | memoryview, kind: str | None, fmt: str, field: str, offset: int,
            limit: int) -> Pieces:
    if kind is None:
        raise ParseError(f"unknown compression (magic {bytes(data[:4]).hex()})", fmt=fmt,
                         field=field, offset=offset)
    run = _RUNNERS.get(kind)
    if run is None:
        raise ParseError(f"{kind} payloads are not supported", fmt=fmt, field=field,
                         offset=offset)
    total = 0
    try:
        for piece in run(memoryview(data), limit + 1):
            if not isinstance(piece, int):
                total += len(piece)
                if total > limit:
                    break
            yield piece
    except ParseError:
        raise
    except _Claim as exc:
        raise ParseError(f"{exc} (decompression bomb?)", fmt=fmt, field=field,
                         offset=offset) from exc
    except ImportError as exc:
        raise ParseError(f"{kind} payload needs the Python package "
                         f"{(exc.name or kind).split('.')[0]!r}: pip install "
                         "'kimagekit[compressors]'", fmt=fmt, field=field,
                         offset=offset) from exc
    except Exception as exc:  # zlib/bz2/lzma/lz4/zstandard each raise their own types
        raise ParseError(f"bad {kind} stream: {_describe(exc)}", fmt=fmt, field=field,
                         offset=offset) from exc
    if total > limit:
        raise ParseError(f"the {kind} stream expands beyond the {limit}-byte limit "
                         "(decompression bomb?)", fmt=fmt, field=field, offset=offset)


def _describe(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


Pieces = Iterator[bytes | int]


class _Claim(ValueError):
    """A header that announces more output than the limit: refused before any work."""


def _truncated(kind: str) -> EOFError:
    return EOFError(f"the {kind} stream ends before its end marker")


def _gzip(data: memoryview, cap: int) -> Pieces:
    import zlib

    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    yield from _zlib_like(d, data, cap)
    if not d.eof:
        raise _truncated("gzip")
    yield len(data) - len(d.unused_data)


def _zlib_like(d: object, data: memoryview, cap: int) -> Pieces:
    produced = 0
    for at in range(0, len(data), _IN_CHUNK):
        chunk: bytes = bytes(data[at:at + _IN_CHUNK])
        while chunk and not d.eof:  # type: ignore[attr-defined]
            out = d.decompress(chunk, _OUT_CHUNK)  # type: ignore[attr-defined]
            produced += len(out)
            yield out
            if produced >= cap:
                return
            chunk = d.unconsumed_tail  # type: ignore[attr-defined]
        if d.eof:  # type: ignore[attr-defined]
            return


def _buffered(d: object, data: memoryview, cap: int) -> Pieces:
    """bz2/lzma decompressors: output in bounded pieces, input fed only when asked for."""
    produced = 0
    at = 0
    while not d.eof:  # type: ignore[attr-defined]
        if d.needs_input:  # type: ignore[attr-defined]
            if at >= len(data):
                return
            chunk = bytes(data[at:at + _IN_CHUNK])
            at += len(chunk)
        else:
            chunk = b""
        out = d.decompress(chunk, _OUT_CHUNK)  # type: ignore[attr-defined]
        produced += len(out)
        yield out
        if produced >= cap:
            return
    yield at - len(d.unused_data)  # type: ignore[attr-defined]


def _bzip2(data: memoryview, cap: int) -> Pieces:
    import bz2

    d = bz2.BZ2Decompressor()
    yield from _buffered(d, data, cap)
    if not d.eof:
        raise _truncated("bzip2")


def _lzma(data: memoryview, cap: int, xz: bool) -> Pieces:
    import lzma

    if not xz and len(data) >= 13:
        # the .lzma header claims the size: refuse a claim past the limit before any work
        (claim,) = struct.unpack_from("<Q", data, 5)
        if claim != (1 << 64) - 1 and claim >= cap:
            raise _Claim(f"the lzma header claims {claim} bytes, beyond the "
                             f"{cap - 1}-byte limit")
    d = lzma.LZMADecompressor(lzma.FORMAT_XZ if xz else lzma.FORMAT_ALONE)
    yield from _buffered(d, data, cap)
    if not d.eof:
        raise _truncated("xz" if xz else "lzma")


def _lz4(data: memoryview, cap: int) -> Pieces:
    if bytes(data[:4]) != LZ4_LEGACY_MAGIC:
        yield from _lz4_frame(data, cap)
        return
    import lz4.block

    at, produced = 4, 0
    while at + 4 < len(data):
        (size,) = struct.unpack_from("<I", data, at)
        if size == struct.unpack("<I", LZ4_LEGACY_MAGIC)[0]:
            at += 4  # concatenated streams: another magic
            continue
        if at + 4 + size > len(data):
            if len(data) - at == 4:
                break  # the kernel's stream ends with its size trailer, not a block
            raise _truncated("lz4")
        out = lz4.block.decompress(bytes(data[at + 4:at + 4 + size]),
                                   uncompressed_size=LZ4_LEGACY_BLOCK)
        at += 4 + size
        produced += len(out)
        yield out
        if produced >= cap:
            return
    yield at


def _lz4_frame(data: memoryview, cap: int) -> Pieces:
    import lz4.frame

    d = lz4.frame.LZ4FrameDecompressor()
    produced = 0
    at = 0
    while not d.eof:
        chunk = bytes(data[at:at + _IN_CHUNK]) if d.needs_input else b""
        if d.needs_input and not chunk:
            raise _truncated("lz4")
        at += len(chunk)
        out = d.decompress(chunk, _OUT_CHUNK)
        produced += len(out)
        yield out
        if produced >= cap:
            return
    yield at - len(d.unused_data)


def _zstd(data: memoryview, cap: int) -> Pieces:
    import zstandard

    params = zstandard.get_frame_parameters(bytes(data[:18]))
    if params.content_size not in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR) \
            and params.content_size >= cap:
        raise _Claim(f"the zstd frame claims {params.content_size} bytes, beyond the "
                         f"{cap - 1}-byte limit")
    # decompressobj has no output bound per call; small input pieces bound it instead (a zstd
    # block of a few bytes expands to at most 128 KiB).
    d = zstandard.ZstdDecompressor().decompressobj()
    produced = 0
    for at in range(0, len(data), _ZSTD_IN):
        chunk = bytes(data[at:at + _ZSTD_IN])
        out = d.decompress(chunk)
        produced += len(out)
        yield out
        if produced >= cap:
            return
        if d.eof:
            yield at + len(chunk) - len(d.unused_data)
            return
    raise _truncated("zstd")


_ZSTD_IN = 1024


_RUNNERS: dict[str, Callable[[memoryview, int], Pieces]] = {
    "gzip": _gzip,
    "bzip2": _bzip2,
    "xz": lambda d, c: _lzma(d, c, True),
    "lzma": lambda d, c: _lzma(d, c, False),
    "lz4": _lz4,
    "zstd": _zstd,
}
