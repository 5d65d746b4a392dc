"""IMA template fields: splitting template data, and each field's ASCII form both ways.

The ASCII forms follow the kernel's show functions (``ima_template_lib.c``): digests print as
lowercase hex after their ``algo:`` (or ``type:algo:``) prefix, strings up to their NUL, binary
fields as hex, uid/gid/mode as decimal in the list's byte order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache, lru_cache

from kimagekit.errors import ParseError
from kimagekit.formats.ima import (
    BUILTIN_TEMPLATES,
    FIELD_FORMATS,
    IMA_TEMPLATE_FIELD_ID_MAX_LEN,
    IMA_TEMPLATE_NUM_FIELDS_MAX,
    TPM_DIGEST_SIZE,
    Endian,
    fixed_prefix,
    template_field,
)
from kimagekit.hexrepr import hex_repr

__all__ = [
    "FILE_DIGEST_FIELDS", "FileDigest", "ImaField", "digest_head", "field_from_ascii",
    "file_digest_of", "make_field", "shown_parts", "split_fields", "split_pairs",
    "template_field_ids", "walk_fields",
]

_UINT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


@dataclass(frozen=True, slots=True)
class ImaField:
    """One template field: its id (``?`` when the template does not name it), raw bytes, the text
    the kernel's ASCII list shows for it, and for digest fields the algorithm and digest."""

    id: str
    data: bytes
    shown: str
    algo: str | None = None
    digest: bytes | None = None

    def __repr__(self) -> str:
        return hex_repr(self)


#: The fields that hold the measured file's digest, in the order a template would carry them.
FILE_DIGEST_FIELDS = ("d-ng", "d-ngv2", "d")


@dataclass(frozen=True, slots=True)
class FileDigest:
    """The measured file's digest (an entry's ``d-ng``/``d-ngv2``/``d`` field): the algorithm
    it names, the digest bytes, and ``d-ngv2``'s type (``ima`` or ``verity``). The ``d`` field
    (the ``ima`` template) names no algorithm: 20 bytes are SHA-1 and 16 MD5, the only two the
    kernel puts there; another size gives ``algo`` None."""

    algo: str | None
    digest: bytes
    type: str | None = None

    @property
    def hex(self) -> str:
        return self.digest.hex()

    def __str__(self) -> str:
        """As keylime policies and the ASCII list write it: ``algo:hex`` (bare hex without an
        algorithm)."""
        return f"{self.algo}:{self.hex}" if self.algo else self.hex

    def __repr__(self) -> str:
        return hex_repr(self)


def file_digest_of(fields: tuple[ImaField, ...]) -> FileDigest | None:
    """The file digest among ``fields``, or None when the template records none."""
    for f in fields:
        if f.id not in FILE_DIGEST_FIELDS:
            continue
        if f.id == "d":
            algo = {20: "sha1", 16: "md5"}.get(len(f.data))
            return FileDigest(algo, f.data)
        if f.digest is None:  # a malformed prefix: shown as hex, no digest to give
            return None
        head = f.shown[:len(f.shown) - 2 * len(f.digest)].rstrip(":").split(":")
        kind = head[0] if f.id == "d-ngv2" and len(head) == 2 else None
        return FileDigest(f.algo, f.digest, kind)
    return None


@lru_cache(maxsize=256)  # a list names a handful of templates; a hostile one cannot grow it
def template_field_ids(name: str) -> tuple[str, ...] | None:
    """The field ids of template ``name``: a built-in, or a ``|`` list of known ids (as the kernel
    accepts it on restore); ``None`` for a template the kernel would not know."""
    if name in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[name]
    ids = tuple(name.split("|"))
    if len(ids) > IMA_TEMPLATE_NUM_FIELDS_MAX:
        return None
    if all(0 < len(i) <= IMA_TEMPLATE_FIELD_ID_MAX_LEN and i in FIELD_FORMATS for i in ids):
        return ids
    return None


def split_fields(name: str, data: bytes, endian: Endian, *, base: int = 0,
                 field: str = "template_data") -> tuple[ImaField, ...]:
    """Split template data into fields. Known templates must split into exactly their fields and
    end exactly (the kernel's ENFORCE_FIELDS|ENFORCE_BUFEND); others are walked generically."""
    return tuple(make_field(fid, chunk, endian)
                 for fid, chunk in split_pairs(name, data, endian, base=base, field=field))


def split_pairs(name: str, data: bytes, endian: Endian, *, base: int = 0,
                field: str = "template_data") -> list[tuple[str, bytes]]:
    """(field id, field bytes) of each field, as :func:`split_fields` splits them."""
    if name == "ima":
        # The scanner has checked the layout: 20-byte digest, u32 length, name without NUL.
        return [("d", data[:TPM_DIGEST_SIZE]), ("n", data[TPM_DIGEST_SIZE + 4:])]
    ids = template_field_ids(name)
    raw = walk_fields(data, endian, base=base, field=field)
    if ids is None:
        return [("?", chunk) for chunk in raw]
    if len(raw) != len(ids):
        raise ParseError(f"template {name!r} has {len(ids)} fields, the data holds {len(raw)}",
                         fmt="ima-list", field=field, offset=base)
    return list(zip(ids, raw, strict=True))


@cache
def _u32(endian: Endian) -> struct.Struct:
    return fixed_prefix(template_field(endian), endian)


def walk_fields(data: bytes, endian: Endian, *, base: int = 0,
                field: str = "template_data") -> list[bytes]:
    """Length-prefixed fields until the data ends exactly; never reads past it."""
    u32 = _u32(endian)
    size, unpack = u32.size, u32.unpack_from
    out: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < size:
            raise ParseError(f"truncated field length: {end - pos} bytes left, 4 needed",
                             fmt="ima-list", field=f"{field}.field[{len(out)}].len",
                             offset=base + pos)
        (length,) = unpack(data, pos)
        if length > end - pos - size:
            raise ParseError(f"field length {length} exceeds the {end - pos - size} bytes left",
                             fmt="ima-list", field=f"{field}.field[{len(out)}].len",
                             offset=base + pos)
        pos += size
        out.append(bytes(data[pos:pos + length]))
        pos += length
    return out


def make_field(fid: str, data: bytes, endian: Endian) -> ImaField:
    return ImaField(fid, data, *shown_parts(fid, data, endian))


def shown_parts(fid: str, data: bytes, endian: Endian) -> tuple[str, str | None, bytes | None]:
    """(the text the ASCII list shows, the digest's algorithm, the digest) of one field."""
    kind = FIELD_FORMATS.get(fid, "hex")
    if kind == "string":
        end = data.find(b"\0")
        return (data if end < 0 else data[:end]).decode("latin-1"), None, None
    if kind in ("digest-algo", "digest-type-algo"):
        # "[type:]algo:" NUL digest; the prefix may also be empty
        sep = data.find(b"\0")
        if sep == 0 or (sep > 0 and data[sep - 1] == 0x3A):
            shown, algo = digest_head(data[:sep])
            digest = data[sep + 1:]
            return shown + digest.hex(), algo, digest
        return data.hex(), None, None
    if kind == "digest":
        return data.hex(), None, data
    if kind == "uint":
        code = _UINT_CODES.get(len(data))
        return (str(struct.unpack(endian + code, data)[0]) if code else ""), None, None
    return data.hex(), None, None


@lru_cache(maxsize=64)  # a list uses a few prefixes ("sha256:", "ima:sha256:")
def digest_head(head: bytes) -> tuple[str, str | None]:
    """What a digest field shows before its hex (nothing for a bare ":"), and its algorithm."""
    algo = head[:-1].decode("ascii", "backslashreplace").rsplit(":", 1)[-1] or None
    return ("" if head == b":" else head.decode("latin-1")), algo


def field_from_ascii(fid: str, text: str, endian: Endian) -> bytes:
    """The bytes a field holds, given the text the ASCII list shows for it (the inverse of
    :func:`make_field` wherever the ASCII form keeps everything)."""
    kind = FIELD_FORMATS.get(fid, "hex")
    if not text:
        return b""
    if kind in ("digest-algo", "digest-type-algo"):
        prefix, _, hexpart = text.rpartition(":")
        head = (prefix + ":").encode("latin-1") if prefix else b":"
        return head + b"\0" + bytes.fromhex(hexpart)
    if kind == "string":
        return text.encode("latin-1") + b"\0"
    if kind == "uint":
        size = 2 if fid == "imode" else 4
        return struct.pack(endian + _UINT_CODES[size], int(text, 10))
    return bytes.fromhex(text)
