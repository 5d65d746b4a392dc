"""Corrupt DTBs (testdata/make_dtb.py): each defect, one exact error naming block and offset."""

from __future__ import annotations

import struct

import pytest
from conftest import TESTDATA

from kimagekit.devicetree import DeviceTree
from kimagekit.errors import ParseError

DEEP = "/".join(f"n{i}" for i in range(63))
CASES = {
    "truncated-header": ("header", 0x0, "truncated header: 20 bytes, a version 17 header needs 40"),
    "totalsize-beyond-file": ("header.totalsize", 0x4,
                              "totalsize 0x176 is beyond the end of the file (0x16e bytes)"),
    "blocks-overlap": ("header.size_dt_struct", 0x24,
                       "struct block [0x48, 0x13c) overlaps the strings block at 0x134"),
    "rsvmap-in-struct": ("header.size_dt_struct", 0x24,
                         "struct block [0x48, 0x13c) overlaps the reservation map at 0x50"),
    "rsvmap-truncated": ("rsvmap[2]", 0x48, "reservation map truncated: no terminating entry "
                         "(size 0) before the struct block at 0x48"),
    "unterminated-node-name": ("struct.node[/]", 0x40,
                               "node name is not terminated inside the struct block"),
    "unterminated-string": ("strings", 0x15D,
                            "property name at strings offset 0x31 is not terminated"),
    "bad-token": ("struct.node[/]", 0x50, "bad token 0x00000007"),
    "deep-nesting": (f"struct.node[/{DEEP}]", 0x238, "nodes nested deeper than 64"),
    "value-past-end": ("struct.node[/].prop[big]", 0x40,
                       "value of 0x1000 bytes runs past the struct block end 0x54"),
}


@pytest.mark.parametrize("defect", sorted(CASES))
def test_corrupt_sample_exact_error(defect: str) -> None:
    data = (TESTDATA / "dtb" / f"corrupt-{defect}.dtb").read_bytes()
    fld, offset, message = CASES[defect]
    with pytest.raises(ParseError) as info:
        DeviceTree.parse(data)
    err = info.value
    assert (err.fmt, err.field, err.offset, err.message) == ("dtb", fld, offset, message)
    assert str(err) == f"dtb: {fld} at offset {offset:#x}: {message}"


@pytest.mark.parametrize(("data", "message"), [
    (b"", "truncated header: 0 bytes, a DTB header needs at least 36"),
    (b"\x00\x00\x00\x00" + bytes(36), "bad magic 0x00000000 (a DTB starts with 0xd00dfeed)"),
])
def test_no_header(data: bytes, message: str) -> None:
    with pytest.raises(ParseError) as info:
        DeviceTree.parse(data)
    assert str(info.value) == f"dtb: header.magic at offset 0x0: {message}"


def test_every_truncation_of_a_good_blob_is_refused_cleanly() -> None:
    good = (TESTDATA / "dtb" / "small.dtb").read_bytes()
    assert len(good) == 0x176  # totalsize is the whole file: any cut falls short of it
    for n in range(len(good)):
        with pytest.raises(ParseError) as info:
            DeviceTree.parse(good[:n])
        if n < 4:
            want = ("header.magic", 0, f"truncated header: {n} bytes, a DTB header needs at "
                                       "least 36")
        elif n < 40:
            want = ("header", 0, f"truncated header: {n} bytes, a version 17 header needs 40")
        else:
            want = ("header.totalsize", 4, f"totalsize 0x176 is beyond the end of the file "
                                           f"({n:#x} bytes)")
        err = info.value
        assert (err.fmt, err.field, err.offset, err.message) == ("dtb", *want), n


def test_reservation_map_truncated_at_the_blob_end() -> None:
    # the map is the last block: its missing terminator would lie past totalsize
    good = (TESTDATA / "dtb" / "small.dtb").read_bytes()
    last = bytearray(good[:0x28]) + good[0x48:0x176] + bytes(2) + struct.pack(">QQ", 0x1000, 16)
    struct.pack_into(">IIII", last, 4, len(last), 0x28, 0x11C, 0x158)
    with pytest.raises(ParseError) as info:
        DeviceTree.parse(bytes(last))
    assert str(info.value) == ("dtb: rsvmap[1] at offset 0x168: reservation map truncated: no "
                               "terminating entry (size 0) before the end of the blob at 0x168")


def test_reservation_map_ends_at_the_first_size_zero_entry() -> None:
    # libfdt and dtc stop at size 0 whatever the address: so does kimagekit, keeping the bytes
    good = bytearray((TESTDATA / "dtb" / "small.dtb").read_bytes())
    struct.pack_into(">Q", good, 0x38, 0xABC000)  # the terminator's address
    tree = DeviceTree.parse(bytes(good))
    assert [(r.address, r.size) for r in tree.reservations] == [(0x400000, 0x1000)]
    assert tree.build() == bytes(good)


def test_unknown_version_refused() -> None:
    good = bytearray((TESTDATA / "dtb" / "small.dtb").read_bytes())
    struct.pack_into(">I", good, 20, 5)
    with pytest.raises(ParseError) as info:
        DeviceTree.parse(bytes(good))
    assert str(info.value) == ("dtb: header.version at offset 0x14: version 5 is not supported "
                               "(1, 2, 3, 16 and later are)")


def test_old_version_node_path_must_name_a_child() -> None:
    # version 1 holds full paths; "/cpus" inside "/chosen" is not a child of it
    b = bytearray(struct.pack(">7I", 0xD00DFEED, 0, 0, 0, 32, 1, 1) + bytes(4) + bytes(16))
    body = struct.pack(">I", 1) + b"/\0\0\0" + struct.pack(">I", 1) + b"/chosen\0" + \
        struct.pack(">I", 1) + b"/cpus\0\0\0" + struct.pack(">III", 2, 2, 2) + \
        struct.pack(">I", 9)
    b += body
    struct.pack_into(">III", b, 4, len(b), 48, len(b))
    with pytest.raises(ParseError) as info:
        DeviceTree.parse(bytes(b))
    assert str(info.value) == ("dtb: struct.node[/chosen] at offset 0x44: node path '/cpus' is "
                               "not a child of '/chosen'")
