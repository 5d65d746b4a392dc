"""IMA measurement list files: detect the form, stream the entries, recheck, replay, summarize.

The file-level layer on top: :mod:`kimagekit.ima_binary` (entry model, digests, scanner, writer),
:mod:`kimagekit.ima_ascii` and :mod:`kimagekit.ima_kexec` below it, :mod:`kimagekit.ima_replay`
for the PCR replay. The model's names are re-exported here for callers of the old single module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from kimagekit import ima_replay
from kimagekit.errors import ParseError, RuleError
from kimagekit.fileio import mapped
from kimagekit.formats import ima as schema
from kimagekit.formats.ima import BANK_BY_SIZE, DIGEST_SIZES, IMA_TEMPLATE, Endian
from kimagekit.ima_ascii import parse_ascii
from kimagekit.ima_binary import (
    BANKS,
    FMT,
    TEMPLATE_NAME_OK,
    DigestMismatch,
    FileDigest,
    ImaEntry,
    ImaField,
    Kind,
    ListFormat,
    encode_entry,
    encode_list,
    entry_header_codec,
    extend,
    ima_hash_input,
    iter_binary,
    kexec_header_codec,
    reencode_template_data,
    scan,
    template_digest,
    u32_codec,
)
from kimagekit.ima_kexec import refusal, restore
from kimagekit.ima_replay import Method

__all__ = [
    "BANKS", "BANK_BY_SIZE", "DIGEST_SIZES", "DigestMismatch", "Endian", "FileDigest", "ImaEntry",
    "ImaField", "Kind", "ListFormat", "ListReport", "ListSummary", "ParseError", "analyse",
    "detect", "detect_or_raise", "encode_entry", "encode_list", "extend", "iter_entries",
    "open_list", "read_entries", "reencode_template_data", "replay", "scan", "summarize",
    "template_digest",
]


@dataclass(frozen=True)
class ListReport:
    """What one pass over a list finds: counts, altered entries (template digest mismatches), and
    PCR values per bank (see :mod:`kimagekit.ima_replay` for what each bank is extended with)."""

    format: ListFormat
    entries: int
    violations: int
    templates: dict[str, int]
    mismatches: list[DigestMismatch]
    pcrs: dict[str, dict[int, bytes]] = field(default_factory=dict)
    #: The legacy replay of the non-SHA-1 banks with the zero-padded SHA-1 template digest.
    padded: dict[str, dict[int, bytes]] = field(default_factory=dict)
    method: Method = "recomputed"
    replayed: ima_replay.Replayed | None = None


# ----------------------------------------------------------------------------- detection

_ASCII_LINE = re.compile(rb"\s*\d{1,2} (?:([a-z0-9_]+):)?([0-9a-fA-F]{40,128}) \S+")


def _plausible(buf: bytes | memoryview, pos: int, endian: Endian, ds: int, size: int,
               entries: int = 3) -> bool:
    """Do up to ``entries`` entries at ``pos`` parse with this byte order and digest size?

    Once the first entry has parsed whole, later trouble (truncation, a bad length) still says
    yes: the file is a list, and the scanner will name where it breaks.
    """
    hdr, u32 = entry_header_codec(endian, ds), u32_codec(endian)
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
        if not TEMPLATE_NAME_OK.match(name):
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
        k = kexec_header_codec(endian)
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
    m = _ASCII_LINE.match(bytes(head[:300]))
    if m:
        # The bank is the first digest's: its algo prefix, else its size.
        algo, digest = m.group(1), m.group(2)
        size = DIGEST_SIZES.get(algo.decode(), len(digest) // 2) if algo else len(digest) // 2
        return ListFormat("ascii", "<", size)
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


# ----------------------------------------------------------------------------- files

def iter_entries(buf: bytes | memoryview, fmt: ListFormat | None = None) -> Iterator[ImaEntry]:
    """Stream the entries of a list held in ``buf`` (binary, kexec buffer or ASCII)."""
    if fmt is None:
        fmt = detect_or_raise(buf)
    if fmt.kind == "ascii":
        return parse_ascii(buf)
    return iter_binary(buf, fmt)


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
            *, banks: Sequence[str] = (), check: bool = True, method: Method = "recomputed",
            expected: Mapping[str, Mapping[int, bytes]] | None = None,
            legacy: bool = False, trace: bool = False,
            progress: Callable[[int], None] | None = None) -> ListReport:
    """One pass: recheck every template digest against the stored one (``check``), count
    violations and templates, and replay ``banks`` (``method``: see :mod:`kimagekit.ima_replay`;
    ``ima replay`` and ``inspect`` use ``per-bank``, the library keeps ``recomputed`` as its
    default for its callers), noting where each ``expected`` value is reached; ``legacy`` adds
    the ``sha1-padded`` replay of the non-SHA-1 banks (``ListReport.padded``); ``trace`` keeps
    every entry's PCR values (``ListReport.replayed.trace``); ``progress`` is called with each
    entry's offset (the CLI draws a bar from it)."""
    if isinstance(entries_or_buf, bytes | memoryview):
        buf = entries_or_buf
        if fmt is None:
            fmt = detect_or_raise(buf)
        records = (_binary_records(buf, fmt) if fmt.kind != "ascii"
                   else _entry_records(parse_ascii(buf)))
    else:
        fmt = fmt or ListFormat("binary")
        records = _entry_records(entries_or_buf)
    if progress is not None:
        records = _reporting(records, progress)
    r = ima_replay.run(records, fmt, banks, check=check, method=method, expected=expected,
                       legacy=legacy, trace=trace)
    return ListReport(fmt, r.entries, r.violations, r.templates, r.mismatches, r.pcrs, r.padded,
                      method, r)


def _reporting(records: Iterable[ima_replay.Record],
               progress: Callable[[int], None]) -> Iterator[ima_replay.Record]:
    for rec in records:
        progress(rec[1])
        yield rec


def _binary_records(buf: bytes | memoryview, fmt: ListFormat) -> Iterator[ima_replay.Record]:
    for index, offset, pcr, digest, name, start, end in scan(buf, fmt):
        data = buf[start:end]
        yield (index, offset, pcr, digest, name,
               data if name != "ima" else ima_hash_input(data), data)


def _entry_records(entries: Iterable[ImaEntry]) -> Iterator[ima_replay.Record]:
    for e in entries:
        data = e.template_data
        yield (e.index, e.offset, e.pcr, e.template_digest, e.template_name,
               data if e.template_name != "ima" else ima_hash_input(data), data)


def replay(entries: Iterable[ImaEntry], banks: Sequence[str] = BANKS,
           method: Method = "recomputed") -> dict[str, dict[int, bytes]]:
    """PCR values per bank and PCR index, from zero, as the TPM would hold them."""
    return analyse(entries, banks=banks, check=False, method=method).pcrs


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
    damage: tuple[str, ...] = ()  # one line per problem; ``inspect`` exits 1 when any


def summarize(path: str | os.PathLike[str]) -> ListSummary:
    """Describe a list file: format, counts, digest recheck, and PCR replay for every bank."""
    with open_list(path) as (fmt, view):
        report = analyse(view, fmt, banks=BANKS, method="per-bank")
        header = None
        restore_error = None
        if fmt.kind == "kexec-buffer":
            header = {"version": 1, "buffer_size": fmt.end or 0, "count": fmt.count or 0}
            try:
                restore(view, fmt.endian)
            except RuleError as err:
                restore_error = refusal(err)
        size = len(view)
    damage: list[str] = []
    if report.mismatches:
        first = report.mismatches[0]
        named = f"entry {first.index}" + (f" ({first.path})" if first.path else "")
        damage.append(f"{len(report.mismatches)} template digest(s) do not match their entry; "
                      f"the first is {named} at offset {first.offset:#x}")
    if restore_error is not None:
        damage.append(f"the next kernel would refuse this buffer: {restore_error}")
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
        damage=tuple(damage),
    )
