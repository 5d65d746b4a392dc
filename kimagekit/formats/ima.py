"""IMA measurement list layouts (``security/integrity/ima/ima_fs.c``, ``ima_kexec.c``).

Declarations only. Integers are host-endian in the kernel's output, or little-endian when it runs
with ``ima_canonical_fmt``: every schema comes from a factory taking the byte order, and the entry
header from one also taking the template digest size (20 for the classic list, 32/48/64 for the
per-bank ``binary_runtime_measurements_<algo>`` lists).
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Literal

from construct import (
    Bytes,
    Construct,
    FormatField,
    GreedyRange,
    If,
    IfThenElse,
    Int16ub,
    Int16ul,
    Int32ub,
    Int32ul,
    Int64ub,
    Int64ul,
    Rebuild,
    Struct,
    len_,
    this,
)

__all__ = [
    "BANK_BY_SIZE", "BUILTIN_TEMPLATES", "DEFAULT_BANKS", "DIGEST_SIZES", "FIELD_FORMATS",
    "IMA_EVENT_NAME_LEN_MAX", "IMA_KEXEC_HDR_VERSION", "IMA_TEMPLATE",
    "IMA_TEMPLATE_FIELD_ID_MAX_LEN", "IMA_TEMPLATE_NUM_FIELDS_MAX", "MAX_TEMPLATE_NAME_LEN",
    "TPM_DIGEST_SIZE", "Endian", "entry", "entry_header", "fixed_prefix", "ima_template_data",
    "ints", "kexec_hdr", "template_field", "template_fields",
]

Endian = Literal["<", ">"]

#: The only template with a fixed layout and no ``template_data_len`` (``IMA_TEMPLATE_IMA_NAME``).
IMA_TEMPLATE = b"ima"
#: ``IMA_EVENT_NAME_LEN_MAX``: the ``ima`` template hashes its name padded to this plus one byte.
IMA_EVENT_NAME_LEN_MAX = 255
#: ``TPM_DIGEST_SIZE``: the digest in the classic list and in the kexec buffer.
TPM_DIGEST_SIZE = 20
#: ``MAX_TEMPLATE_NAME_LEN``: sizeof the longest built-in field list ("d-ng|n-ng|evmsig|...|imode").
MAX_TEMPLATE_NAME_LEN = 69
IMA_TEMPLATE_NUM_FIELDS_MAX = 15
IMA_TEMPLATE_FIELD_ID_MAX_LEN = 16
IMA_KEXEC_HDR_VERSION = 1

#: The banks a list's digest size can name, in the order they are replayed by default.
DEFAULT_BANKS = ("sha1", "sha256", "sha384", "sha512")
#: Every bank a replay can extend. ``sm3_256`` shares sha256's size, so a size names only the
#: SHA banks (a list file never says it holds SM3 digests).
DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64, "sm3_256": 32}
BANK_BY_SIZE = {DIGEST_SIZES[bank]: bank for bank in DEFAULT_BANKS}

#: Built-in templates (``builtin_templates[]`` in ``ima_template.c``).
BUILTIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "ima": ("d", "n"),
    "ima-ng": ("d-ng", "n-ng"),
    "ima-sig": ("d-ng", "n-ng", "sig"),
    "ima-ngv2": ("d-ngv2", "n-ng"),
    "ima-sigv2": ("d-ngv2", "n-ng", "sig"),
    "ima-buf": ("d-ng", "n-ng", "buf"),
    "ima-modsig": ("d-ng", "n-ng", "sig", "d-modsig", "modsig"),
    "evm-sig": ("d-ng", "n-ng", "evmsig", "xattrnames", "xattrlengths", "xattrvalues",
                "iuid", "igid", "imode"),
}

#: How each field id shows itself in the ASCII list (the ``DATA_FMT_*`` of its show function).
FIELD_FORMATS: dict[str, str] = {
    "d": "digest",
    "n": "string",
    "d-ng": "digest-algo",
    "d-ngv2": "digest-type-algo",
    "n-ng": "string",
    "sig": "hex",
    "buf": "hex",
    "d-modsig": "digest-algo",
    "modsig": "hex",
    "evmsig": "hex",
    "iuid": "uint",
    "igid": "uint",
    "imode": "uint",
    "xattrnames": "string",
    "xattrlengths": "hex",
    "xattrvalues": "hex",
}


@cache
def ints(endian: Endian) -> tuple[Construct, Construct, Construct]:
    """(u16, u32, u64) in ``endian``."""
    if endian == "<":
        return Int16ul, Int32ul, Int64ul
    return Int16ub, Int32ub, Int64ub


@cache
def entry_header(endian: Endian, digest_size: int) -> Struct:
    """The fixed-shape head of every entry: PCR, template digest, template name."""
    _, u32, _ = ints(endian)
    return Struct(
        "pcr" / u32,
        "digest" / Bytes(digest_size),
        "template_name_len" / Rebuild(u32, len_(this.template_name)),
        "template_name" / Bytes(this.template_name_len),
    )


@cache
def ima_template_data(endian: Endian) -> Struct:
    """Data of the ``ima`` template: a 20-byte digest, then the name without its NUL."""
    _, u32, _ = ints(endian)
    return Struct(
        "d" / Bytes(TPM_DIGEST_SIZE),
        "n_len" / Rebuild(u32, len_(this.n)),
        "n" / Bytes(this.n_len),
    )


@cache
def entry(endian: Endian, digest_size: int) -> Struct:
    """One entry of ``binary_runtime_measurements[_<algo>]`` (``ima_measurements_show``)."""
    _, u32, _ = ints(endian)
    is_ima = this.template_name == IMA_TEMPLATE
    return Struct(
        "pcr" / u32,
        "digest" / Bytes(digest_size),
        "template_name_len" / Rebuild(u32, len_(this.template_name)),
        "template_name" / Bytes(this.template_name_len),
        "template_data_len" / If(lambda ctx: ctx.template_name != IMA_TEMPLATE,
                                 Rebuild(u32, len_(this.template_data))),
        "template_data" / IfThenElse(is_ima, ima_template_data(endian),
                                     Bytes(lambda ctx: ctx.template_data_len)),
    )


@cache
def template_field(endian: Endian) -> Struct:
    """One field of the template data: u32 length, then the bytes."""
    _, u32, _ = ints(endian)
    return Struct("len" / Rebuild(u32, len_(this.data)), "data" / Bytes(this.len))


@cache
def template_fields(endian: Endian) -> Construct:
    return GreedyRange(template_field(endian))


@cache
def kexec_hdr(endian: Endian) -> Struct:
    """``struct ima_kexec_hdr``: what precedes the entries in the kexec hand-over buffer."""
    u16, u32, u64 = ints(endian)
    return Struct(
        "version" / u16,
        "_reserved0" / u16,
        "_reserved1" / u32,
        "buffer_size" / u64,
        "count" / u64,
    )


def fixed_prefix(schema: Struct, endian: Endian) -> struct.Struct:
    """A ``struct.Struct`` for the leading fixed-size fields of ``schema``.

    This is how the fast paths are derived from the declarations: field formats and sizes come
    from the schema, so a change to the schema changes the fast path with it.
    """
    fmt: str = endian
    for sub in schema.subcons:
        inner = sub.subcon if hasattr(sub, "subcon") else sub
        if isinstance(inner, Rebuild):
            inner = inner.subcon
        if isinstance(inner, FormatField):
            fmt += inner.fmtstr[1:]
            continue
        try:
            size = inner.sizeof()
        except Exception:
            break
        fmt += f"{size}s"
    return struct.Struct(fmt)
