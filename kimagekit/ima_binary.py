"""The binary IMA measurement list: the entry model, template digests, the streaming scanner and
the writer.

The layouts are declared in :mod:`kimagekit.formats.ima`; the scanner here is the fast path derived
from them (its ``struct`` formats come from the schemas) and ``tests/test_ima_log.py`` checks that
both agree on every corpus list. Entries stream from a memory map, so a multi-gigabyte list is
walked in constant memory. This module sits just above :mod:`kimagekit.ima_fields`; the ASCII
list, the kexec buffer and the file-level dispatch (:mod:`kimagekit.ima_log`) build on it.
"""

from __future__ import annotations

import hashlib
import mmap
import re
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Literal

from kimagekit import ima_fields
from kimagekit.errors import ParseError, UsageError
from kimagekit.formats import ima as schema
from kimagekit.formats.ima import BANK_BY_SIZE, DEFAULT_BANKS, DIGEST_SIZES, Endian
from kimagekit.hexrepr import hex_repr
from kimagekit.ima_fields import FileDigest, ImaField, file_digest_of

#: The banks replayed when none is named (``sm3_256`` only on request).
BANKS: tuple[str, ...] = DEFAULT_BANKS
__all__ = [
    "BANKS", "FMT", "RELEASE_STEP", "TEMPLATE_NAME_OK", "DigestMismatch", "FileDigest", "ImaEntry",
    "ImaField", "Kind", "ListFormat", "RawEntry", "Releaser", "encode_entry", "encode_list",
    "entry_header_codec", "entry_path", "extend", "hash_factory", "ima_hash_input", "iter_binary",
    "kexec_header_codec", "reencode_template_data", "scan", "template_digest", "u32_codec",
]
Kind = Literal["binary", "kexec-buffer", "ascii"]
FMT = "ima-list"
TEMPLATE_NAME_OK = re.compile(rb"[A-Za-z0-9|_.:+\-]{1,255}\Z")


@dataclass(frozen=True)
class ListFormat:
    """How a list is encoded: binary entries (optionally after an ``ima_kexec_hdr``) or ASCII."""

    kind: Kind
    endian: Endian = "<"
    digest_size: int = 20
    #: Offset of the first entry (24 after a kexec header).
    start: int = 0
    #: End of the entries (the header's ``buffer_size`` for a kexec buffer).
    end: int | None = None
    #: ``count`` from a kexec header.
    count: int | None = None

    @property
    def bank(self) -> str:
        return BANK_BY_SIZE.get(self.digest_size, f"{self.digest_size * 8}-bit")


@dataclass(frozen=True, slots=True)
class ImaEntry:
    """One measurement. ``template_data`` is the data exactly as the list stores it (for the ``ima``
    template: digest, u32 name length, name)."""

    pcr: int
    template_digest: bytes
    template_name: str
    template_data: bytes
    endian: Endian = "<"
    index: int = 0
    offset: int = 0

    @property
    def is_violation(self) -> bool:
        return not any(self.template_digest)

    @property
    def fields(self) -> tuple[ImaField, ...]:
        return ima_fields.split_fields(self.template_name, self.template_data, self.endian,
                                       base=self.data_offset,
                                       field=f"entry[{self.index}].template_data")

    @property
    def data_offset(self) -> int:
        """Where ``template_data`` starts in the list (after ``template_data_len``, if any)."""
        head = 4 + len(self.template_digest) + 4 + len(self.template_name)
        return self.offset + head + (0 if self.template_name == "ima" else 4)

    @property
    def path(self) -> str | None:
        """The file name (or buffer name) the entry measured: its first ``n``/``n-ng`` field as
        the ASCII list shows it; None when the template has none. Raises ParseError when the
        template data does not split into its fields."""
        return next((f.shown for f in self.fields if f.id in ("n", "n-ng")), None)

    @property
    def file_digest(self) -> FileDigest | None:
        """The measured file's digest (``d-ng``, ``d-ngv2`` or ``d``), or None. Raises
        ParseError as :attr:`path` does."""
        return file_digest_of(self.fields)

    def __repr__(self) -> str:
        return hex_repr(self)

    def digest_for(self, bank: str) -> bytes:
        """The template digest the kernel computes for ``bank`` (all 0xff for a violation, which
        is what the PCR is extended with)."""
        if self.is_violation:
            return b"\xff" * DIGEST_SIZES[bank]
        return template_digest(self.template_name, self.template_data, bank, self.endian)


@dataclass(frozen=True)
class DigestMismatch:
    """An entry whose template data no longer hashes to its stored template digest: altered."""

    index: int
    offset: int
    template_name: str
    stored: bytes
    computed: bytes
    #: The entry's file name (its ``n``/``n-ng`` field), when it has one.
    path: str | None = None

    def __repr__(self) -> str:
        return hex_repr(self)


def entry_path(e: ImaEntry) -> str | None:
    """The file name an entry measured (its first ``n``/``n-ng`` field), or ``None``."""
    try:
        return e.path
    except ParseError:
        return None


# ----------------------------------------------------------------------------- digests

@cache
def hash_factory(bank: str) -> Callable[..., hashlib._Hash]:
    """The hash constructor of ``bank``; a UsageError for an unknown bank, or for ``sm3_256``
    when this Python's OpenSSL has no SM3."""
    if bank not in DIGEST_SIZES:
        raise UsageError(f"unknown bank {bank!r} (known: {', '.join(DIGEST_SIZES)})")
    if bank == "sm3_256":
        if "sm3" not in hashlib.algorithms_available:
            raise UsageError("bank sm3_256: this Python's hashlib has no sm3 (OpenSSL built "
                             "without SM3)")
        return _sm3
    return getattr(hashlib, bank)  # type: ignore[no-any-return]


def _sm3(data: bytes | memoryview = b"") -> hashlib._Hash:
    return hashlib.new("sm3", data)


def template_digest(name: str, data: bytes | memoryview, bank: str, endian: Endian) -> bytes:
    """The template digest as ``ima_calc_field_array_hash`` computes it for ``bank``.

    For every template but ``ima`` the kernel hashes each field's u32 length and bytes, which is
    the template data exactly as written. The ``ima`` template hashes its 20-byte digest and the
    name zero-padded to ``IMA_EVENT_NAME_LEN_MAX + 1`` bytes, without lengths.
    """
    h = hash_factory(bank)
    return h(ima_hash_input(data) if name == "ima" else data).digest()


def extend(pcr: bytes, digest: bytes, bank: str) -> bytes:
    return hash_factory(bank)(pcr + digest).digest()


def ima_hash_input(data: bytes | memoryview) -> bytes:
    """What the ``ima`` template hashes: its digest, then the name padded with zeros."""
    d = bytes(data[:schema.TPM_DIGEST_SIZE])
    n = bytes(data[schema.TPM_DIGEST_SIZE + 4:])
    return d + n.ljust(schema.IMA_EVENT_NAME_LEN_MAX + 1, b"\0")


# ----------------------------------------------------------------------------- scanning

@cache
def entry_header_codec(endian: Endian, digest_size: int) -> struct.Struct:
    """PCR, digest and name length of an entry."""
    return schema.fixed_prefix(schema.entry_header(endian, digest_size), endian)


@cache
def u32_codec(endian: Endian) -> struct.Struct:
    return schema.fixed_prefix(schema.template_field(endian), endian)


@cache
def kexec_header_codec(endian: Endian) -> struct.Struct:
    return schema.fixed_prefix(schema.kexec_hdr(endian), endian)


RawEntry = tuple[int, int, int, bytes, str, int, int]
RELEASE_STEP = 8 << 20


class Releaser:
    """Over a file map, give back the pages already walked so that RSS stays flat for any size:
    call it with the position reached once that passes ``at``."""

    def __init__(self, buf: bytes | memoryview) -> None:
        self.mm = buf.obj if isinstance(buf, memoryview) and isinstance(buf.obj, mmap.mmap) \
            else None
        self.at = RELEASE_STEP if self.mm is not None else 1 << 62

    def __call__(self, pos: int) -> None:
        if self.mm is not None:
            self.mm.madvise(mmap.MADV_DONTNEED, 0, pos - pos % mmap.PAGESIZE)
        self.at = pos + RELEASE_STEP


def scan(buf: bytes | memoryview, fmt: ListFormat, *, fmt_name: str = FMT) -> Iterator[RawEntry]:
    """The fast path: yield ``(index, offset, pcr, digest, template_name, data_start, data_end)``
    for every entry, checking each length against what is left before using it."""
    hdr, u32 = entry_header_codec(fmt.endian, fmt.digest_size), u32_codec(fmt.endian)
    hsize = hdr.size
    unpack_hdr, unpack_u32 = hdr.unpack_from, u32.unpack_from
    names: dict[bytes, str] = {}
    pos = fmt.start
    end = len(buf) if fmt.end is None else min(fmt.end, len(buf))
    index = 0
    release = Releaser(buf)
    while pos < end:
        if pos >= release.at:
            release(pos)
        left = end - pos
        if left < hsize:
            raise ParseError(f"truncated entry header: {hsize} bytes needed, {left} left",
                             fmt=fmt_name, field=f"entry[{index}]", offset=pos)
        pcr, digest, name_len = unpack_hdr(buf, pos)
        p = pos + hsize
        if name_len > end - p:
            raise ParseError(f"template_name_len {name_len} exceeds the {end - p} bytes left",
                             fmt=fmt_name, field=f"entry[{index}].template_name_len", offset=p - 4)
        raw_name = bytes(buf[p:p + name_len])
        name = names.get(raw_name)
        if name is None:
            if not TEMPLATE_NAME_OK.match(raw_name):
                raise ParseError(f"template name {raw_name[:40]!r} is not a template name",
                                 fmt=fmt_name, field=f"entry[{index}].template_name", offset=p)
            name = names[raw_name] = raw_name.decode("ascii")
        p += name_len
        if name == "ima":
            if end - p < 24:
                raise ParseError(f"truncated ima template data: 24 bytes needed, {end - p} left",
                                 fmt=fmt_name, field=f"entry[{index}].template_data", offset=p)
            (n_len,) = unpack_u32(buf, p + 20)
            if n_len > schema.IMA_EVENT_NAME_LEN_MAX or n_len > end - p - 24:
                why = (f"the {end - p - 24} bytes left" if n_len <= schema.IMA_EVENT_NAME_LEN_MAX
                       else f"IMA_EVENT_NAME_LEN_MAX ({schema.IMA_EVENT_NAME_LEN_MAX})")
                raise ParseError(f"name length {n_len} exceeds {why}", fmt=fmt_name,
                                 field=f"entry[{index}].template_data.n_len", offset=p + 20)
            data_start, p = p, p + 24 + n_len
        else:
            if end - p < 4:
                raise ParseError(f"truncated template_data_len: 4 bytes needed, {end - p} left",
                                 fmt=fmt_name, field=f"entry[{index}].template_data_len",
                                 offset=p)
            (dlen,) = unpack_u32(buf, p)
            if dlen > end - p - 4:
                raise ParseError(f"template_data_len {dlen} exceeds the {end - p - 4} bytes left",
                                 fmt=fmt_name, field=f"entry[{index}].template_data_len",
                                 offset=p)
            data_start, p = p + 4, p + 4 + dlen
        yield index, pos, pcr, digest, name, data_start, p
        pos = p
        index += 1


def iter_binary(buf: bytes | memoryview, fmt: ListFormat) -> Iterator[ImaEntry]:
    """Stream the entries of a binary list or kexec buffer held in ``buf``."""
    endian = fmt.endian
    for index, offset, pcr, digest, name, start, end in scan(buf, fmt):
        yield ImaEntry(pcr, digest, name, bytes(buf[start:end]), endian, index, offset)


# ----------------------------------------------------------------------------- writing

def reencode_template_data(name: str, data: bytes, src: Endian, dst: Endian) -> bytes:
    """Template data with its lengths (and uid/gid/mode values) in byte order ``dst``."""
    if src == dst:
        return data
    if name == "ima":
        n_len = int.from_bytes(data[20:24], "little" if src == "<" else "big")
        return data[:20] + n_len.to_bytes(4, "little" if dst == "<" else "big") + data[24:]
    ids = ima_fields.template_field_ids(name)
    chunks = ima_fields.walk_fields(data, src)
    out = bytearray()
    u32 = u32_codec(dst)
    for i, chunk in enumerate(chunks):
        fid = ids[i] if ids is not None and i < len(ids) else "?"
        value = chunk[::-1] if schema.FIELD_FORMATS.get(fid) == "uint" else chunk
        out += u32.pack(len(value)) + value
    return bytes(out)


def encode_entry(e: ImaEntry, endian: Endian | None = None,
                 digest_size: int | None = None) -> bytes:
    """The bytes of ``e`` in a binary list of the given byte order and digest size. The template
    digest is recomputed when the size or the byte order changes (violations stay all-zero): it is
    what a kernel writing that list would have computed, not what the original TPM saw."""
    endian = endian or e.endian
    ds = digest_size or len(e.template_digest)
    digest = e.template_digest
    data = reencode_template_data(e.template_name, e.template_data, e.endian, endian)
    # Lengths are hashed as written, so another byte order means another digest (except for the
    # ima template, which hashes no lengths); another size means another bank.
    if len(digest) != ds or (endian != e.endian and e.template_name != "ima"):
        bank = BANK_BY_SIZE.get(ds)
        if bank is None:
            raise UsageError(f"no bank has a {ds}-byte digest")
        digest = bytes(ds) if e.is_violation else template_digest(e.template_name, data, bank,
                                                                     endian)
    name = e.template_name.encode("ascii")
    if e.template_name == "ima":
        built: bytes = schema.entry(endian, ds).build(
            {"pcr": e.pcr, "digest": digest, "template_name": name,
             "template_data": {"d": data[:20], "n": data[24:]}})
        return built
    u32 = u32_codec(endian)
    return b"".join((u32.pack(e.pcr), digest, u32.pack(len(name)), name, u32.pack(len(data)),
                     data))


def encode_list(entries: Iterable[ImaEntry], endian: Endian = "<",
                digest_size: int = 20) -> bytes:
    return b"".join(encode_entry(e, endian, digest_size) for e in entries)
