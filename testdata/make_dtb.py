"""Write the synthetic DTBs in testdata/dtb/ (run: python testdata/make_dtb.py).

Built with plain ``struct``, independent of kimagekit, so the tests do not check the library
against itself. Each corrupt sample is named for its one defect.
"""

from __future__ import annotations

import struct
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dtb"
BEGIN, END_NODE, PROP, NOP, END = 1, 2, 3, 4, 9


def _pad4(b: bytes, fill: bytes = b"\0") -> bytes:
    return b + fill * (-len(b) % 4)


class Blob:
    """A tiny DTB writer: tokens in order, strings appended as first used."""

    def __init__(self) -> None:
        self.tokens: list[bytes] = []
        self.strings = b""

    def begin(self, name: str, fill: bytes = b"\0") -> Blob:
        self.tokens.append(struct.pack(">I", BEGIN) + _pad4(name.encode() + b"\0", fill))
        return self

    def end(self) -> Blob:
        self.tokens.append(struct.pack(">I", END_NODE))
        return self

    def nop(self) -> Blob:
        self.tokens.append(struct.pack(">I", NOP))
        return self

    def prop(self, name: str, value: bytes, fill: bytes = b"\0") -> Blob:
        raw = name.encode() + b"\0"
        off = self.strings.find(raw)
        if off < 0:
            off, self.strings = len(self.strings), self.strings + raw
        self.tokens.append(struct.pack(">III", PROP, len(value), off) + _pad4(value, fill))
        return self

    def blob(self, rsv: list[tuple[int, int]] = (), version: int = 17, gap: int = 0,
             pad: int = 0, boot_cpu: int = 0, term: bool = True) -> bytes:
        hsize = 40 if version >= 17 else 36
        body = b"".join(self.tokens) + struct.pack(">I", END)
        rmap = b"".join(struct.pack(">QQ", a, s) for a, s in rsv) + bytes(16 if term else 0)
        off_rsv = (hsize + 7) & -8
        off_struct = off_rsv + len(rmap) + gap
        off_strings = off_struct + len(body) + gap
        total = off_strings + len(self.strings) + pad
        vals = [0xD00DFEED, total, off_struct, off_strings, off_rsv, version, 16, boot_cpu,
                len(self.strings)] + ([len(body)] if version >= 17 else [])
        head = struct.pack(f">{len(vals)}I", *vals)
        gapb = b"\xa5" * gap
        return b"".join([head, bytes(off_rsv - hsize), rmap, gapb, body, gapb, self.strings,
                         bytes(pad)])


def small(fill: bytes = b"\0") -> Blob:
    b = Blob().begin("")
    b.prop("#address-cells", struct.pack(">I", 2)).prop("#size-cells", struct.pack(">I", 2))
    b.prop("model", b"kimagekit,test\0", fill).nop()
    b.begin("memory@0").prop("device_type", b"memory\0").prop(
        "reg", struct.pack(">QQ", 0, 0x40000000)).end()
    b.begin("chosen").prop("bootargs", b"console=hvc0\0").end()
    b.begin("cpus", fill).nop().begin("cpu@0").prop("reg", struct.pack(">I", 0)).end().end()
    return b.end()


def samples() -> dict[str, bytes]:
    good = small().blob(rsv=[(0x400000, 0x1000)])
    s: dict[str, bytes] = {
        "small.dtb": good,
        # NOPs, non-zero alignment bytes, filled gaps between blocks, padding, boot cpu 1
        "odd-layout.dtb": small(fill=b"\xee").blob(rsv=[(0x1000, 0x10)], gap=8, pad=64,
                                                    boot_cpu=1),
        "v16.dtb": small().blob(version=16, pad=32),
        "padded.dtb": small().blob(pad=4096),
    }
    s["corrupt-truncated-header.dtb"] = good[:20]
    s["corrupt-totalsize-beyond-file.dtb"] = good[:-8]
    over = bytearray(good)  # strings start inside the struct block
    struct.pack_into(">I", over, 12, struct.unpack_from(">I", good, 12)[0] - 8)
    s["corrupt-blocks-overlap.dtb"] = bytes(over)
    order = bytearray(good)  # reservation map claimed inside the struct block
    struct.pack_into(">I", order, 16, struct.unpack_from(">I", good, 8)[0] + 8)
    s["corrupt-rsvmap-in-struct.dtb"] = bytes(order)
    # two entries, then the struct block where the all-zero terminator should be
    s["corrupt-rsvmap-truncated.dtb"] = small().blob(rsv=[(0x1000, 0x10), (0x2000, 0x20)],
                                                     term=False)
    b = Blob().begin("")
    b.tokens.append(struct.pack(">I", BEGIN) + b"abcd")
    raw = bytearray(b.blob())  # the FDT_END word becomes more name: no NUL before the end
    at = struct.unpack_from(">I", raw, 8)[0] + struct.unpack_from(">I", raw, 36)[0] - 4
    raw[at:at + 4] = b"efgh"
    s["corrupt-unterminated-node-name.dtb"] = bytes(raw)
    b = small()
    b.strings = b.strings[:-1]  # the last property name loses its NUL
    s["corrupt-unterminated-string.dtb"] = b.blob()
    b = Blob().begin("").prop("a", b"x\0")
    b.tokens.append(struct.pack(">I", 0x7))
    s["corrupt-bad-token.dtb"] = b.end().blob()
    b = Blob().begin("")
    for i in range(70):
        b.begin(f"n{i}")
    for _ in range(71):
        b.end()
    s["corrupt-deep-nesting.dtb"] = b.blob()
    b = Blob().begin("")
    b.tokens.append(struct.pack(">III", PROP, 0x1000, 0))
    b.strings = b"big\0"
    s["corrupt-value-past-end.dtb"] = b.end().blob()
    return s


# dtc's tests/mangle-layout.c, rewritten: the blocks of a v17 blob laid out again in ``order``
# ("m" reservation map, "t" struct, "s" strings), each at its alignment after the last, zeros
# in the gaps, under a fresh version 16 or 17 header.
ORDERS = ("mts", "mst", "tms", "tsm", "smt", "stm")


def mangle_layout(fdt: bytes, version: int, order: str) -> bytes:
    f = struct.unpack_from(">10I", fdt)
    off_struct, off_strings, off_rsv, size_strings, size_struct = f[2], f[3], f[4], f[8], f[9]
    n = 0
    while struct.unpack_from(">QQ", fdt, off_rsv + 16 * n)[1]:
        n += 1
    src = {"m": (8, fdt[off_rsv:off_rsv + 16 * (n + 1)]),
           "t": (4, fdt[off_struct:off_struct + size_struct]),
           "s": (1, fdt[off_strings:off_strings + size_strings])}
    hsize = 40 if version >= 17 else 36
    out = bytearray(hsize)
    offs: dict[str, int] = {}
    for block in order:
        align, data = src[block]
        at = (len(out) + align - 1) & -align
        out += bytes(at - len(out)) + data
        offs[block] = at
    vals = [0xD00DFEED, len(out), offs["t"], offs["s"], offs["m"], version, 16, f[7],
            size_strings] + ([size_struct] if version >= 17 else [])
    struct.pack_into(f">{len(vals)}I", out, 0, *vals)
    return bytes(out)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, data in samples().items():
        (OUT / name).write_bytes(data)


if __name__ == "__main__":
    main()
