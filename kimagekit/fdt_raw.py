"""Get and set one property on the flattened tree itself, without the model.

As libfdt does: the header and reservation map are checked as the model checks them, then the
struct block is walked token by token (each token checked, with the model's messages) only as far
as the lookup needs: to the node on the path, then through that node. Nothing is built for the
nodes walked past, and the tokens after the target are neither read nor checked (fdtget and
fdtput read no further either). An edit splices the blob as libfdt's fdt_setprop places it and
as :class:`kimagekit.devicetree.DeviceTree` writes it (the same bytes: tested), then fixes the
header. Blobs the model writes anew (versions before 17, another block order) are left to it:
the functions here return ``None`` for them.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator

from kimagekit.devicetree import (
    NOP,
    Blocks,
    DeviceTree,
    Node,
    Nop,
    Opaque,
    Prop,
    _err,
    _name_at,
    check_blocks,
)
from kimagekit.errors import NotFound, UsageError
from kimagekit.formats import fdt as F

__all__ = [
    "LEN_OFF", "U32", "Anomaly", "Blob", "Walk", "get_property", "partial_tree", "set_property",
    "usable",
]

U32 = struct.Struct(">I")
_PROP = struct.Struct(">III")
LEN_OFF = struct.Struct(">II")
_HDR = struct.Struct(">" + "I" * len(F.HEADER_FIELDS))
Blob = bytes | mmap.mmap  # what the walk searches (a memoryview has no find)
_PROP_TAG, _BEGIN, _END_NODE, _NOP, _END = (F.FDT_PROP, F.FDT_BEGIN_NODE, F.FDT_END_NODE,
                                            F.FDT_NOP, F.FDT_END)


class Walk:
    """One token walk over the struct block; ``stack`` holds the open nodes' names."""

    def __init__(self, buf: Blob, blocks: Blocks) -> None:
        head = blocks.head
        self.buf = buf
        self.start = head.off_dt_struct
        self.end = blocks.struct_limit
        self.strings_at = head.off_dt_strings
        self.strings = bytes(buf[head.off_dt_strings:blocks.strings_end])
        self.names: dict[int, bytes] = {}
        self.stack: list[bytes] = []

    def where(self, prop: str | None = None) -> str:
        path = "/" + "/".join(n.decode("latin-1") for n in self.stack[1:])
        base = f"struct.node[{path}]" if self.stack else "struct"
        return f"{base}.prop[{prop}]" if prop is not None else base

    def tokens(self, pos: int) -> Iterator[tuple[int, int, int, int, bytes]]:
        """(tag, token offset, value offset, value length, name) from ``pos`` on; the name is the
        property's or the node's. Ends after FDT_END."""
        buf, end, stack, names = self.buf, self.end, self.stack, self.names
        unpack, unpack_prop = U32.unpack_from, _PROP.unpack_from
        root_done = False
        while True:
            if pos + 4 > end:
                raise _err(f"struct block ends at {end:#x} without FDT_END", self.where(), pos)
            tag = unpack(buf, pos)[0]
            if tag == _PROP_TAG:
                if not stack:
                    raise _err("FDT_PROP outside any node", self.where(), pos)
                if pos + 12 > end:
                    raise _err(f"property header runs past the struct block end {end:#x}",
                               self.where("?"), pos)
                _, ln, nameoff = unpack_prop(buf, pos)
                name = names.get(nameoff)
                if name is None:
                    text = _name_at(self.strings, nameoff, self.strings_at, self.where("?"), pos)
                    name = names[nameoff] = text.encode("latin-1")
                nxt = (pos + 15 + ln) & -4
                if nxt > end:
                    raise _err(f"value of {ln:#x} bytes runs past the struct block end {end:#x}",
                               self.where(name.decode("latin-1")), pos)
                yield tag, pos, pos + 12, ln, name
                pos = nxt
            elif tag == _BEGIN:
                if root_done:
                    raise _err("a second root node", self.where(), pos)
                if len(stack) >= F.FDT_MAX_DEPTH:
                    raise _err(f"nodes nested deeper than {F.FDT_MAX_DEPTH}", self.where(), pos)
                nul = buf.find(b"\0", pos + 4, end)
                if nul < 0:
                    raise _err("node name is not terminated inside the struct block",
                               self.where(), pos)
                nxt = (nul + 4) & -4
                if nxt > end:
                    raise _err("node name padding runs past the struct block end",
                               self.where(), pos)
                name = bytes(buf[pos + 4:nul])
                stack.append(name)
                yield tag, pos, nxt, 0, name
                pos = nxt
            elif tag == _END_NODE:
                if not stack:
                    raise _err("FDT_END_NODE with no open node", self.where(), pos)
                yield tag, pos, pos + 4, 0, stack.pop()
                root_done = not stack
                pos += 4
            elif tag == _NOP:
                pos += 4
            elif tag == _END:
                if stack:
                    raise _err("FDT_END inside an open node", self.where(), pos)
                if not root_done:
                    raise _err("no root node", self.where(), pos)
                yield tag, pos, pos + 4, 0, b""
                return
            else:
                raise _err(f"bad token {tag:#010x}", self.where(), pos)


def _matches(name: bytes, part: bytes) -> bool:
    # as DeviceTree.child: "cpu" finds "cpu@0" when the unit address is left out
    return name == part or (b"@" not in part and name.partition(b"@")[0] == part)


class Anomaly(Exception):
    """The quick walk met something it does not report: the checked walk runs and says why."""


def _quick_find(walk: Walk, path: str) -> int | None:
    """:func:`_find` without the messages (and ~2x faster): the same checks, and on a failed
    one :class:`Anomaly`. Found: the node's names are left on ``walk.stack``."""
    buf, pos, end = walk.buf, walk.start, walk.end
    parts = [p.encode("latin-1") for p in path.split("/") if p]
    strings = walk.strings
    last_nul = strings.rfind(b"\0")
    unpack, unpack2 = U32.unpack_from, LEN_OFF.unpack_from
    opened: list[int] = []  # where each open node's token is
    on = 0
    while True:
        if pos + 4 > end:
            raise Anomaly
        tag = unpack(buf, pos)[0]
        if tag == _PROP_TAG:
            if pos + 12 > end or not opened:
                raise Anomaly
            ln, nameoff = unpack2(buf, pos + 4)
            pos = (pos + 15 + ln) & -4
            if nameoff > last_nul or pos > end:
                raise Anomaly
        elif tag == _BEGIN:
            nul = buf.find(b"\0", pos + 4, end)
            nxt = (nul + 4) & -4
            if nul < 0 or nxt > end or len(opened) >= F.FDT_MAX_DEPTH or (on and not opened):
                raise Anomaly
            opened.append(pos)
            depth = len(opened)
            if depth == 1 or (depth == on + 1 and _matches(buf[pos + 4:nul], parts[on - 1])):
                on += 1
                if on == len(parts) + 1:
                    walk.stack[:] = [bytes(buf[p + 4:buf.find(b"\0", p + 4, end)])
                                     for p in opened]
                    return nxt
            pos = nxt
        elif tag == _END_NODE:
            if not opened:
                raise Anomaly
            opened.pop()
            if len(opened) < on:
                return None
            pos += 4
        elif tag == _NOP:
            pos += 4
        else:
            raise Anomaly


def _locate(walk: Walk, path: str) -> tuple[int | None, Iterator[tuple[int, int, int, int, bytes]]]:
    """Where the node's content starts (None: no such node), and the checked walk from there."""
    try:
        content = _quick_find(walk, path)
    except Anomaly:
        walk.stack.clear()
        tokens = walk.tokens(walk.start)
        return _find(walk, tokens, path), tokens
    return content, walk.tokens(content if content is not None else walk.start)


def _find(walk: Walk, tokens: Iterator[tuple[int, int, int, int, bytes]], path: str
          ) -> int | None:
    """Where the node at ``path`` starts its content, or None when there is none."""
    parts = [p.encode("latin-1") for p in path.split("/") if p]
    on = 0  # how many nodes on the path are open
    for tag, _, nxt, _, name in tokens:
        depth = len(walk.stack)
        if tag == _BEGIN:
            if depth == 1 and on == 0:
                on = 1  # the root
            elif depth == on + 1 and _matches(name, parts[on - 1]):
                on += 1
            else:
                continue
            if on == len(parts) + 1:
                return nxt
        elif tag == _END_NODE and depth < on:
            return None  # the deepest node on the path closed without the next name
    return None  # pragma: no cover - FDT_END comes only after the root closed


def _prop(walk: Walk, tokens: Iterator[tuple[int, int, int, int, bytes]], name: bytes
          ) -> tuple[int, int, int] | int:
    """The first property ``name`` among the node's own items: (token offset, value offset,
    length); else the offset where the node's content ends."""
    base = len(walk.stack)
    for tag, pos, value, ln, got in tokens:
        if tag == _PROP_TAG and len(walk.stack) == base and got == name:
            return pos, value, ln
        if tag == _END_NODE and len(walk.stack) < base:
            return pos
    return -1  # pragma: no cover - FDT_END comes only after the root closed


def usable(buf: Blob) -> Blocks | None:
    """The checked blocks, or None when the model must read this blob."""
    total = U32.unpack_from(buf, 4)[0] if len(buf) >= 8 else 0
    blocks = check_blocks(memoryview(buf)[:max(total, _HDR.size)], len(buf))
    h = blocks.head
    if h.version < 17 or not h.off_mem_rsvmap <= h.off_dt_struct <= h.off_dt_strings:
        return None
    return blocks


def _latin1(*texts: str) -> bool:
    try:
        for t in texts:
            t.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def get_property(buf: Blob, path: str, name: str) -> bytes | None:
    """The value of ``name`` in node ``path`` (refused when there is no such node or property);
    None when the model must read this blob."""
    blocks = usable(buf)
    if blocks is None or not _latin1(path, name):
        return None
    if not path.startswith("/"):
        raise UsageError(f"node path must start with '/': {path!r}")
    walk = Walk(buf, blocks)
    content, tokens = _locate(walk, path)
    if content is None:
        raise NotFound(f"no node {path}", fmt="dtb")
    found = _prop(walk, tokens, name.encode("latin-1"))
    if isinstance(found, int):
        raise NotFound(f"no property {name} in {path}", fmt="dtb")
    _, value, ln = found
    return bytes(buf[value:value + ln])


def set_property(buf: Blob, path: str, name: str, value: bytes, *, pack: bool = False
                 ) -> bytes | None:
    """The blob with ``name`` in node ``path`` set to ``value``: the bytes
    ``DeviceTree.set`` then ``build(pack)`` give. None when the model must write this blob."""
    blocks = usable(buf)
    if blocks is None or not _latin1(path, name):
        return None
    if not path.startswith("/"):
        raise UsageError(f"node path must start with '/': {path!r}")
    h = blocks.head
    walk = Walk(buf, blocks)
    content, tokens = _locate(walk, path)
    if content is None:
        raise NotFound(f"no node {path}", fmt="dtb")
    raw_name = name.encode("latin-1")
    found = _prop(walk, tokens, raw_name)
    strings = walk.strings
    pad = b"\0" * (-len(value) % 4)
    if isinstance(found, int):  # a new property goes first in its node
        nameoff = strings.find(raw_name + b"\0")
        if nameoff < 0:
            nameoff = len(strings)
            strings += raw_name + b"\0"
        cut = (content, content)
        token = _PROP.pack(_PROP_TAG, len(value), nameoff) + value + pad
    else:
        pos, at, ln = found
        cut = (pos, (at + ln + 3) & -4)
        if bytes(buf[at:at + ln]) == value:  # unchanged: its alignment bytes stay too
            token = bytes(buf[cut[0]:cut[1]])
        else:
            token = _PROP.pack(_PROP_TAG, len(value), _PROP.unpack_from(buf, pos)[2]) + \
                value + pad
    view = memoryview(buf)
    struct_block = (view[h.off_dt_struct:cut[0]], token, view[cut[1]:blocks.struct_limit])
    size_struct = blocks.struct_limit - h.off_dt_struct + len(token) - (cut[1] - cut[0])
    fields = dict(zip(F.HEADER_FIELDS, _HDR.unpack_from(buf, 0), strict=True))
    if pack:
        rsv = view[h.off_mem_rsvmap:blocks.rsv_end]
        head_size = (_HDR.size + 7) & -8
        fields.update(off_mem_rsvmap=head_size, off_dt_struct=head_size + len(rsv))
        before: tuple[bytes | memoryview, ...] = (b"\0" * (head_size - _HDR.size), rsv)
        gap: bytes | memoryview = b""
        tail: bytes | memoryview = b""
    else:
        before = (view[_HDR.size:h.off_dt_struct],)
        gap = view[blocks.struct_limit:h.off_dt_strings]
        old_tail = view[blocks.strings_end:h.totalsize]
        end = h.off_dt_struct + size_struct + len(gap) + len(strings)
        grow = end - blocks.strings_end
        # as the model: growth eats the padding, shrinking gives it back as zeros
        tail = old_tail[grow:] if grow > 0 else \
            (b"\0" * -grow + bytes(old_tail)) if len(old_tail) else b""
    off_strings = fields["off_dt_struct"] + size_struct + len(gap)
    fields.update(off_dt_strings=off_strings, size_dt_strings=len(strings),
                  size_dt_struct=size_struct,
                  totalsize=off_strings + len(strings) + len(tail))
    header = _HDR.pack(*(fields[f] for f in F.HEADER_FIELDS))
    return b"".join((header, *before, *struct_block, gap, strings, tail))


# -- a partial tree for the hand-over patch ----------------------------------------------------
_FULL = (b"chosen", b"reserved-memory")  # root children read whole; what ppc_fdt looks into


def partial_tree(buf: Blob) -> DeviceTree | None:
    """The tree with every subtree below the root's children kept as bytes (:class:`Opaque`),
    except under ``/chosen`` and ``/reserved-memory``: all that the hand-over edit reads (root
    cells, memory nodes, reservations, /chosen) at a fraction of the cost; it writes the same
    bytes as the full tree. Every token is still walked and checked; None when the full read is
    needed (a defect, whose message it gives; an old version; another block order)."""
    blocks = usable(buf)
    if blocks is None:
        return None
    h = blocks.head
    walk = Walk(buf, blocks)
    try:
        top, walked = _partial_walk(walk)
    except Anomaly:
        return None
    end = blocks.struct_limit
    return DeviceTree(
        version=h.version, last_comp_version=h.last_comp_version,
        boot_cpuid_phys=h.boot_cpuid_phys, reservations=blocks.reservations, top=top,
        strings=bytearray(walk.strings), gap0=bytes(buf[_HDR.size:h.off_mem_rsvmap]),
        gap1=bytes(buf[blocks.rsv_end:h.off_dt_struct]), gap2=bytes(buf[end:h.off_dt_strings]),
        struct_tail=bytes(buf[walked:end]), pad=bytes(buf[blocks.strings_end:h.totalsize]),
        data_end=blocks.strings_end, rsv_term=blocks.rsv_term, read_version=h.version)


def _partial_walk(walk: Walk) -> tuple[list[Node | Nop], int]:
    # The checks of Walk.tokens, without their messages (Anomaly instead).
    buf, pos, end, strings = walk.buf, walk.start, walk.end, walk.strings
    last_nul = strings.rfind(b"\0")
    unpack, unpack2 = U32.unpack_from, LEN_OFF.unpack_from
    names: dict[int, str] = {}
    top: list[Node | Nop] = []
    stack: list[Node] = []  # the open nodes that are built
    depth, root_done, full = 0, False, False
    opaque_at, opaque_depth, opaque_max = -1, 0, -1
    while True:
        if pos + 4 > end:
            raise Anomaly
        tag = unpack(buf, pos)[0]
        if tag == _PROP_TAG:
            if pos + 12 > end or not depth:
                raise Anomaly
            ln, nameoff = unpack2(buf, pos + 4)
            vend = pos + 12 + ln
            nxt = (vend + 3) & -4
            if nameoff > last_nul or nxt > end:
                raise Anomaly
            if opaque_at >= 0:
                opaque_max = max(opaque_max, nameoff)
            else:
                name = names.get(nameoff)
                if name is None:
                    name = names[nameoff] = \
                        strings[nameoff:strings.index(b"\0", nameoff)].decode("latin-1")
                pad = bytes(buf[vend:nxt])
                stack[-1].items.append(Prop(name, bytes(buf[pos + 12:vend]), nameoff,
                                            pad if pad.strip(b"\0") else b""))
            pos = nxt
        elif tag == _BEGIN:
            nul = buf.find(b"\0", pos + 4, end)
            nxt = (nul + 4) & -4
            if root_done or nul < 0 or nxt > end or depth >= F.FDT_MAX_DEPTH:
                raise Anomaly
            depth += 1
            if opaque_at < 0:
                raw = bytes(buf[pos + 4:nul])
                if depth == 2:
                    full = raw.partition(b"@")[0] in _FULL
                if depth > 2 and not full:
                    opaque_at, opaque_depth, opaque_max = pos, depth, -1
                else:
                    pad = bytes(buf[nul + 1:nxt])
                    node = Node(raw.decode("latin-1"), [], pad if pad.strip(b"\0") else b"")
                    (stack[-1].items if stack else top).append(node)
                    stack.append(node)
            pos = nxt
        elif tag == _END_NODE:
            if not depth:
                raise Anomaly
            if opaque_at < 0:
                stack.pop()
            elif depth == opaque_depth:
                stack[-1].items.append(Opaque(bytes(buf[opaque_at:pos + 4]), opaque_max))
                opaque_at = -1
            depth -= 1
            root_done = not depth
            pos += 4
        elif tag == _NOP:
            if opaque_at < 0:
                (stack[-1].items if stack else top).append(NOP)
            pos += 4
        elif tag == _END and root_done and not depth:
            return top, pos + 4
        else:
            raise Anomaly
