"""IMA measurement lists: detect, stream, recheck, replay, render and write.

The layouts are declared in :mod:`kimagekit.formats.ima`; the scanner here is the fast path derived
from them (its ``struct`` formats come from the schemas) and ``tests/test_ima_log.py`` checks that
both agree on every corpus list. Entries stream from a memory map, so a multi-gigabyte list is
walked in constant memory.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

from kimagekit import ima_fields
from kimagekit.errors import ParseError, UsageError
from kimagekit.fileio import mapped
from kimagekit.formats import ima as schema
from kimagekit.formats.ima import BANK_BY_SIZE, DIGEST_SIZES, IMA_TEMPLATE, Endian

__all__ = [
    "BANKS", "BANK_BY_SIZE", "DIGEST_SIZES", "DigestMismatch", "Endian", "ImaEntry", "ImaField",
    "ListFormat", "ListReport", "ListSummary", "ParseError", "analyse", "detect",
    "detect_or_raise", "encode_entry", "encode_list", "extend", "iter_entries", "open_list",
    "read_entries", "reencode_template_data", "replay", "scan", "summarize", "template_digest",
]
from kimagekit.ima_fields import ImaField

BANKS: tuple[str, ...] = tuple(DIGEST_SIZES)
Kind = Literal["binary", "kexec-buffer", "ascii"]
FMT = "ima-list"


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

    def digest_for(self, bank: str) -> bytes:
        """The template digest the kernel computes for ``bank`` (all 0xff for a violation, which
        is what the PCR is extended with)."""
        if self.is_violation:
            return b"\xff" * DIGEST_SIZES[bank]
        return template_digest(self.template_name, self.template_data, bank, self.endian)


@dataclass(frozen=True)
class DigestMismatch:
    index: int
    offset: int
    template_name: str
    stored: bytes
    computed: bytes


@dataclass(frozen=True)
class ListReport:
    """What one pass over a list finds: counts, digest mismatches, and PCR values per bank."""

    format: ListFormat
    entries: int
    violations: int
    templates: dict[str, int]
    mismatches: list[DigestMismatch]
    pcrs: dict[str, dict[int, bytes]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- digests

@cache
def _hash_factory(bank: str) -> Callable[..., hashlib._Hash]:
    if bank not in DIGEST_SIZES:
        raise UsageError(f"unknown bank {bank!r} (known: {', '.join(BANKS)})")
    return getattr(hashlib, bank)  # type: ignore[no-any-return]


def template_digest(name: str, data: bytes | memoryview, bank: str, endian: Endian) -> bytes:
    """The template digest as ``ima_calc_field_array_hash`` computes it for ``bank``.

    For every template but ``ima`` the kernel hashes each field's u32 length and bytes, which is
    the template data exactly as written. The ``ima`` template hashes its 20-byte digest and the
    name zero-padded to ``IMA_EVENT_NAME_LEN_MAX + 1`` bytes, without lengths.
    """
    h = _hash_factory(bank)
    return h(_ima_hash_input(data) if name == "ima" else data).digest()


def extend(pcr: bytes, digest: bytes, bank: str) -> bytes:
    return _hash_factory(bank)(pcr + digest).digest()


# ----------------------------------------------------------------------------- detection

_NAME_OK = re.compile(rb"[A-Za-z0-9|_.:+\-]{1,255}\Z")
_ASCII_LINE = re.compile(rb"\s*\d{1,2} (?:[a-z0-9]+:)?[0-9a-fA-F]{40,128} \S+")


@cache
def _hdr(endian: Endian, digest_size: int) -> struct.Struct:
    return schema.fixed_prefix(schema.entry_header(endian, digest_size), endian)


@cache
def _u32(endian: Endian) -> struct.Struct:
    return schema.fixed_prefix(schema.template_field(endian), endian)


@cache
def _khdr(endian: Endian) -> struct.Struct:
    return schema.fixed_prefix(schema.kexec_hdr(endian), endian)


def _plausible(buf: bytes | memoryview, pos: int, endian: Endian, ds: int, size: int,
               entries: int = 3) -> bool:
    """Do up to ``entries`` entries at ``pos`` parse with this byte order and digest size?

    Once the first entry has parsed whole, later trouble (truncation, a bad length) still says
    yes: the file is a list, and the scanner will name where it breaks.
    """
    hdr, u32 = _hdr(endian, ds), _u32(endian)
    limit = min(len(buf), size)
    for seen in range(entries):
        if pos >= limit:
            return seen > 0 or pos == size
        if limit - pos < hdr.size:
            return seen > 0
        pcr, _, name_len = hdr.unpack_from(buf, pos)
        p = pos + hdr.size
        if pcr > 63 or not 0 < name_len <= 255:
            return seen > 0
        if limit - p < name_len:
            return seen > 0
        name = bytes(buf[p:p + name_len])
        if not _NAME_OK.match(name):
            return seen > 0
        p += name_len
        if name == IMA_TEMPLATE:
            if limit - p < 24:
                return seen > 0
            (n_len,) = u32.unpack_from(buf, p + 20)
            if n_len > schema.IMA_EVENT_NAME_LEN_MAX:
                return seen > 0
            dlen = 24 + n_len
        else:
            if limit - p < 4:
                return seen > 0
            (dlen,) = u32.unpack_from(buf, p)
            p += 4
        if dlen > size - p:
            return seen > 0
        pos = p + dlen
    return True


def detect(head: bytes | memoryview, size: int) -> ListFormat | None:
    """Tell an IMA list from its first bytes (and the file size), or ``None``.

    Tried in order: a kexec buffer (``ima_kexec_hdr`` version 1, ``buffer_size`` within the file,
    classic entries after it), a binary list in either byte order with a 20/32/48/64-byte digest
    (the first entries must parse), then an ASCII list.
    """
    orders: tuple[Endian, Endian] = ("<", ">")
    for endian in orders:
        k = _khdr(endian)
        if len(head) >= k.size:
            version, r0, r1, buffer_size, count = k.unpack_from(head, 0)
            if (version == schema.IMA_KEXEC_HDR_VERSION and r0 == 0 and r1 == 0
                    and k.size <= buffer_size <= size
                    and (buffer_size == k.size or _plausible(head, k.size, endian, 20,
                                                             buffer_size))):
                return ListFormat("kexec-buffer", endian, 20, k.size, buffer_size, count)
    for endian in orders:
        for ds in (20, 32, 48, 64):
            if size and _plausible(head, 0, endian, ds, size):
                return ListFormat("binary", endian, ds, 0, size)
    if _ASCII_LINE.match(bytes(head[:300])):
        return ListFormat("ascii")
    return None


def detect_or_raise(buf: bytes | memoryview) -> ListFormat:
    """:func:`detect` on a whole list, or the error that reading it as a classic list runs into
    first."""
    head, size = buf[:65536], len(buf)
    fmt = detect(head, size)
    if fmt is not None:
        return fmt
    if len(head) >= 4:
        # Most likely a binary list gone wrong: name the first field that does not hold, read
        # with the byte order whose PCR index is plausible and the classic digest size.
        endian: Endian = "<" if int.from_bytes(bytes(head[:4]), "little") < 64 else ">"
        guess = ListFormat("binary", endian, schema.TPM_DIGEST_SIZE, 0, size)
        try:
            for _ in scan(buf, guess):
                pass
        except ParseError as err:
            err.message = f"not a valid IMA list: {err.message}"
            raise
    raise ParseError("not an IMA measurement list: no byte order and digest size "
                     "(20/32/48/64) gives a valid first entry, and it is not ASCII",
                     fmt=FMT, field="entry[0]", offset=0)


# ----------------------------------------------------------------------------- scanning

RawEntry = tuple[int, int, int, bytes, str, int, int]
_RELEASE_STEP = 8 << 20


def scan(buf: bytes | memoryview, fmt: ListFormat, *, fmt_name: str = FMT) -> Iterator[RawEntry]:
    """The fast path: yield ``(index, offset, pcr, digest, template_name, data_start, data_end)``
    for every entry, checking each length against what is left before using it."""
    hdr, u32 = _hdr(fmt.endian, fmt.digest_size), _u32(fmt.endian)
    hsize = hdr.size
    unpack_hdr, unpack_u32 = hdr.unpack_from, u32.unpack_from
    names: dict[bytes, str] = {}
    pos = fmt.start
    end = len(buf) if fmt.end is None else min(fmt.end, len(buf))
    index = 0
    # Over a file map, give back the pages already walked so that RSS stays flat for any size.
    mm = buf.obj if isinstance(buf, memoryview) and isinstance(buf.obj, mmap.mmap) else None
    release_at = _RELEASE_STEP
    while pos < end:
        if mm is not None and pos >= release_at:
            mm.madvise(mmap.MADV_DONTNEED, 0, pos - pos % mmap.PAGESIZE)
            release_at = pos + _RELEASE_STEP
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
            if not _NAME_OK.match(raw_name):
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


def iter_entries(buf: bytes | memoryview, fmt: ListFormat | None = None) -> Iterator[ImaEntry]:
    """Stream the entries of a binary list or kexec buffer held in ``buf``."""
    if fmt is None:
        fmt = detect_or_raise(buf)
    if fmt.kind == "ascii":
        from kimagekit.ima_ascii import parse_ascii

        yield from parse_ascii(buf)
        return
    endian = fmt.endian
    for index, offset, pcr, digest, name, start, end in scan(buf, fmt):
        yield ImaEntry(pcr, digest, name, bytes(buf[start:end]), endian, index, offset)


@contextmanager
def open_list(path: str | os.PathLike[str],
              fmt: ListFormat | None = None) -> Iterator[tuple[ListFormat, memoryview]]:
    """Map a list file and tell its format: ``with open_list(p) as (fmt, view): ...``."""
    with mapped(path) as view:
        if fmt is None:
            fmt = detect_or_raise(view)
        yield fmt, view


def read_entries(path: str | os.PathLike[str]) -> list[ImaEntry]:
    """All entries of a list file (binary, kexec buffer or ASCII), in memory."""
    with open_list(path) as (fmt, view):
        return list(iter_entries(view, fmt))


# ----------------------------------------------------------------------------- check & replay

def analyse(entries_or_buf: bytes | memoryview | Iterable[ImaEntry], fmt: ListFormat | None = None,
            *, banks: Sequence[str] = (), check: bool = True) -> ListReport:
    """One pass: recompute every template digest for the list's own bank (never trusting the
    stored one), count violations and templates, and replay ``banks``."""
    for b in banks:
        _hash_factory(b)
    if isinstance(entries_or_buf, bytes | memoryview):
        buf = entries_or_buf
        if fmt is None:
            fmt = detect_or_raise(buf)
        if fmt.kind != "ascii":
            return _analyse_binary(buf, fmt, banks, check)
        from kimagekit.ima_ascii import parse_ascii

        return _analyse_entries(parse_ascii(buf), fmt, banks, check)
    return _analyse_entries(entries_or_buf, fmt or ListFormat("binary"), banks, check)


def _analyse_binary(buf: bytes | memoryview, fmt: ListFormat, banks: Sequence[str],
                    check: bool) -> ListReport:
    # The hot loop of the project: one hash input per entry, each bank's digest computed once,
    # the list's own bank reused for its replay.
    own = BANK_BY_SIZE.get(fmt.digest_size) if check else None
    own_hash = _hash_factory(own) if own else None
    pcrs: dict[str, dict[int, bytes]] = {b: {} for b in banks}
    plan = [(_hash_factory(b), pcrs[b], bytes(DIGEST_SIZES[b]), b"\xff" * DIGEST_SIZES[b],
             b == own) for b in banks]
    zero = bytes(fmt.digest_size)
    mismatches: list[DigestMismatch] = []
    templates: defaultdict[str, int] = defaultdict(int)
    violations = 0
    count = 0
    got = b""
    for index, offset, pcr, digest, name, start, end in scan(buf, fmt):
        count = index + 1
        templates[name] += 1
        if digest == zero:
            violations += 1
            for h, table, z, ff, _ in plan:
                table[pcr] = h(table.get(pcr, z) + ff).digest()
            continue
        blob = buf[start:end] if name != "ima" else _ima_hash_input(buf[start:end])
        if own_hash is not None:
            got = own_hash(blob).digest()
            if got != digest:
                mismatches.append(DigestMismatch(index, offset, name, bytes(digest), got))
        for h, table, z, _, is_own in plan:
            d = got if is_own else h(blob).digest()
            table[pcr] = h(table.get(pcr, z) + d).digest()
    return ListReport(fmt, count, violations, dict(templates), mismatches, pcrs)


def _ima_hash_input(data: bytes | memoryview) -> bytes:
    """What the ``ima`` template hashes: its digest, then the name padded with zeros."""
    d = bytes(data[:schema.TPM_DIGEST_SIZE])
    n = bytes(data[schema.TPM_DIGEST_SIZE + 4:])
    return d + n.ljust(schema.IMA_EVENT_NAME_LEN_MAX + 1, b"\0")


def _analyse_entries(entries: Iterable[ImaEntry], fmt: ListFormat, banks: Sequence[str],
                     check: bool) -> ListReport:
    pcrs: dict[str, dict[int, bytes]] = {b: {} for b in banks}
    mismatches: list[DigestMismatch] = []
    templates: dict[str, int] = {}
    violations = count = 0
    for e in entries:
        count += 1
        templates[e.template_name] = templates.get(e.template_name, 0) + 1
        if e.is_violation:
            violations += 1
        own = BANK_BY_SIZE.get(len(e.template_digest))
        if check and own and not e.is_violation:
            got = e.digest_for(own)
            if got != e.template_digest:
                mismatches.append(DigestMismatch(e.index, e.offset, e.template_name,
                                                 e.template_digest, got))
        for bank in banks:
            table = pcrs[bank]
            table[e.pcr] = extend(table.get(e.pcr, bytes(DIGEST_SIZES[bank])),
                                  e.digest_for(bank), bank)
    return ListReport(fmt, count, violations, templates, mismatches, pcrs)


def replay(entries: Iterable[ImaEntry],
           banks: Sequence[str] = BANKS) -> dict[str, dict[int, bytes]]:
    """PCR values per bank and PCR index, from zero, as the TPM would hold them."""
    return _analyse_entries(entries, ListFormat("binary"), banks, check=False).pcrs


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
    u32 = _u32(dst)
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
    u32 = _u32(endian)
    return b"".join((u32.pack(e.pcr), digest, u32.pack(len(name)), name, u32.pack(len(data)),
                     data))


def encode_list(entries: Iterable[ImaEntry], endian: Endian = "<",
                digest_size: int = 20) -> bytes:
    return b"".join(encode_entry(e, endian, digest_size) for e in entries)


# ----------------------------------------------------------------------------- summary

@dataclass(frozen=True)
class ListSummary:
    """What ``kimagekit inspect`` shows of a list or kexec buffer."""

    kind: str
    endian: str
    bank: str
    digest_size: int
    size: int
    entries: int
    violations: int
    templates: dict[str, int]
    digest_mismatches: int
    first_mismatch: int | None
    pcrs: dict[str, dict[int, str]]
    kexec_header: dict[str, int] | None = None
    restore_error: str | None = None


def summarize(path: str | os.PathLike[str]) -> ListSummary:
    """Describe a list file: format, counts, digest recheck, and PCR replay for every bank."""
    with open_list(path) as (fmt, view):
        report = analyse(view, fmt, banks=BANKS)
        header = None
        restore_error = None
        if fmt.kind == "kexec-buffer":
            from kimagekit.errors import RuleError
            from kimagekit.ima_kexec import restore

            header = {"version": 1, "buffer_size": fmt.end or 0, "count": fmt.count or 0}
            try:
                restore(view, fmt.endian)
            except RuleError as err:
                restore_error = str(err)
        size = len(view)
    return ListSummary(
        kind=fmt.kind,
        endian="little" if fmt.endian == "<" else "big",
        bank=fmt.bank,
        digest_size=fmt.digest_size,
        size=size,
        entries=report.entries,
        violations=report.violations,
        templates=report.templates,
        digest_mismatches=len(report.mismatches),
        first_mismatch=report.mismatches[0].offset if report.mismatches else None,
        pcrs={b: {p: v.hex() for p, v in sorted(t.items())} for b, t in report.pcrs.items()},
        kexec_header=header,
        restore_error=restore_error,
    )
