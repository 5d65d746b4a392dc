"""Property values as fdtget prints them and fdtput encodes them (dtc's ``-t`` type letters).

A type is a letter (``s`` string, ``i`` signed, ``u`` unsigned, ``x`` hex, ``r`` raw bytes)
after an optional size prefix (``hh`` or ``b``: 1 byte, ``h``: 2 bytes, ``l``: 4 bytes, ``L``:
the default), parsed as dtc's ``utilfdt_decode_type`` parses it (so ``bb``, ``ll`` and ``LL``
stand for ``b``, ``l``, ``L``, and a size before ``s`` or ``r`` is accepted and ignored).
Without a size fdtget shows 4-byte cells when the length is a multiple of 4, else bytes.

kimagekit's older names (``u32``, ``u64``, ``string``, ``strings``, ``bytes``) stay accepted;
they are :data:`kimagekit.devicetree.TYPES`.

Where fdtput would write something it was not asked for, kimagekit refuses instead: a number
that does not parse whole or does not fit its size (fdtput's ``sscanf`` stops at the first bad
character and it truncates to the size), a NUL inside a string. ``h`` values are written as
2-byte big-endian cells (fdtput writes one byte of each and leaves the other as its buffer held
it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kimagekit.devicetree import TYPES, encode
from kimagekit.errors import UsageError

__all__ = [
    "LETTER_TYPES",
    "SET_TYPE_METAVAR",
    "TYPE_METAVAR",
    "FdtType",
    "encode_values",
    "fdtget_text",
    "is_printable_string",
    "kept_type",
    "parse_type",
]

_QUALIFIED = re.compile(r"(hh|bb|ll|LL|h|l|L|b)?([iuxsr])")
_SIZES = {"": 0, "L": 0, "LL": 0, "l": 4, "ll": 4, "h": 2, "hh": 1, "b": 1, "bb": 1}
# the spellings --help shows (every one parse_type takes is listed in the module docstring)
LETTER_TYPES = ("s", "i", "u", "x", "r", "bi", "bu", "bx", "hi", "hu", "hx")
TYPE_METAVAR = "[" + "|".join((*LETTER_TYPES, *TYPES)) + "]"
SET_TYPE_METAVAR = "[" + "|".join((*(t for t in LETTER_TYPES if t != "r"), *TYPES)) + "]"


@dataclass(frozen=True)
class FdtType:
    """One ``-t`` type: ``letter`` (``s i u x r``) and cell ``size`` (1, 2, 4; 0 = fdtget's
    guess from the length), or one of kimagekit's named types (``name``; letter empty)."""

    letter: str
    size: int = 0
    name: str = ""

    def text(self) -> str:
        """What the type is called in messages."""
        if self.name:
            return self.name
        if self.letter == "s":
            return "string"
        if self.letter == "r":
            return "raw bytes"
        return {0: "cells", 1: "bytes", 2: "16-bit cells", 4: "32-bit cells"}[self.size]


def parse_type(text: str) -> FdtType:
    """A ``--type`` value: a dtc type string or one of kimagekit's names."""
    if text in TYPES:
        return FdtType("", 0, text)
    m = _QUALIFIED.fullmatch(text)
    if m is None:
        raise UsageError(f"--type {text!r}: not a type (s, i, u, x or r, optionally after b, "
                         f"hh, h or l, as fdtget's -t; or one of {', '.join(TYPES)})")
    letter = m.group(2)
    return FdtType(letter, 0 if letter in "sr" else _SIZES[m.group(1) or ""])


def is_printable_string(raw: bytes) -> bool:
    """dtc's ``util_is_printable_string``: NUL-terminated, and every NUL-separated part is a
    non-empty run of printable ASCII."""
    if not raw or raw[-1] != 0:
        return False
    return all(part and all(0x20 <= b < 0x7F for b in part) for part in raw[:-1].split(b"\0"))


def fdtget_text(raw: bytes, kind: FdtType | None) -> bytes:
    """The bytes ``fdtget [-t kind]`` prints for a value, newline included (``r``: the value
    itself, no newline). A value the type cannot show is refused with fdtget's own reason."""
    if kind is not None and kind.letter == "r":
        return raw
    if not raw:
        return b"\n"
    letter = kind.letter if kind is not None else ""
    if letter == "s" or (not letter and is_printable_string(raw)):
        if raw[-1] != 0:
            raise UsageError("unterminated string (the value does not end with NUL)")
        return b" ".join(raw[:-1].split(b"\0")) + b"\n"
    size = kind.size if kind is not None and kind.size else (4 if len(raw) % 4 == 0 else 1)
    if len(raw) % size:
        raise UsageError(f"property length {len(raw)} is not a multiple of the selected data "
                         f"size ({size})")
    cells = [int.from_bytes(raw[i:i + size], "big") for i in range(0, len(raw), size)]
    if letter == "x":
        words = [f"{c:x}" for c in cells]
    elif letter == "u" or size < 4:
        words = [str(c) for c in cells]
    else:  # %d / %i of a C int: a 32-bit cell is signed
        words = [str(c - (1 << 32) if c >= 1 << 31 else c) for c in cells]
    return (" ".join(words) + "\n").encode()


def kept_type(old: bytes) -> FdtType:
    """The type an existing value has, guessed as fdtget guesses it: a printable string stays
    strings, a multiple of 4 bytes 32-bit cells, anything else bytes."""
    if is_printable_string(old):
        return FdtType("s")
    return FdtType("i", 4 if len(old) % 4 == 0 else 1)


_NUMBER = {"x": re.compile(r"(?:0[xX])?([0-9a-fA-F]+)"), "u": re.compile(r"([0-9]+)"),
           "i": re.compile(r"([+-]?)(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))")}


def _number(text: str, letter: str, size: int) -> int:
    # as sscanf's %x (hex, 0x optional), %u (decimal), %i (C prefixes: 0x hex, 0 octal; a
    # sign), but whole: a trailing bad character is refused where sscanf would stop before it
    what = f"cannot encode {text!r} as {FdtType(letter, size).text()}"
    m = _NUMBER[letter].fullmatch(text)
    if m is None:
        raise UsageError(f"{what}: not a number for -t {letter}")
    if letter == "i":
        sign, hexa, octal, dec = m.groups()
        value = int(hexa, 16) if hexa else int(octal, 8) if octal else int(dec, 10)
        value = -value if sign == "-" else value
    else:
        value = int(m.group(1), 16 if letter == "x" else 10)
    low = -(1 << (8 * size - 1)) if letter == "i" else 0
    if not low <= value < 1 << (8 * size):
        raise UsageError(f"{what}: out of range [{low}, {(1 << (8 * size)) - 1}]")
    return value & ((1 << (8 * size)) - 1)


def encode_values(kind: FdtType, values: Sequence[str]) -> bytes:
    """The property value fdtput writes for ``values`` as ``kind`` (kimagekit's named types as
    :func:`kimagekit.devicetree.encode`)."""
    if kind.name:
        return encode(kind.name, list(values))
    if kind.letter == "r":
        raise UsageError("--type r is for reading (dtb get); give bytes as --type bytes HEX")
    if kind.letter == "s":
        if any("\0" in v for v in values):
            raise UsageError("a string value cannot contain NUL")
        try:
            return b"".join(v.encode("latin-1") + b"\0" for v in values)
        except UnicodeEncodeError as exc:
            raise UsageError(f"cannot encode {exc.object!r} as string: not Latin-1") from None
    size = kind.size or 4
    return b"".join(_number(v, kind.letter, size).to_bytes(size, "big") for v in values)
