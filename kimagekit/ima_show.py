"""``ima show --ascii`` and ``--json`` at scanning speed: each entry rendered straight from the
scanner's record (no :class:`~kimagekit.ima_binary.ImaEntry`, no field objects, no dict per
entry), and the text handed out in blocks of many entries.

The text is the same, byte for byte, as rendering the entries one by one
(:func:`kimagekit.ima_ascii.render_line`, ``json.dumps`` of the CLI's entry dict):
``tests/test_ima_show.py`` holds both paths to that. When an entry does not parse, the block
holding the entries before it is handed out first, then the error is raised, so the output up to
the error is what it always was.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _quote  # the escaper json.dumps uses

from kimagekit.errors import UsageError
from kimagekit.formats.ima import BANK_BY_SIZE, FIELD_FORMATS, Endian
from kimagekit.ima_ascii import parse_ascii
from kimagekit.ima_binary import ImaEntry, ListFormat, scan, template_digest, u32_codec
from kimagekit.ima_fields import digest_head, shown_parts, split_pairs, template_field_ids

__all__ = [
    "BLOCK", "Record", "Selection", "ascii_lines", "json_entries", "parse_index", "record_path",
    "records", "select",
]

#: Entries per block handed out: large enough that writing costs one call per block.
BLOCK = 2048

# index, offset, pcr, template digest, template name, template data, where the data starts
Record = tuple[int, int, int, bytes, str, bytes, int]


def records(buf: bytes | memoryview, fmt: ListFormat) -> Iterator[Record]:
    """The list's entries as records: from the scanner, or from the parsed ASCII lines."""
    if fmt.kind == "ascii":
        return _from_entries(parse_ascii(buf))
    return _from_scan(buf, fmt)


def _from_scan(buf: bytes | memoryview, fmt: ListFormat) -> Iterator[Record]:
    for index, offset, pcr, digest, name, start, end in scan(buf, fmt):
        yield index, offset, pcr, digest, name, bytes(buf[start:end]), start


def _from_entries(entries: Iterable[ImaEntry]) -> Iterator[Record]:
    for e in entries:
        yield (e.index, e.offset, e.pcr, e.template_digest, e.template_name, e.template_data,
               e.data_offset)


@dataclass(frozen=True)
class Selection:
    """Which entries ``ima show`` prints: every condition set must hold (they combine with AND).
    ``start``/``stop`` are entry indexes, 0-based, ``stop`` excluded (a Python slice)."""

    path_prefix: str | None = None
    template: str | None = None
    pcr: int | None = None
    start: int = 0
    stop: int | None = None
    violations: bool = False

    @property
    def active(self) -> bool:
        return self != Selection()


_INDEX = re.compile(r"(\d*):(\d*)\Z")


def parse_index(text: str) -> tuple[int, int | None]:
    """``A:B`` -> (A, B): entries A to B-1, 0-based; either side may be left out (``:B`` from
    the first, ``A:`` to the last)."""
    m = _INDEX.match(text.strip())
    if m is None:
        raise UsageError(f"--index {text!r}: use A:B (0-based, B excluded), e.g. 0:10, 5:, :20")
    start = int(m[1]) if m[1] else 0
    stop = int(m[2]) if m[2] else None
    if stop is not None and stop < start:
        raise UsageError(f"--index {text!r}: the end {stop} is before the start {start}")
    return start, stop


def record_path(rec: Record, endian: Endian) -> str | None:
    """The file name an entry measured (its first ``n``/``n-ng`` field), or None."""
    index, _offset, _pcr, _digest, name, data, base = rec
    for fid, chunk in _pairs(name, data, endian, index, base):
        if fid in ("n", "n-ng"):
            cut = chunk.find(b"\0")
            return (chunk if cut < 0 else chunk[:cut]).decode("latin-1")
    return None


def select(recs: Iterable[Record], sel: Selection, endian: Endian) -> Iterator[Record]:
    """The records ``sel`` picks; past ``sel.stop`` nothing more is read."""
    if not sel.active:
        yield from recs
        return
    for rec in recs:
        index, _offset, pcr, digest, name, _data, _base = rec
        if sel.stop is not None and index >= sel.stop:
            return
        if index < sel.start:
            continue
        if sel.template is not None and name != sel.template:
            continue
        if sel.pcr is not None and pcr != sel.pcr:
            continue
        if sel.violations and digest.count(0) != len(digest):
            continue
        if sel.path_prefix is not None:
            path = record_path(rec, endian)
            if path is None or not path.startswith(sel.path_prefix):
                continue
        yield rec


def _pairs(name: str, data: bytes, endian: Endian, index: int,
           base: int) -> list[tuple[str, bytes]]:
    """:func:`~kimagekit.ima_fields.split_pairs`, with a quick walk for a known template's
    fields: when it does not end exactly, the full split names the error."""
    ids = template_field_ids(name) if name != "ima" else None
    if ids is not None:
        unpack = u32_codec(endian).unpack_from
        pos, end = 0, len(data)
        out = []
        for fid in ids:
            if end - pos < 4:
                break
            (n,) = unpack(data, pos)
            pos += 4
            if n > end - pos:
                break
            out.append((fid, data[pos:pos + n]))
            pos += n
        else:
            if pos == end:
                return out
    return split_pairs(name, data, endian, base=base, field=f"entry[{index}].template_data")


def ascii_lines(recs: Iterable[Record], endian: Endian) -> Iterator[str]:
    """The kernel's ASCII list, in blocks of lines."""
    return _in_blocks(_ascii_line(rec, endian) for rec in recs)


def _ascii_line(rec: Record, endian: Endian) -> str:
    index, _offset, pcr, digest, name, data, base = rec
    parts = [f"{pcr:2d} {digest.hex()} {name}"]
    for fid, chunk in _pairs(name, data, endian, index, base):
        parts.append(" " + shown_parts(fid, chunk, endian)[0] if chunk else " ")
    parts.append("\n")
    return "".join(parts)


def _in_blocks(items: Iterator[str]) -> Iterator[str]:
    """``items`` joined BLOCK at a time; on an error, what came before it is yielded first."""
    block: list[str] = []
    try:
        for item in items:
            block.append(item)
            if len(block) >= BLOCK:
                yield "".join(block)
                block.clear()
    except Exception:
        if block:
            yield "".join(block)
        raise
    if block:
        yield "".join(block)


def json_entries(recs: Iterable[Record], endian: Endian) -> Iterator[str]:
    """Each entry as ``json.dumps`` writes the CLI's entry dict, the first preceded by a newline
    and every other by a comma and a newline, in blocks."""
    return _in_blocks(_json_entries(recs, endian))


def _json_entries(recs: Iterable[Record], endian: Endian) -> Iterator[str]:
    quoted: dict[str, str] = {}  # template names and field ids, quoted once
    algos: dict[str, str] = {}  # the "algo" member of each digest algorithm
    sep = "\n"
    for index, offset, pcr, digest, name, data, base in recs:
        violation = digest.count(0) == len(digest)
        own = BANK_BY_SIZE.get(len(digest))
        if violation or own is None:
            ok = "null"
        else:
            ok = "true" if template_digest(name, data, own, endian) == digest else "false"
        fields = []
        path = "null"
        for fid, chunk in _pairs(name, data, endian, index, base):
            qid = quoted.get(fid) or _remember(quoted, fid, _quote(fid))
            hexed = chunk.hex()
            # the two kinds every list is made of, inline; shown_parts for the rest
            kind = FIELD_FORMATS.get(fid)
            if kind == "string":
                cut = chunk.find(b"\0")
                shown = (chunk if cut < 0 else chunk[:cut]).decode("latin-1")
                if path == "null" and fid in ("n", "n-ng"):
                    path = _quote(shown)
                fields.append(f'{{"id": {qid}, "length": {len(chunk)}, "data": "{hexed}", '
                              f'"shown": {_quote(shown)}}}')
                continue
            if kind in {"digest-algo", "digest-type-algo"}:
                cut = chunk.find(b"\0")
                if cut == 0 or (cut > 0 and chunk[cut - 1] == 0x3A):
                    head, algo = digest_head(chunk[:cut])
                    dhex = hexed[2 * cut + 2:]
                    qalgo = "" if not algo else (algos.get(algo) or _remember(
                        algos, algo, ', "algo": ' + _quote(algo)))
                    fields.append(f'{{"id": {qid}, "length": {len(chunk)}, '
                                  f'"data": "{hexed}", "shown": {_quote(head + dhex)}'
                                  f'{qalgo}, "digest": "{dhex}"}}')
                    continue
            shown, algo, fdigest = shown_parts(fid, chunk, endian)
            if fdigest is None:
                fields.append(f'{{"id": {qid}, "length": {len(chunk)}, "data": "{hexed}", '
                              f'"shown": {_quote(shown)}}}')
                continue
            qalgo = "" if not algo else (algos.get(algo) or _remember(
                algos, algo, ', "algo": ' + _quote(algo)))
            # the digest is the field's last bytes
            fields.append(f'{{"id": {qid}, "length": {len(chunk)}, "data": "{hexed}", '
                          f'"shown": {_quote(shown)}{qalgo}, '
                          f'"digest": "{hexed[len(hexed) - 2 * len(fdigest):]}"}}')
        qname = quoted.get(name) or _remember(quoted, name, _quote(name))
        yield (f'{sep}{{"index": {index}, "offset": {offset}, "pcr": {pcr}, '
               f'"template_digest": "{digest.hex()}", "template_name": {qname}, '
               f'"violation": {"true" if violation else "false"}, "digest_ok": {ok}, '
               f'"path": {path}, "fields": [{", ".join(fields)}]}}')
        sep = ",\n"


def _remember(memo: dict[str, str], key: str, value: str) -> str:
    """``memo[key] = value`` while the memo is small (a hostile list may name many templates)."""
    if len(memo) < 256:
        memo[key] = value
    return value
