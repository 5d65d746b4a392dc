"""Device-tree files: a DTB or DTS read into a tree, what ``inspect`` reports about one, and the
hand-over announcement written back to a new file."""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
from dataclasses import dataclass

from kimagekit import dts, fdt_raw, fdt_values, ppc_fdt
from kimagekit.devicetree import DeviceTree, Header, Reservation
from kimagekit.errors import NotFound, UnrecognisedFormat, UsageError, input_named
from kimagekit.fileio import (
    atomic_write,
    atomic_write_with_tail,
    map_file,
    mapped,
    read_head,
    read_input,
)
from kimagekit.formats.fdt import FDT_MAGIC

__all__ = [
    "DtbPatchResult", "DtbSummary", "Pathish", "describe", "dts_text", "is_dtb", "is_tree",
    "load_tree", "patch_handover", "read_property", "set_property", "write_tree",
]

Pathish = str | os.PathLike[str]
_MAGIC = FDT_MAGIC.to_bytes(4, "big")


def is_dtb(head: bytes) -> bool:
    return head[:4] == _MAGIC


def is_tree(head: bytes) -> bool:
    """A DTB, or DTS source."""
    return is_dtb(head) or dts.looks_like_dts(head)


def load_tree(path: Pathish) -> DeviceTree:
    """A DTB, or DTS text compiled in memory; anything else is refused."""
    head = read_head(path, 4096)
    if is_dtb(head):
        with mapped(path) as view:
            return DeviceTree.parse(view)
    if dts.looks_like_dts(head):
        if _regular(path):  # dtc reads it by name, so /include/ resolves beside it
            return dts.from_dts_file(path)
        return dts.from_dts(read_input(path))  # a pipe's bytes, as dtc would read them
    raise UnrecognisedFormat("not a device tree (no DTB magic, no /dts-v1/ tag)", fmt="dtb")


def dts_text(path: Pathish) -> str:
    """The tree as DTS text (:func:`kimagekit.dts.to_dts`); a DTB is written straight from its
    tokens when it can be."""
    if is_dtb(read_head(path, 4)):
        with map_file(path) as (mm, view):
            text = dts.blob_to_dts(_blob(mm, view))
        if text is not None:
            return text
    return dts.to_dts(load_tree(path))


def resolve_alias(path: Pathish, node: str) -> str:
    """``node`` as libfdt's ``fdt_path_offset`` reads it: a path not starting with ``/``
    starts with a name in ``/aliases``, whose value (a path) stands for it."""
    if node.startswith("/"):
        return node
    name, slash, rest = node.partition("/")
    try:
        raw = read_property(path, "/aliases", name)
    except NotFound:
        raise NotFound(f"no alias {name!r} in /aliases (a node path starts with '/')",
                       fmt="dtb") from None
    target = raw.split(b"\0")[0].decode("latin-1")
    if not target.startswith("/"):
        raise NotFound(f"alias {name!r} is not a path: {target!r}", fmt="dtb")
    return target.rstrip("/") + slash + rest if rest else target


def read_property(path: Pathish, node: str, prop: str) -> bytes:
    """One property's raw value; a missing node or property is refused."""
    node = resolve_alias(path, node)
    if is_dtb(read_head(path, 4)):
        with map_file(path) as (mm, view):
            raw = fdt_raw.get_property(_blob(mm, view), node, prop)
        if raw is not None:
            return raw
    tree = load_tree(path)
    tree.need(node)
    raw = tree.get(node, prop)
    if raw is None:
        raise NotFound(f"no property {prop} in {node}", fmt="dtb")
    return raw


@dataclass(frozen=True)
class NodeListing:
    """A node's subnodes (``fdtget -l``) and property names (``fdtget -p``), in blob order."""

    node: str
    subnodes: tuple[str, ...]
    properties: tuple[str, ...]


def list_node(path: Pathish, node: str) -> NodeListing:
    tree = load_tree(path)
    found = tree.need(resolve_alias(path, node))
    return NodeListing(node, tuple(c.name for c in found.children()),
                       tuple(p.name for p in found.props()))


@dataclass(frozen=True)
class SetResult:
    output: str
    node: str
    prop: str
    type: str  # what the value was encoded as (FdtType.text)
    kept: bool  # no --type: the old value's type was kept
    created: tuple[str, ...]  # nodes made on the way (-c / -p)
    size: int  # the new DTB's size


def set_property(path: Pathish, output: Pathish, node: str, prop: str,
                 kind: fdt_values.FdtType | str | None, values: list[str], *,
                 pack: bool = False, create: str = "") -> SetResult:
    """Set one property to ``values`` encoded as ``kind`` (a ``-t`` type or its text; None: the
    type the old value has, as fdtget guesses it, else 32-bit cells, fdtput's default) and
    write the new DTB atomically; everything else keeps its bytes. ``create``: ``"last"``
    makes the node when its parent exists (fdtput -c), ``"all"`` every missing node on the
    path (fdtput -p); otherwise the node must exist."""
    if isinstance(kind, str):
        kind = fdt_values.parse_type(kind)
    with input_named(path):
        node = resolve_alias(path, node)
        old = None
        with contextlib.suppress(NotFound):
            old = read_property(path, node, prop)
        used = kind or (fdt_values.kept_type(old) if old is not None else
                        fdt_values.FdtType("i", 4))
        if used.letter in ("i", "u", "x") and not used.size:  # fdtput writes 32-bit cells
            used = fdt_values.FdtType(used.letter, 4)
        try:
            value = fdt_values.encode_values(used, values)
        except UsageError as exc:
            if kind is None:
                source = "the old value's type" if old is not None else "the default type"
                raise UsageError(f"{exc.message} ({source}; give --type, e.g. -t s for a "
                                 "string)") from None
            raise
        data = None
        created: tuple[str, ...] = ()
        if create and load_tree(path).find(node) is None:
            tree = load_tree(path)
            created = _create_nodes(tree, node, create == "all")
            tree.set(node, prop, value)
            data = tree.build(pack=pack)
        elif is_dtb(read_head(path, 4)):
            with map_file(path) as (mm, view):
                data = fdt_raw.set_property(_blob(mm, view), node, prop, value, pack=pack)
        if data is None:
            tree = load_tree(path)
            tree.set(node, prop, value)
            data = tree.build(pack=pack)
    write_tree(path, output, data)
    return SetResult(str(output), node, prop, used.text(), kind is None and old is not None,
                     created, len(data))


def _create_nodes(tree: DeviceTree, node: str, parents: bool) -> tuple[str, ...]:
    # fdtput -c makes only the last node (its parent must exist); -p every missing one
    parts = [p for p in node.split("/") if p]
    made: list[str] = []
    for i in range(len(parts)):
        path = "/" + "/".join(parts[:i + 1])
        if tree.find(path) is not None:
            continue
        parent = "/" + "/".join(parts[:i])
        if not parents and i != len(parts) - 1:
            tree.need(path)  # a missing parent: not found, as fdtput -c says
        tree.add_node(parent, parts[i])
        made.append(path)
    return tuple(made)


@dataclass(frozen=True)
class RemoveResult:
    output: str
    node: str
    removed: tuple[str, ...]  # the property names deleted; empty: the node was removed
    size: int


def remove(path: Pathish, output: Pathish, node: str, props: list[str], *,
           pack: bool = False) -> RemoveResult:
    """Delete properties of a node (fdtput -d), or the node with everything under it (fdtput
    -r, when ``props`` is empty), and write the new DTB atomically. As libfdt's
    ``fdt_delprop``, a deleted name stays in the strings block."""
    with input_named(path):
        node = resolve_alias(path, node)
        tree = load_tree(path)
        tree.keep_deleted_names = True
        tree.need(node)
        if not props:
            if not [p for p in node.split("/") if p]:
                raise UsageError("the root node cannot be removed")
            tree.remove_node(node)
        for name in props:
            if not tree.delete(node, name):
                raise NotFound(f"no property {name} in {node}", fmt="dtb")
        data = tree.build(pack=pack)
    write_tree(path, output, data)
    return RemoveResult(str(output), node, tuple(props), len(data))


def _blob(mm: mmap.mmap | None, view: memoryview) -> fdt_raw.Blob:
    # a pipe was read into bytes; an empty file has neither (and no DTB magic)
    return mm if mm is not None else bytes(view)


def write_tree(source: Pathish, output: Pathish, blob: bytes) -> None:
    """Write ``blob`` atomically; when ``source`` is a DTB followed by more bytes than its
    totalsize, those follow the new blob unchanged, copied sparse and never read into memory."""
    if not _regular(source):  # a pipe was read whole: nothing follows the tree
        atomic_write(output, blob, inputs=(source,))
        return
    head = read_head(source, 8)
    size = os.stat(source).st_size
    total = int.from_bytes(head[4:8], "big") if is_dtb(head) and len(head) == 8 else size
    if total >= size:
        atomic_write(output, blob, inputs=(source,))
    else:
        atomic_write_with_tail(output, blob, source, total, inputs=(source,))


def _regular(path: Pathish) -> bool:
    try:
        return os.fspath(path) != "-" and stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


@dataclass(frozen=True)
class DtbSummary:
    source: str
    header: Header
    reservations: tuple[Reservation, ...]
    chosen: dict[str, str]
    handovers: tuple[ppc_fdt.Handover, ...]
    ram: tuple[ppc_fdt.Range, ...]
    node_count: int
    read_version: int  # the file's version; ``header`` is the blob as kimagekit writes it


def describe(path: Pathish) -> DtbSummary:
    tree = load_tree(path)
    return DtbSummary("dtb" if is_dtb(read_head(path, 4)) else "dts", tree.header(),
                      tuple(tree.reservations), ppc_fdt.chosen_items(tree),
                      ppc_fdt.handovers(tree), ppc_fdt.ram_ranges(tree), tree.node_count(),
                      tree.read_version or tree.version)


@dataclass(frozen=True)
class DtbPatchResult:
    output: str
    action: str  # "set" or "removed"
    handovers: tuple[ppc_fdt.Handover, ...]
    size: int


def patch_handover(file: Pathish, output: Pathish, *, start: int | None = None,
                   size: int | None = None, style: str = "seed", remove: bool = False,
                   pack: bool = False) -> DtbPatchResult:
    """Set the hand-over buffer (``start``, ``size``) in a DTB/DTS, or remove every one, and write
    the result atomically."""
    with input_named(file):
        tree = None
        if is_dtb(read_head(file, 4)):
            with map_file(file) as (mm, view):
                tree = fdt_raw.partial_tree(_blob(mm, view))
        if tree is None:
            tree = load_tree(file)
        if remove:
            done = ppc_fdt.remove_handover(tree)
            if not done:
                raise UsageError("no hand-over buffer to remove", fmt="dtb")
        else:
            if start is None or size is None:
                raise UsageError("--start and --size are needed (or --remove)")
            done = (ppc_fdt.set_handover(tree, start, size, style),)
        data = tree.build(pack=pack)
    write_tree(file, output, data)
    return DtbPatchResult(str(output), "removed" if remove else "set", done, len(data))
