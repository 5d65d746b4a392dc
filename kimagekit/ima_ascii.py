"""The ASCII measurement list: render it as ``ascii_runtime_measurements`` does, and parse it back.

A line is ``%2d`` PCR, a space, the template digest in hex, a space, the template name, then for
each field one space and the field's text (nothing after the space when the field is empty).
Parsing accepts the kernel's lines and the variants keylime and ima-evm-utils write (a digest with
an ``algo:`` prefix, trailing spaces); fields are rebuilt as bytes so the digest can be rechecked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from kimagekit.errors import ParseError
from kimagekit.formats.ima import BANK_BY_SIZE, DIGEST_SIZES, Endian
from kimagekit.ima_binary import ImaEntry, Releaser, u32_codec
from kimagekit.ima_fields import field_from_ascii, template_field_ids

__all__ = ["FMT", "MAX_LINE", "entry_lines", "parse_ascii", "render", "render_line"]

FMT = "ima-ascii"
_LINE = re.compile(r"\s*(\d+) (?:([a-z0-9]+):)?([0-9a-fA-F]+) (\S+)(?: (.*))?\Z")


def render_line(e: ImaEntry) -> str:
    """One entry exactly as the kernel's ASCII list prints it, newline included."""
    parts = [f"{e.pcr:2d} {e.template_digest.hex()} {e.template_name}"]
    for f in e.fields:
        parts.append(" " + f.shown if f.data else " ")
    parts.append("\n")
    return "".join(parts)


def render(entries: Iterable[ImaEntry]) -> Iterator[str]:
    for e in entries:
        yield render_line(e)


def parse_ascii(data: bytes | memoryview, *, endian: Endian = "<") -> Iterator[ImaEntry]:
    """Entries from ASCII lines, streamed (``data`` may be a whole mapped file). Field bytes are
    rebuilt with their lengths in ``endian``: the ASCII list does not say which byte order the
    kernel hashed them in; little-endian is the canonical one."""
    for index, (offset, line) in enumerate(entry_lines(data)):
        yield _parse_line(line.decode("latin-1"), index, offset, endian)


def entry_lines(data: bytes | memoryview) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of each line that is an entry (blank lines skipped, no CR), in the order
    :func:`parse_ascii` reads them: the n-th is entry n's text."""
    for offset, raw in _lines(data):
        line = raw.rstrip(b"\r")
        if line.strip():
            yield offset, line


#: The longest line accepted. The largest field a kernel measures from user space is a key
#: payload in an ``ima-buf`` entry (``add_key`` takes less than 1 MiB), printed as hex (2 MiB);
#: with two signatures of at most ``XATTR_SIZE_MAX`` (64 KiB, 128 KiB as hex each) and the fixed
#: fields, 4 MiB bounds every line a kernel writes, and bounds what a line can make us hold.
MAX_LINE = 4 << 20


def _lines(data: bytes | memoryview, chunk: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """(offset, line without its newline), reading ``chunk`` bytes at a time: linear in the
    input, and never holding more than ``chunk`` plus one line of at most :data:`MAX_LINE`."""
    end, pos, start = len(data), 0, 0
    pending = bytearray()  # the start of a line that runs past the current block
    release = Releaser(data)
    while pos < end:
        if pos >= release.at:
            release(pos)
        block = bytes(data[pos:pos + chunk])
        pos += len(block)
        i = 0
        while True:
            nl = block.find(b"\n", i)
            if nl < 0:
                pending += block[i:]
                _check_length(len(pending), start)
                break
            if pending:
                pending += block[i:nl]
                line = bytes(pending)
                pending.clear()
            else:
                line = block[i:nl]
            _check_length(len(line), start)
            yield start, line
            start += len(line) + 1
            i = nl + 1
    if pending:
        yield start, bytes(pending)


def _check_length(size: int, offset: int) -> None:
    if size > MAX_LINE:
        raise ParseError(f"line longer than {MAX_LINE} bytes (MAX_LINE): no kernel writes one",
                         fmt=FMT, field="line", offset=offset)


def _parse_line(text: str, index: int, offset: int, endian: Endian) -> ImaEntry:
    where = f"line[{index}]"
    m = _LINE.match(text)
    if m is None:
        raise ParseError(f"not an IMA ASCII line: {text[:60]!r}", fmt=FMT, field=where,
                         offset=offset)
    pcr_s, algo, digest_hex, name, rest = m.groups()
    if len(digest_hex) % 2 or len(digest_hex) // 2 not in BANK_BY_SIZE:
        raise ParseError(f"template digest has {len(digest_hex)} hex digits",
                         fmt=FMT, field=f"{where}.template_digest", offset=offset)
    if algo and DIGEST_SIZES.get(algo) != len(digest_hex) // 2:
        raise ParseError(f"template digest prefix {algo!r} does not match its "
                         f"{len(digest_hex) // 2} bytes", fmt=FMT,
                         field=f"{where}.template_digest", offset=offset)
    ids = template_field_ids(name)
    if ids is None:
        raise ParseError(f"unknown template {name!r}: its fields cannot be read from text",
                         fmt=FMT, field=f"{where}.template_name", offset=offset)
    tokens = (rest if rest is not None else "").split(" ")
    if len(tokens) < len(ids):
        tokens += [""] * (len(ids) - len(tokens))
    if len(tokens) > len(ids):
        tokens = _merge_name(tokens, ids)
    try:
        datas = [field_from_ascii(fid, tok, endian) for fid, tok in zip(ids, tokens, strict=True)]
    except ValueError as exc:
        raise ParseError(f"bad field text: {exc}", fmt=FMT, field=f"{where}.template_data",
                         offset=offset) from exc
    if name == "ima":
        d, n = datas[0], datas[1].rstrip(b"\0")
        if len(d) != 20:
            raise ParseError(f"ima template digest has {len(d)} bytes, 20 expected", fmt=FMT,
                             field=f"{where}.template_data.d", offset=offset)
        data = d + u32_codec(endian).pack(len(n)) + n
    else:
        u32 = u32_codec(endian)
        data = b"".join(u32.pack(len(x)) + x for x in datas)
    return ImaEntry(int(pcr_s), bytes.fromhex(digest_hex), name, data, endian, index, offset)


def _merge_name(tokens: list[str], ids: tuple[str, ...]) -> list[str]:
    """Names from kernels that did not replace spaces split into several tokens: give the extra
    tokens back to the (first) name field."""
    extra = len(tokens) - len(ids)
    at = next((i for i, fid in enumerate(ids) if fid in ("n", "n-ng")), len(ids) - 1)
    return [*tokens[:at], " ".join(tokens[at:at + extra + 1]), *tokens[at + extra + 1:]]
