"""The digest an EVM portable signature (``security.evm`` type 0x05) signs, rebuilt from an
``evm-sig`` entry as the kernel's ``evm_calc_hash`` computes it for the measured inode.

The entry records the protected xattrs the kernel found (``xattrnames`` joined by ``|``,
``xattrlengths`` as u32s, ``xattrvalues`` concatenated, all in the kernel's configured order,
which is also the order it hashes them in) and the inode's ``iuid``, ``igid`` and ``imode``. The
hash covers the xattr values, then ``struct h_misc`` of a 64-bit kernel: inode number and
generation (zero for the portable form), uid and gid (u32), mode (u16), two bytes of padding;
24 bytes in the list's byte order. The kernel refuses a portable signature without
``security.ima``."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from kimagekit.ima_fields import ImaField

__all__ = ["H_MISC_64", "XATTR_NAME_IMA", "EvmInput", "evm_input", "portable_digest"]

XATTR_NAME_IMA = "security.ima"
#: ``struct h_misc`` on a 64-bit kernel: unsigned long ino, u32 generation, uid, gid, umode_t mode
H_MISC_64 = "QIIIH2x"


@dataclass(frozen=True)
class EvmInput:
    """What the kernel hashed: the xattrs (name, value) in its order and the inode metadata."""

    xattrs: tuple[tuple[str, bytes], ...]
    uid: int
    gid: int
    mode: int

    def describe(self) -> str:
        names = ", ".join(n for n, _ in self.xattrs) or "no xattrs"
        return f"{names}, uid {self.uid}, gid {self.gid}, mode {self.mode:#o}"


def evm_input(fields: tuple[ImaField, ...], endian: str) -> EvmInput | str:
    """The hashed data from an entry's fields, or why the fields cannot give it."""
    by_id = {f.id: f.data for f in fields}
    raw_names = by_id.get("xattrnames", b"")
    lengths = by_id.get("xattrlengths", b"")
    values = by_id.get("xattrvalues", b"")
    text = raw_names[:-1] if raw_names.endswith(b"\0") else raw_names
    names = text.decode("latin-1").split("|") if text else []
    if len(lengths) != 4 * len(names):
        return (f"xattrlengths holds {len(lengths)} bytes for {len(names)} xattr names "
                f"(4 bytes each)")
    sizes = struct.unpack(f"{endian}{len(names)}I", lengths)
    if sum(sizes) != len(values):
        return (f"xattrlengths add up to {sum(sizes)} bytes but xattrvalues holds "
                f"{len(values)}")
    xattrs: list[tuple[str, bytes]] = []
    at = 0
    for name, size in zip(names, sizes, strict=True):
        xattrs.append((name, values[at:at + size]))
        at += size
    meta = []
    for fid, width in (("iuid", 4), ("igid", 4), ("imode", 2)):
        data = by_id.get(fid, b"")
        if len(data) != width:
            return f"{fid} holds {len(data)} bytes, not {width}"
        meta.append(int.from_bytes(data, "little" if endian == "<" else "big"))
    return EvmInput(tuple(xattrs), meta[0], meta[1], meta[2])


def portable_digest(data: EvmInput, algo: str, endian: str) -> bytes:
    """``evm_calc_hash`` for ``EVM_XATTR_PORTABLE_DIGSIG``: the values, then ``h_misc``."""
    h = hashlib.new(algo)
    for _, value in data.xattrs:
        h.update(value)
    h.update(struct.pack(endian + H_MISC_64, 0, 0, data.uid, data.gid, data.mode))
    return h.digest()
