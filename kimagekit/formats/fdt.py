"""Flattened device tree (DTB) layouts, with the kernel's field names (``scripts/dtc/libfdt``).

Declarations only: the model and the fast token walk live in :mod:`kimagekit.devicetree` and take
their sizes and formats from here. Everything is big-endian.
"""

from __future__ import annotations

from construct import (
    Aligned,
    Bytes,
    Construct,
    GreedyBytes,
    Int32ub,
    Int64ub,
    NullTerminated,
    Pass,
    RepeatUntil,
    Struct,
    Switch,
    this,
)

__all__ = [
    "FDT_BEGIN_NODE", "FDT_END", "FDT_END_NODE", "FDT_MAGIC", "FDT_MAX_DEPTH", "FDT_NOP",
    "FDT_PROP", "FDT_TAGSIZE", "FIRST_VERSION", "HEADER_FIELDS", "LAST_COMP_VERSION",
    "OLD_VERSIONS", "PROP_HEADER_SIZE", "RESERVE_ENTRY_SIZE", "fdt_header", "fdt_header_for",
    "fdt_header_v16", "fdt_node_header", "fdt_property", "fdt_reserve_entry", "fdt_rsvmap",
    "fdt_struct_block", "fdt_token", "header_fields", "header_size",
]

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE = 0x1
FDT_END_NODE = 0x2
FDT_PROP = 0x3
FDT_NOP = 0x4
FDT_END = 0x9
FDT_TAGSIZE = 4
# The deepest tree libfdt walks (FDT_MAX_DEPTH); deeper input is refused the same way.
FDT_MAX_DEPTH = 64
# Versions whose layout we read: 1-3 (dtc's old flat trees: full-path node names, values of 8
# bytes or more 8-aligned, no NOPs) and 16 on; 16 lacks size_dt_struct, 17 is current.
OLD_VERSIONS = (1, 2, 3)
FIRST_VERSION = 16
LAST_COMP_VERSION = 17

_HEADER_V1 = ("magic", "totalsize", "off_dt_struct", "off_dt_strings", "off_mem_rsvmap", "version",
              "last_comp_version")
_HEADER_V16 = (*_HEADER_V1, "boot_cpuid_phys", "size_dt_strings")
HEADER_FIELDS = (*_HEADER_V16, "size_dt_struct")


def header_fields(version: int) -> tuple[str, ...]:
    """The header fields a blob of ``version`` has: v2 adds boot_cpuid_phys, v3
    size_dt_strings, v17 size_dt_struct."""
    n = 7 + (version >= 2) + (version >= 3) + (version >= LAST_COMP_VERSION)
    return HEADER_FIELDS[:n]


def fdt_header_for(version: int) -> Construct:  # type: ignore[type-arg,unused-ignore]
    """The header for ``version``: 28 bytes (v1), 32 (v2), 36 (v3, v16), 40 (v17 and later)."""
    return Struct(*(name / Int32ub for name in header_fields(version)))


fdt_header = fdt_header_for(LAST_COMP_VERSION)
fdt_header_v16 = fdt_header_for(FIRST_VERSION)

fdt_reserve_entry = Struct("address" / Int64ub, "size" / Int64ub)
# The reservation map ends with an all-zero entry, which is part of the block.
fdt_rsvmap = RepeatUntil(lambda e, _l, _c: e.address == 0 and e.size == 0, fdt_reserve_entry)

# fdt_property without its tag: the value follows, padded to the next 4-byte boundary.
fdt_property = Struct("len" / Int32ub, "nameoff" / Int32ub)
# Names are raw bytes (any byte but NUL is allowed in a blob).
fdt_node_header = Struct("name" / Aligned(FDT_TAGSIZE, NullTerminated(GreedyBytes)))

fdt_token = Struct(
    "tag" / Int32ub,
    "body" / Switch(this.tag, {
        FDT_BEGIN_NODE: fdt_node_header,
        FDT_PROP: Struct(
            "len" / Int32ub,
            "nameoff" / Int32ub,
            "data" / Aligned(FDT_TAGSIZE, Bytes(this.len)),
        ),
    }, default=Pass),
)
# The structure block as a flat run of tokens, ending with FDT_END.
fdt_struct_block = RepeatUntil(lambda t, _l, _c: t.tag == FDT_END, fdt_token)


def header_size(version: int) -> int:
    return int(fdt_header_for(version).sizeof())


RESERVE_ENTRY_SIZE = int(fdt_reserve_entry.sizeof())
PROP_HEADER_SIZE = int(fdt_property.sizeof())
