"""Byte-exact flattened device trees: parse, edit, write.

The model keeps every byte it does not understand as bytes (gaps between blocks, padding after the
last block, non-zero alignment bytes, the strings table as it is), so an unedited tree writes back
byte for byte. Edits follow libfdt's placement rules (a new property goes first in its node, a new
node after its parent's properties, a new reservation last, a new name is looked up in the strings
table before it is appended), so an edit changes only what it must. Growth eats the padding after
the last block (the blob grows when there is none left); shrinking gives it back as zero bytes,
and a packed blob stays packed, so a set followed by a delete restores the original bytes when
the padding was zero or absent.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from kimagekit.errors import NotFound, ParseError, UsageError
from kimagekit.fileio import Buffer
from kimagekit.formats import fdt as F

__all__ = [
    "NOP", "TYPES", "Blocks", "DeviceTree", "Header", "Node", "Nop", "Opaque", "Prop",
    "Reservation", "check_blocks", "decode", "encode", "is_redundant_name",
]

_HDR = struct.Struct(">" + "I" * len(F.HEADER_FIELDS))
_RSV = struct.Struct(">QQ")
_PROP = struct.Struct(">III")
_U32 = struct.Struct(">I")
_TAG_BEGIN = _U32.pack(F.FDT_BEGIN_NODE)
_TAG_END_NODE = _U32.pack(F.FDT_END_NODE)
_TAG_NOP = _U32.pack(F.FDT_NOP)
_TAG_END = _U32.pack(F.FDT_END)
# The fast walk's sizes come from the schemas; these fail at import if they ever disagree.
if _HDR.size != F.header_size(F.LAST_COMP_VERSION) or _RSV.size != F.RESERVE_ENTRY_SIZE:
    raise ImportError("fdt fast path disagrees with formats.fdt")  # pragma: no cover
if _PROP.size != F.FDT_TAGSIZE + F.PROP_HEADER_SIZE:
    raise ImportError("fdt fast path disagrees with formats.fdt")  # pragma: no cover

TYPES = ("u32", "u64", "string", "strings", "bytes")


def _align(n: int, a: int = F.FDT_TAGSIZE) -> int:
    return (n + a - 1) & -a


@dataclass(frozen=True)
class Header:
    magic: int
    totalsize: int
    off_dt_struct: int
    off_dt_strings: int
    off_mem_rsvmap: int
    version: int
    last_comp_version: int
    boot_cpuid_phys: int
    size_dt_strings: int
    size_dt_struct: int | None


@dataclass(frozen=True)
class Reservation:
    address: int
    size: int


@dataclass(frozen=True, slots=True)
class Prop:
    name: str
    value: bytes
    nameoff: int
    pad: bytes = b""  # alignment bytes, kept only when they were not zero


class Nop:
    """One FDT_NOP token, kept where it was."""

    __slots__ = ()


NOP = Nop()


class Opaque:
    """A subtree kept as its bytes, unread (a partial read: :func:`kimagekit.fdt_raw.partial_tree`);
    ``max_nameoff`` is the highest name offset its properties use (-1: none)."""

    __slots__ = ("max_nameoff", "raw")

    def __init__(self, raw: bytes, max_nameoff: int) -> None:
        self.raw = raw
        self.max_nameoff = max_nameoff


class Node:
    __slots__ = ("items", "name", "pad")

    def __init__(self, name: str, items: list[Prop | Node | Nop | Opaque] | None = None,
                 pad: bytes = b"") -> None:
        self.name = name
        self.items: list[Prop | Node | Nop | Opaque] = [] if items is None else items
        self.pad = pad

    def props(self) -> Iterator[Prop]:
        return (i for i in self.items if isinstance(i, Prop))

    def children(self) -> Iterator[Node]:
        return (i for i in self.items if isinstance(i, Node))

    def prop(self, name: str) -> Prop | None:
        return next((p for p in self.props() if p.name == name), None)

    def child(self, name: str) -> Node | None:
        # libfdt matches "cpu" against "cpu@0" when the unit address is left out.
        for c in self.children():
            if c.name == name or ("@" not in name and c.name.partition("@")[0] == name):
                return c
        return None


@dataclass
class DeviceTree:
    """One blob's content. Mutable on purpose: the edit methods change it in place."""

    version: int
    last_comp_version: int
    boot_cpuid_phys: int
    reservations: list[Reservation]
    top: list[Node | Nop]  # the root node with any NOPs around it
    strings: bytearray
    gap0: bytes = b""  # header end -> reservation block
    gap1: bytes = b""  # reservation block -> struct block
    gap2: bytes = b""  # struct block -> strings block
    struct_tail: bytes = b""  # bytes counted in size_dt_struct after FDT_END
    pad: bytes = b""  # strings end -> totalsize, as parsed
    rsv_term: bytes = b""  # the reservation map's terminating entry, when not all zeros
    read_version: int = 0  # the version of the blob it was read from (0: built here)
    relaid: bool = False  # read from an old version or another block order: written anew
    data_end: int = -1  # where the strings block ended when parsed
    # libfdt's fdt_delprop never shrinks the strings block; a loader edit sets this to match it
    # (by default a delete undoes the name its set appended, so set-then-delete is a no-op).
    keep_deleted_names: bool = False
    _name_cache: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def root(self) -> Node:
        return next(n for n in self.top if isinstance(n, Node))

    # -- reading -------------------------------------------------------------------------------
    @classmethod
    def new(cls, boot_cpuid_phys: int = 0) -> DeviceTree:
        """An empty tree (root node only), version 17, packed."""
        return cls(17, 16, boot_cpuid_phys, [], [Node("")], bytearray())

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> DeviceTree:
        """Read the blob at the start of ``data``. Only its totalsize bytes are copied: whatever
        follows (a file's tail) is neither read nor kept, and :meth:`build` gives the blob."""
        view = memoryview(data)
        total = _U32.unpack_from(view, 4)[0] if len(view) >= 8 else 0
        return _parse(bytes(view[:max(total, _HDR.size)]), len(view))

    def header(self, pack: bool = False) -> Header:
        return _layout(self, pack)[0]

    def walk(self) -> Iterator[tuple[str, Node]]:
        """Every node with its path, in blob order."""
        todo: list[tuple[str, Node]] = [("/", self.root)]
        while todo:
            path, node = todo.pop()
            yield path, node
            base = path.rstrip("/")
            todo.extend((f"{base}/{c.name}", c) for c in reversed(list(node.children())))

    def node_count(self) -> int:
        return sum(1 for _ in self.walk())

    def find(self, path: str) -> Node | None:
        if not path.startswith("/"):
            raise UsageError(f"node path must start with '/': {path!r}")
        node: Node | None = self.root
        for part in filter(None, path.split("/")):
            node = node.child(part) if node else None
        return node

    def need(self, path: str) -> Node:
        node = self.find(path)
        if node is None:
            raise NotFound(f"no node {path}", fmt="dtb")
        return node

    def get(self, path: str, name: str) -> bytes | None:
        node = self.find(path)
        prop = node.prop(name) if node else None
        return prop.value if prop else None

    # -- editing -------------------------------------------------------------------------------
    def set(self, path: str, name: str, value: bytes) -> None:
        node = self.need(path)
        for i, item in enumerate(node.items):
            if isinstance(item, Prop) and item.name == name:
                pad = item.pad if item.value == value else b""
                node.items[i] = Prop(name, bytes(value), item.nameoff, pad)
                return
        node.items.insert(0, Prop(name, bytes(value), self._nameoff(name)))

    def delete(self, path: str, name: str) -> bool:
        node = self.find(path)
        if node is None:
            return False
        for i, item in enumerate(node.items):
            if isinstance(item, Prop) and item.name == name:
                del node.items[i]
                if not self.keep_deleted_names:
                    self._drop_last_string(item)
                return True
        return False

    def add_node(self, parent: str, name: str) -> Node:
        node = self.need(parent)
        if not name or "/" in name:
            raise UsageError(f"bad node name {name!r}")
        if any(c.name == name for c in node.children()):
            raise UsageError(f"node {parent.rstrip('/')}/{name} already exists", fmt="dtb")
        at = next((i for i, it in enumerate(node.items) if isinstance(it, Node)), len(node.items))
        new = Node(name)
        node.items.insert(at, new)
        return new

    def remove_node(self, path: str) -> bool:
        parent_path, _, name = path.rstrip("/").rpartition("/")
        if not name:
            raise UsageError("the root node cannot be removed")
        parent = self.find(parent_path or "/")
        target = self.find(path)
        if parent is None or target is None:
            return False
        parent.items.remove(target)
        return True

    def add_reservation(self, address: int, size: int) -> None:
        self.reservations.append(Reservation(address, size))

    def remove_reservation(self, address: int, size: int) -> bool:
        """Remove the first entry with exactly this start and size (as the kernel matches)."""
        for i, r in enumerate(self.reservations):
            if r.address == address and r.size == size:
                del self.reservations[i]
                return True
        return False

    def _nameoff(self, name: str) -> int:
        raw = name.encode("latin-1") + b"\0"
        at = self.strings.find(raw)
        if at < 0:
            at = len(self.strings)
            self.strings += raw
        return at

    def _drop_last_string(self, gone: Prop) -> None:
        # Undo an append: the name goes when it is the table's last string and nothing uses it.
        raw = gone.name.encode("latin-1") + b"\0"
        if gone.nameoff != len(self.strings) - len(raw) or not self.strings.endswith(raw):
            return
        for _, node in self.walk():
            if any(p.nameoff >= gone.nameoff if isinstance(p, Prop) else
                   isinstance(p, Opaque) and p.max_nameoff >= gone.nameoff for p in node.items):
                return
        del self.strings[gone.nameoff:]

    # -- writing -------------------------------------------------------------------------------
    def build(self, pack: bool = False) -> bytes:
        """The blob. ``pack`` drops gaps and padding and puts the blocks right after the header
        (what ``fdt_pack``, and so ``fdtput``, does); otherwise the layout is kept."""
        head, rsv, body, strings, gaps = _layout(self, pack)
        values = [getattr(head, n) for n in F.HEADER_FIELDS]
        hbytes = _HDR.pack(*values) if head.version >= F.LAST_COMP_VERSION \
            else _HDR.pack(*values[:-1], 0)[:-4]
        g0, g1, g2, pad = gaps
        return b"".join((hbytes, g0, rsv, g1, body, g2, strings, pad))


def _build_struct(tree: DeviceTree) -> bytes:
    out: list[bytes] = []
    zeros = b"\0\0\0"

    def node(n: Node) -> None:
        raw = n.name.encode("latin-1")
        out.append(_TAG_BEGIN + raw + b"\0" + (n.pad or zeros[: -(len(raw) + 1) % 4]))
        for it in n.items:
            if isinstance(it, Prop):
                out.append(_PROP.pack(F.FDT_PROP, len(it.value), it.nameoff) + it.value
                           + (it.pad or zeros[: -len(it.value) % 4]))
            elif isinstance(it, Node):
                node(it)
            elif isinstance(it, Opaque):
                out.append(it.raw)
            else:
                out.append(_TAG_NOP)
        out.append(_TAG_END_NODE)

    for it in tree.top:
        if isinstance(it, Node):
            node(it)
        else:
            out.append(_TAG_NOP)
    out.append(_TAG_END)
    out.append(tree.struct_tail)
    return b"".join(out)


def _layout(tree: DeviceTree, pack: bool
            ) -> tuple[Header, bytes, bytes, bytes, tuple[bytes, bytes, bytes, bytes]]:
    hsize = F.header_size(tree.version)
    rsv = b"".join(_RSV.pack(r.address, r.size) for r in tree.reservations) + \
        (tree.rsv_term or _RSV.pack(0, 0))
    body = _build_struct(tree)
    strings = bytes(tree.strings)
    if pack:
        g0, g1, g2, pad = b"\0" * (_align(hsize, 8) - hsize), b"", b"", b""
    else:
        g0, g1, g2 = tree.gap0, tree.gap1, tree.gap2
    off_rsv = hsize + len(g0)
    off_struct = off_rsv + len(rsv) + len(g1)
    off_strings = off_struct + len(body) + len(g2)
    end = off_strings + len(strings)
    if not pack:
        delta = end - (tree.data_end if tree.data_end >= 0 else end)
        # A packed input stays packed; padded input gets freed bytes back as zeros.
        pad = tree.pad[delta:] if delta > 0 else (b"\0" * -delta + tree.pad) if tree.pad else b""
    head = Header(F.FDT_MAGIC, end + len(pad), off_struct, off_strings, off_rsv, tree.version,
                  tree.last_comp_version, tree.boot_cpuid_phys, len(strings),
                  len(body) if tree.version >= F.LAST_COMP_VERSION else None)
    return head, rsv, body, strings, (g0, g1, g2, pad)


# -- parsing -----------------------------------------------------------------------------------
def _err(msg: str, fld: str, offset: int) -> ParseError:
    return ParseError(msg, fmt="dtb", field=fld, offset=offset)


_BLOCK_NAMES = {"rsvmap": "reservation map", "struct": "struct block",
                "strings": "strings block"}


class Blocks(NamedTuple):
    """Where a checked blob's blocks lie (what the token walk needs)."""

    head: Header
    reservations: list[Reservation]
    rsv_end: int
    rsv_term: bytes
    strings_end: int
    struct_limit: int


def check_blocks(buf: Buffer, file_size: int) -> Blocks:
    """The header and block checks every reader makes, and the reservation map read."""
    head = _parse_header(buf, file_size)
    starts = {"rsvmap": head.off_mem_rsvmap, "struct": head.off_dt_struct,
              "strings": head.off_dt_strings}

    def limit(name: str) -> int:
        # a block whose size the header does not give ends where the next one starts
        at = starts[name]
        return min([s for n, s in starts.items() if n != name and s > at] + [head.totalsize])

    sizes = {"struct": head.size_dt_struct,
             "strings": head.size_dt_strings if head.version >= 3 else None}
    for name, fld, at in (("struct", "size_dt_struct", 0x24), ("strings", "size_dt_strings", 0x20)):
        size = sizes[name]
        if not size:
            continue
        start = starts[name]
        for other, ostart in starts.items():
            if other != name and start <= ostart < start + size and \
                    (ostart > start or other == "rsvmap" or sizes.get(other) != 0):
                raise _err(f"{_BLOCK_NAMES[name]} [{start:#x}, {start + size:#x}) overlaps the "
                           f"{_BLOCK_NAMES[other]} at {ostart:#x}", f"header.{fld}", at)
    rsv, rsv_end, term = _parse_rsvmap(buf, head, limit("rsvmap"))
    str_size = sizes["strings"]
    str_end = head.off_dt_strings + str_size if str_size is not None else limit("strings")
    struct_limit = head.off_dt_struct + head.size_dt_struct \
        if head.size_dt_struct is not None else limit("struct")
    return Blocks(head, rsv, rsv_end, term, str_end, struct_limit)


def _parse(buf: bytes, file_size: int) -> DeviceTree:
    """``buf`` is the blob (at most totalsize bytes of a file of ``file_size``)."""
    head, rsv, rsv_end, term, str_end, struct_limit = check_blocks(buf, file_size)
    hsize = F.header_size(head.version)
    old = head.version < F.FIRST_VERSION
    strings = buf[head.off_dt_strings:str_end]
    top, walked = _walk(buf, head.off_dt_struct, struct_limit, strings, head.off_dt_strings, old)
    struct_end = struct_limit if head.size_dt_struct is not None else walked
    standard = head.off_mem_rsvmap <= head.off_dt_struct <= head.off_dt_strings
    if old or not standard:
        # dtc's old formats and other block orders are read, and written back as a packed
        # version 17 blob in the usual order (what dtc -I dtb -O dtb writes).
        return DeviceTree(version=max(head.version, F.LAST_COMP_VERSION), last_comp_version=16,
                          boot_cpuid_phys=head.boot_cpuid_phys, reservations=rsv, top=top,
                          strings=bytearray(strings), rsv_term=term, read_version=head.version,
                          relaid=True)
    return DeviceTree(
        version=head.version, last_comp_version=head.last_comp_version,
        boot_cpuid_phys=head.boot_cpuid_phys, reservations=rsv, top=top,
        strings=bytearray(strings), gap0=buf[hsize:head.off_mem_rsvmap],
        gap1=buf[rsv_end:head.off_dt_struct], gap2=buf[struct_end:head.off_dt_strings],
        struct_tail=buf[walked:struct_end], pad=buf[str_end:head.totalsize],
        data_end=str_end, rsv_term=term, read_version=head.version)


def _parse_header(buf: Buffer, file_size: int) -> Header:
    n = file_size
    if n < 4:
        raise _err(f"truncated header: {n} bytes, a DTB header needs at least 36",
                   "header.magic", 0)
    magic = _U32.unpack_from(buf, 0)[0]
    if magic != F.FDT_MAGIC:
        raise _err(f"bad magic {magic:#010x} (a DTB starts with 0xd00dfeed)", "header.magic", 0)
    version = _U32.unpack_from(buf, 20)[0] if n >= 24 else F.LAST_COMP_VERSION
    if n >= 24 and version not in F.OLD_VERSIONS and version < F.FIRST_VERSION:
        raise _err(f"version {version} is not supported (1, 2, 3, 16 and later are)",
                   "header.version", 20)
    hsize = F.header_size(version)
    if n < hsize:
        raise _err(f"truncated header: {n} bytes, a version {version} header needs {hsize}",
                   "header", 0)
    fields = F.header_fields(version)
    got = dict(zip(fields, struct.unpack_from(">" + "I" * len(fields), buf, 0), strict=True))
    h = Header(**{"boot_cpuid_phys": 0, "size_dt_strings": 0, "size_dt_struct": None, **got})
    if h.last_comp_version > F.LAST_COMP_VERSION:
        raise _err(f"last_comp_version {h.last_comp_version} is newer than 17",
                   "header.last_comp_version", 24)
    if h.totalsize > n:
        raise _err(f"totalsize {h.totalsize:#x} is beyond the end of the file ({n:#x} bytes)",
                   "header.totalsize", 4)
    if h.totalsize < hsize:
        raise _err(f"totalsize {h.totalsize:#x} is smaller than the header ({hsize:#x})",
                   "header.totalsize", 4)
    blocks = (("off_mem_rsvmap", 16, h.off_mem_rsvmap, 8, F.RESERVE_ENTRY_SIZE),
              ("off_dt_struct", 8, h.off_dt_struct, 4, h.size_dt_struct or F.FDT_TAGSIZE),
              ("off_dt_strings", 12, h.off_dt_strings, 1, h.size_dt_strings))
    for name, at, off, align, size in blocks:
        if off < hsize or off + size > h.totalsize:
            raise _err(f"block [{off:#x}, {off + size:#x}) is outside the blob "
                       f"[{hsize:#x}, totalsize {h.totalsize:#x})", f"header.{name}", at)
        if off % align:
            raise _err(f"{off:#x} is not {align}-byte aligned", f"header.{name}", at)
    return h


def _parse_rsvmap(buf: Buffer, h: Header, end: int) -> tuple[list[Reservation], int, bytes]:
    # As libfdt and dtc read it: the first entry of size 0 ends the map.
    out: list[Reservation] = []
    pos = h.off_mem_rsvmap
    while True:
        if pos + _RSV.size > end:
            what = "the end of the blob" if end == h.totalsize else \
                ("the struct block" if end == h.off_dt_struct else "the strings block")
            raise _err(f"reservation map truncated: no terminating entry (size 0) before "
                       f"{what} at {end:#x}",
                       f"rsvmap[{len(out)}]", pos)
        address, size = _RSV.unpack_from(buf, pos)
        pos += _RSV.size
        if size == 0:
            return out, pos, bytes(buf[pos - _RSV.size:pos])
        out.append(Reservation(address, size))


def _walk(buf: bytes, start: int, end: int, strings: bytes, strings_at: int, old: bool = False
          ) -> tuple[list[Node | Nop], int]:
    top: list[Node | Nop] = []
    stack: list[Node] = []
    names: dict[int, str] = {}
    root_done = False
    unpack = _U32.unpack_from
    pos = start

    def where(prop: str | None = None) -> str:
        path = "/" + "/".join(n.name for n in stack[1:])
        base = f"struct.node[{path}]" if stack else "struct"
        return f"{base}.prop[{prop}]" if prop is not None else base

    while True:
        if pos + 4 > end:
            raise _err(f"struct block ends at {end:#x} without FDT_END", where(), pos)
        tag = unpack(buf, pos)[0]
        if tag == F.FDT_PROP:
            if not stack:
                raise _err("FDT_PROP outside any node", where(), pos)
            if pos + _PROP.size > end:
                raise _err(f"property header runs past the struct block end {end:#x}",
                           where("?"), pos)
            _, ln, nameoff = _PROP.unpack_from(buf, pos)
            name = names.get(nameoff)
            if name is None:
                name = _name_at(strings, nameoff, strings_at, where("?"), pos)
                names[nameoff] = name
            vstart = pos + _PROP.size
            if old and ln >= 8:  # versions 1-3 align such values to 8, from the block start
                vstart = start + _align(vstart - start, 8)
            vend = vstart + ln
            nxt = _align(vend)
            if nxt > end:
                raise _err(f"value of {ln:#x} bytes runs past the struct block end {end:#x}",
                           where(name), pos)
            pad = b"" if old else buf[vend:nxt]
            if not (old and name == "name" and is_redundant_name(stack[-1], buf[vstart:vend])):
                stack[-1].items.append(Prop(name, buf[vstart:vend], nameoff,
                                            pad if pad.strip(b"\0") else b""))
            pos = nxt
        elif tag == F.FDT_BEGIN_NODE:
            if root_done:
                raise _err("a second root node", where(), pos)
            if len(stack) >= F.FDT_MAX_DEPTH:
                raise _err(f"nodes nested deeper than {F.FDT_MAX_DEPTH}", where(), pos)
            nul = buf.find(b"\0", pos + 4, end)
            if nul < 0:
                raise _err("node name is not terminated inside the struct block", where(), pos)
            nxt = _align(nul + 1)
            if nxt > end:
                raise _err("node name padding runs past the struct block end", where(), pos)
            pad = b"" if old else buf[nul + 1:nxt]
            name = buf[pos + 4:nul].decode("latin-1")
            if old:
                name = _base_name(name, stack, where(), pos)
            node = Node(name, [], pad if pad.strip(b"\0") else b"")
            (stack[-1].items if stack else top).append(node)
            stack.append(node)
            pos = nxt
        elif tag == F.FDT_END_NODE:
            if not stack:
                raise _err("FDT_END_NODE with no open node", where(), pos)
            stack.pop()
            root_done = not stack
            pos += 4
        elif tag == F.FDT_NOP:
            (stack[-1].items if stack else top).append(NOP)
            pos += 4
        elif tag == F.FDT_END:
            if stack:
                raise _err("FDT_END inside an open node", where(), pos)
            if not root_done:
                raise _err("no root node", where(), pos)
            return top, pos + 4
        else:
            raise _err(f"bad token {tag:#010x}", where(), pos)


def is_redundant_name(node: Node, value: bytes) -> bool:
    """A ``name`` property equal to the node's name without its unit address: versions 1-3
    add it, and dtc's checks drop it from any input."""
    return value == node.name.partition("@")[0].encode("latin-1") + b"\0"


def _base_name(full: str, stack: list[Node], fld: str, pos: int) -> str:
    # versions 1-3 hold full paths: "/" for the root, then "/a", "/a/b"
    parent = "/" + "/".join(n.name for n in stack[1:]) if stack else ""
    prefix = parent if parent in ("", "/") else parent + "/"
    if not full.startswith(prefix) or (not stack and full != "/") or \
            (stack and "/" in full[len(prefix):]):
        raise _err(f"node path {full!r} is not a child of {parent or 'the blob'!r}", fld, pos)
    return full[len(prefix):] if stack else ""


def _name_at(strings: bytes, nameoff: int, strings_at: int, fld: str, pos: int) -> str:
    if nameoff >= len(strings):
        raise _err(f"nameoff {nameoff:#x} is outside the strings block ({len(strings):#x} bytes)",
                   fld, pos)
    nul = strings.find(b"\0", nameoff)
    if nul < 0:
        raise _err(f"property name at strings offset {nameoff:#x} is not terminated",
                   "strings", strings_at + nameoff)
    return strings[nameoff:nul].decode("latin-1")


# -- typed values ------------------------------------------------------------------------------
def encode(kind: str, values: Sequence[int | str | bytes]) -> bytes:
    """Values of one type as property bytes: ``u32`` cells, ``u64``, ``string``, ``strings``,
    ``bytes``."""
    try:
        if kind in ("u32", "u64"):
            fmt = ">I" if kind == "u32" else ">Q"
            return b"".join(struct.pack(fmt, _as_int(v)) for v in values)
        if kind == "string":
            if len(values) != 1:
                raise UsageError(f"type string takes one value, got {len(values)}")
            return _as_bytes(values[0]) + b"\0"
        if kind == "strings":
            return b"".join(_as_bytes(v) + b"\0" for v in values)
        if kind == "bytes":
            return b"".join(v if isinstance(v, bytes) else bytes.fromhex(str(v)) for v in values)
    except (struct.error, ValueError) as exc:
        raise UsageError(f"cannot encode {values!r} as {kind}: {exc}") from exc
    raise UsageError(f"unknown type {kind!r} (one of {', '.join(TYPES)})")


def decode(kind: str, raw: bytes) -> tuple[int, ...] | tuple[str, ...] | bytes | str:
    """Property bytes read as ``kind``; a length that does not fit the type is refused."""
    if kind in ("u32", "u64"):
        width = 4 if kind == "u32" else 8
        if len(raw) % width:
            raise UsageError(f"{len(raw)} bytes are not a whole number of {kind} values")
        return struct.unpack(f">{len(raw) // width}{'I' if width == 4 else 'Q'}", raw)
    if kind in ("string", "strings"):
        if not raw.endswith(b"\0"):
            raise UsageError("value is not NUL-terminated, so not a string")
        parts = tuple(raw[:-1].decode("latin-1").split("\0"))
        if kind == "string":
            if len(parts) != 1:
                raise UsageError(f"value holds {len(parts)} strings, not one")
            return parts[0]
        return parts
    if kind == "bytes":
        return raw
    raise UsageError(f"unknown type {kind!r} (one of {', '.join(TYPES)})")


def _as_int(v: int | str | bytes) -> int:
    return v if isinstance(v, int) else int(v, 0)


def _as_bytes(v: int | str | bytes) -> bytes:
    if isinstance(v, bytes):
        return v
    if "\0" in str(v):
        raise UsageError("a string value cannot contain NUL")
    return str(v).encode("latin-1")
