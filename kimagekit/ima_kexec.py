"""The IMA kexec hand-over buffer: build it as ``ima_dump_measurement_list`` does, size its segment
as ``ima_add_kexec_buffer`` does, and check it with the rules ``ima_restore_measurement_list``
applies in the next kernel.

Two forms: the upstream one (``struct ima_kexec_hdr`` then classic 20-byte-digest entries) and the
header-less list of the 2016 hand-over series.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kimagekit.errors import KimageError, RuleError
from kimagekit.formats import ima as schema
from kimagekit.formats.ima import Endian
from kimagekit.ima_binary import (
    ImaEntry,
    ListFormat,
    encode_entry,
    iter_binary,
    kexec_header_codec,
    u32_codec,
)
from kimagekit.ima_fields import template_field_ids, walk_fields

__all__ = ["FMT", "HDR_SIZE", "RestoreStopped", "RestoredList", "append", "build_buffer",
           "check_segment_size", "fill_at_execute", "refusal", "restore", "segment_size"]

FMT = "ima-kexec-buffer"
HDR_SIZE = 24  # sizeof(struct ima_kexec_hdr)


def build_buffer(entries: Iterable[ImaEntry], *, endian: Endian = "<",
                 header: bool = True) -> bytes:
    """The buffer the loading kernel hands over: header (unless the 2016 header-less form) and the
    entries with their SHA-1 template digests, in ``endian`` (``<`` for canonical format)."""
    body = bytearray()
    count = 0
    for e in entries:
        body += encode_entry(e, endian, schema.TPM_DIGEST_SIZE)
        count += 1
    if not header:
        return bytes(body)
    return _header(endian, HDR_SIZE + len(body), count) + bytes(body)


def _header(endian: Endian, buffer_size: int, count: int) -> bytes:
    hdr: bytes = schema.kexec_hdr(endian).build(
        {"version": schema.IMA_KEXEC_HDR_VERSION, "_reserved0": 0, "_reserved1": 0,
         "buffer_size": buffer_size, "count": count})
    return hdr


def segment_size(buffer_size: int, *, page_size: int = 4096, extra: int | None = None) -> int:
    """memsz of the hand-over segment (``ima_add_kexec_buffer``): ``ALIGN(list + extra,
    PAGE_SIZE)``, ``buffer_size`` being the list with its header (``ima_get_binary_runtime_size``)
    and ``extra`` the spare room for measurements taken after the load: half a page before 6.15,
    ``CONFIG_IMA_KEXEC_EXTRA_MEMORY_KB`` * 1024 since, where a value <= 0 (or None: no option)
    still means half a page."""
    room = page_size // 2 if extra is None or extra <= 0 else extra
    total = buffer_size + room
    return (total + page_size - 1) // page_size * page_size


def check_segment_size(memsz: int, ram_bytes: int, page_size: int) -> None:
    """Refuse what ``ima_add_kexec_buffer`` refuses ("Binary measurement list too large", and
    then adds no segment): a segment of more pages than half of RAM's. Offline, RAM is the
    ranges given; the kernel counts its managed pages (``totalram_pages``), a little fewer."""
    ram_pages = ram_bytes // page_size
    if memsz // page_size > ram_pages // 2:
        raise RuleError(f"IMA segment of {memsz:#x} bytes ({memsz // page_size} pages) is more "
                        f"than half of the {ram_pages} RAM pages: the loading kernel adds no "
                        "hand-over (\"Binary measurement list too large\")", fmt=FMT,
                        field="segment.memsz")


def fill_at_execute(entries: Iterable[ImaEntry], memsz: int, endian: Endian = "<") -> bytes:
    """What ``ima_update_kexec_buffer`` (6.15+, at reboot) copies into the hand-over segment of
    ``memsz`` bytes: the list as it is then, as :func:`build_buffer` encodes it, cut to fit.

    ``ima_dump_measurement_list`` starts an entry while the byte count is below the segment
    size and counts it; bytes past the end are dropped one by one (``ima_putc`` ->
    ``seq_putc``). An overflowing list is so cut at ``memsz``, its last entry maybe partial
    but counted in the header, whose ``buffer_size`` is then ``memsz``."""
    body = bytearray()
    count = 0
    for e in entries:
        if HDR_SIZE + len(body) >= memsz:
            break
        body += encode_entry(e, endian, schema.TPM_DIGEST_SIZE)
        count += 1
    used = min(HDR_SIZE + len(body), memsz)
    return _header(endian, used, count) + bytes(body[:used - HDR_SIZE])


class RestoreStopped(RuleError):
    """An entry the restore rules refuse. ``ima_restore_measurement_list`` stops there without
    undoing: the next kernel keeps the ``kept`` entries before it (seen on Debian 6.1, 6.12 and
    7.2: tests/test_realkernel_load.py), and logs that the restore failed."""

    def __init__(self, message: str, *, kept: int, field: str | None, offset: int | None,
                 fmt: str = FMT) -> None:
        super().__init__(message, fmt=fmt, field=field, offset=offset)
        self.kept = kept


@dataclass(frozen=True)
class RestoredList:
    """What the next kernel would take from the buffer."""

    version: int
    buffer_size: int
    count: int
    entries: list[ImaEntry]


def refusal(err: KimageError) -> str:
    """What a restore refusal means for the next kernel, in one line: the rule, and for an
    entry refused mid-list, the entries it keeps before it."""
    if isinstance(err, RestoreStopped) and err.kept:
        return f"{err} (it keeps the {err.kept} entries before it)"
    return str(err)


def _stop(message: str, entries: list[ImaEntry], field: str, offset: int) -> RestoreStopped:
    return RestoreStopped(message, kept=len(entries), field=field, offset=offset)


def restore(buf: bytes | memoryview, endian: Endian = "<") -> RestoredList:
    """Walk ``buf`` exactly as ``ima_restore_measurement_list`` does and refuse what it refuses.

    Differences the kernel does not make but an offline tool must: ``buffer_size`` may not point
    past the bytes we have (the kernel trusts it), and each refusal says why and where.
    """
    k = kexec_header_codec(endian)
    if len(buf) < k.size:
        raise RuleError(f"buffer of {len(buf)} bytes is shorter than the {k.size}-byte header",
                        fmt=FMT, field="header", offset=0)
    version, _, _, buffer_size, count = k.unpack_from(buf, 0)
    if version != schema.IMA_KEXEC_HDR_VERSION:
        raise RuleError(f"version {version} is not 1: incompatible measurement list",
                        fmt=FMT, field="header.version", offset=0)
    if count > 2**64 - 2:
        raise RuleError("count is too large", fmt=FMT, field="header.count", offset=16)
    if buffer_size > len(buf):
        raise RuleError(f"buffer_size {buffer_size} exceeds the {len(buf)} bytes of the buffer",
                        fmt=FMT, field="header.buffer_size", offset=8)
    u32 = u32_codec(endian)
    end = buffer_size
    pos = k.size
    entries: list[ImaEntry] = []
    n = 0
    while pos < end and n < count:
        n += 1
        last = n == count
        where = f"entry[{n - 1}]"
        start = pos
        # entry header: PCR and digest have fixed sizes, name and data are length-prefixed;
        # like ima_parse_buf, count the fields that fit and stop at the first that does not.
        found = 0
        lens: list[int] = []
        for fixed in (4, schema.TPM_DIGEST_SIZE, None, None):
            if fixed is None:
                if pos + 4 > end:
                    break
                (size,) = u32.unpack_from(buf, pos)
                if size > end - pos - 4:
                    break
                lens.append(size)
                pos += 4
            else:
                size = fixed
                if pos + size > end:
                    break
            pos += size
            found += 1
        if found != 4:
            raise _stop(f"entry header: nr of fields mismatch: expected 4, found {found}",
                        entries, where, start)
        if last and pos != end:
            raise _stop(f"last entry (count {count}) ends at {pos:#x}, buffer_size is {end:#x}",
                        entries, where, start)
        name_len, data_len = lens
        name_at = start + 4 + schema.TPM_DIGEST_SIZE + 4
        name_b = bytes(buf[name_at:name_at + name_len])
        if name_len >= schema.MAX_TEMPLATE_NAME_LEN:
            raise _stop(f"template name of {name_len} bytes is too long "
                        f"(at most {schema.MAX_TEMPLATE_NAME_LEN - 1})", entries,
                        f"{where}.template_name", name_at)
        name = name_b.split(b"\0", 1)[0].decode("latin-1")
        if name == "ima":
            raise _stop('template "ima" cannot be restored', entries, f"{where}.template_name",
                        name_at)
        ids = template_field_ids(name)
        if ids is None:
            raise _stop(f"template {name!r} is neither built in nor a list of known fields "
                        f"(at most {schema.IMA_TEMPLATE_NUM_FIELDS_MAX})", entries,
                        f"{where}.template_name", name_at)
        data_at = name_at + name_len + 4
        data = bytes(buf[data_at:data_at + data_len])
        try:
            chunks = walk_fields(data, endian, base=data_at, field=f"{where}.template_data")
        except Exception as exc:
            raise _stop(f"template data does not split into {len(ids)} fields", entries,
                        f"{where}.template_data", data_at) from exc
        if len(chunks) != len(ids):
            raise _stop(f"template data holds {len(chunks)} fields, template {name!r} "
                        f"has {len(ids)}", entries, f"{where}.template_data", data_at)
        digest = bytes(buf[start + 4:start + 4 + schema.TPM_DIGEST_SIZE])
        (pcr,) = u32.unpack_from(buf, start)
        entries.append(ImaEntry(pcr, digest, name, data, endian, n - 1, start))
    if pos < end:
        # only a count of 0 gets here (any other stops at its last entry, checked above): the
        # kernel's loop takes nothing and reports nothing, and the list is lost on the way
        raise RuleError(f"count {count}: the entries from {pos:#x} to {end:#x} would not be "
                        "restored (the kernel takes the buffer and drops them)", fmt=FMT,
                        field="header.count", offset=16)
    return RestoredList(version, buffer_size, count, entries)


def append(buf: bytes, new: Sequence[ImaEntry], fmt: ListFormat) -> bytes:
    """``buf`` (a binary list or kexec buffer) with ``new`` entries added at the end, in its own
    encoding; a kexec header gets its ``buffer_size`` and ``count`` updated."""
    body = b"".join(encode_entry(e, fmt.endian, fmt.digest_size) for e in new)
    if fmt.kind != "kexec-buffer":
        return buf + body
    end = fmt.end if fmt.end is not None else len(buf)
    count = sum(1 for _ in iter_binary(buf, fmt)) + len(new)
    entries = buf[HDR_SIZE:end] + body
    return _header(fmt.endian, HDR_SIZE + len(entries), count) + entries
