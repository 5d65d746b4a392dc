"""Kexec HandOver (KHO) trees, read from a DTB dump (``/sys/kernel/debug/kho/out/fdt`` in the
kernel handing over, ``.../kho/in/fdt`` in the next one).

The root names the ABI (``compatible = "kho-vN"``) and holds ``preserved-memory-map``, the
physical address of the preserved-pages structure; each client (a subsystem preserving data)
is a subnode of the root whose data property holds the physical address of its data: ``fdt``
(a sub-tree) in kho-v1, ``preserved-data`` since kho-v2, and since kho-v3 ``blob-size``, the
data's size in bytes (7.2 writes kho-v4, whose tree is kho-v3's). The kernel writes these u64 values
with ``fdt_property(..., &phys, sizeof(phys))``: in the CPU's byte order (little-endian on every
architecture with KHO), not the big-endian cells of ordinary device-tree properties.

What the addresses point to lives in memory, not in the tree: given a memory dump,
:mod:`kimagekit.kho_memory` walks the preserved-pages radix tree (kho-v2 on; kho-v1's chunk
list is not read). A version it does not know is shown as found, its properties not
interpreted.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, replace

from kimagekit.devicetree import DeviceTree, Node
from kimagekit.errors import KimageError, UsageError
from kimagekit.kho_memory import PhysMemory, PreservedMemory, walk_radix

__all__ = ["DATA_PROPERTY", "MEMORY_MAP", "RADIX_VERSIONS", "SIZED_VERSIONS", "SIZE_PROPERTY",
           "KhoClient", "KhoTree", "describe", "is_kho_tree", "looks_like_kho", "read_kho",
           "with_memory"]

MEMORY_MAP = "preserved-memory-map"
#: the client data property of each known KHO ABI version (``KHO_FDT_COMPATIBLE``)
DATA_PROPERTY = {"kho-v1": "fdt", "kho-v2": "preserved-data", "kho-v3": "preserved-data",
                 "kho-v4": "preserved-data"}
SIZE_PROPERTY = "blob-size"  # KHO_SUB_TREE_SIZE_PROP_NAME
SIZED_VERSIONS = ("kho-v3", "kho-v4")  # clients carry blob-size
RADIX_VERSIONS = ("kho-v2", "kho-v3", "kho-v4")  # the memory map is the radix tree
_PREFIX = b"kho-v"


@dataclass(frozen=True)
class KhoClient:
    name: str
    data_property: str | None  # the version's data property (None: version unknown)
    data: int | None  # its u64 value: the client's data, physical address
    properties: tuple[str, ...]  # every property name, in the tree's order
    size: int | None = None  # blob-size (kho-v3 on): the data's size in bytes


@dataclass(frozen=True)
class KhoTree:
    compatible: str
    known: bool  # a version kimagekit knows (kho-v1, kho-v2)
    memory_map: int | None  # preserved-memory-map: physical address
    clients: tuple[KhoClient, ...]
    # what the next kernel could not use: a missing or mis-sized property, a client without
    # its data address; with a memory dump, what the preserved-pages walk could not read
    damage: tuple[str, ...]
    preserved: PreservedMemory | None = None  # with a memory dump: the pages preserved


def _compatible(tree: DeviceTree) -> bytes | None:
    p = tree.root.prop("compatible")
    return None if p is None else p.value


def is_kho_tree(tree: DeviceTree) -> bool:
    """The root's compatible names a KHO ABI (``kho-v<N>``)."""
    value = _compatible(tree)
    return value is not None and value.startswith(_PREFIX)


def _u64(value: bytes, little: bool) -> int | None:
    if len(value) != 8:
        return None
    (v,) = struct.unpack("<Q" if little else ">Q", value)
    return int(v)


def read_kho(tree: DeviceTree, *, little: bool = True) -> KhoTree:
    """The KHO tree's version, memory map and clients, each value checked for its size."""
    raw = _compatible(tree) or b""
    compatible = raw.split(b"\0", 1)[0].decode("ascii", "replace")
    data_prop = DATA_PROPERTY.get(compatible)
    damage: list[str] = []
    if not raw.startswith(_PREFIX):
        damage.append(f"root compatible {compatible!r} is not a KHO ABI (kho-v<N>)")
    mm = tree.root.prop(MEMORY_MAP)
    memory_map = None if mm is None else _u64(mm.value, little)
    if mm is None:
        damage.append(f"/: no {MEMORY_MAP}")
    elif memory_map is None:
        damage.append(f"/{MEMORY_MAP}: {len(mm.value)} bytes, not a u64")
    clients = []
    for node in tree.root.children():
        names = tuple(p.name for p in node.props())
        value = size = None
        if data_prop is not None:
            value = _client_u64(node, data_prop, little, damage)
        if compatible in SIZED_VERSIONS:
            size = _client_u64(node, SIZE_PROPERTY, little, damage)
        clients.append(KhoClient(node.name, data_prop, value, names, size))
    return KhoTree(compatible, data_prop is not None, memory_map, tuple(clients), tuple(damage))


def _client_u64(node: Node, name: str, little: bool, damage: list[str]) -> int | None:
    p = node.prop(name)
    value = None if p is None else _u64(p.value, little)
    if p is None:
        damage.append(f"/{node.name}: no {name}")
    elif value is None:
        damage.append(f"/{node.name}/{name}: {len(p.value)} bytes, not a u64")
    return value


def with_memory(tree: KhoTree, memory: str, page_size: int = 4096) -> KhoTree:
    """``tree`` with the pages its memory map preserves, read from the dump ``memory``
    (``FILE`` or ``FILE@BASE``); the walk's damage joins the tree's."""
    if tree.compatible not in RADIX_VERSIONS:
        raise UsageError(f"the {tree.compatible or 'unknown'} memory map is not the radix tree "
                         f"kimagekit walks ({', '.join(RADIX_VERSIONS)})", fmt="--memory")
    if tree.memory_map is None:
        raise UsageError(f"the tree has no usable {MEMORY_MAP} to walk", fmt="--memory")
    with PhysMemory(memory) as mem:
        got = walk_radix(mem, tree.memory_map, page_size)
    return replace(tree, preserved=got,
                   damage=tree.damage + tuple(f"{MEMORY_MAP}: {d}" for d in got.damage))


def looks_like_kho(head: bytes) -> bool:
    """``head`` (a file's first bytes) is a DTB whose root compatible names a KHO ABI."""
    if head[:4] != b"\xd0\x0d\xfe\xed" or _PREFIX not in head:
        return False
    try:
        return is_kho_tree(DeviceTree.parse(head))
    except KimageError:  # a tree longer than the head, or damaged: the device-tree kind reads it
        return False


def describe(path: str | os.PathLike[str]) -> KhoTree:
    """``inspect`` of a KHO tree dump."""
    from kimagekit.dtb_file import load_tree

    return read_kho(load_tree(path))
