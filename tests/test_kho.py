"""KHO trees (kernel/liveupdate/kexec_handover.c, include/linux/kho/abi/kexec_handover.h) read
from a DTB dump and shown by ``inspect``; the trees are built here, as the kernel's
``kho_finalize`` lays them out. Each rule's kernel source line is in its test's docstring."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from kho_helpers import RadixDump, elf_core

from kimagekit import kho
from kimagekit import kho_memory as km
from kimagekit.cli import main
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import UsageError


def make_kho(compatible: str, memory_map: bytes | None, clients: dict[str, dict[str, bytes]]
             ) -> bytes:
    """Root: compatible, preserved-memory-map, then one subnode per client (the properties
    first, the subnodes after: ``fdt_begin_node(root, "")``, ``fdt_property_string(root,
    "compatible", ...)``, the map's placeholder, then each ``kho_add_subtree``)."""
    t = DeviceTree.new()
    t.set("/", "compatible", compatible.encode() + b"\0")
    if memory_map is not None:
        t.set("/", "preserved-memory-map", memory_map)
    # libfdt's add_node puts a new node first among its siblings: add them last to first
    for name in reversed(clients):
        t.add_node("/", name)
    for name, props in clients.items():
        for k, v in reversed(props.items()):  # and a new property first in its node
            t.set(f"/{name}", k, v)
    return t.build()


def q(v: int) -> bytes:
    return struct.pack("<Q", v)


def test_kho_v1_clients_carry_fdt() -> None:
    """kho-v1: ``#define KHO_FDT_COMPATIBLE "kho-v1"``, ``#define PROP_PRESERVED_MEMORY_MAP
    "preserved-memory-map"``, ``#define PROP_SUB_FDT "fdt"``; kho_retrieve_subtree: ``val =
    fdt_getprop(fdt, offset, PROP_SUB_FDT, &len); if (!val || len != sizeof(*val)) return
    -EINVAL; *phys = (phys_addr_t)*val;`` -- a u64 in the CPU's order, not a BE cell."""
    data = make_kho("kho-v1", q(0x1_2345_6000), {"memblock": {"fdt": q(0x7FFF_E000)},
                                                 "ftrace": {"fdt": q(0x7FFF_C000)}})
    got = kho.read_kho(DeviceTree.parse(data))
    assert got == kho.KhoTree("kho-v1", True, 0x1_2345_6000, (
        kho.KhoClient("memblock", "fdt", 0x7FFF_E000, ("fdt",)),
        kho.KhoClient("ftrace", "fdt", 0x7FFF_C000, ("fdt",))), ())


def test_kho_v2_clients_carry_preserved_data() -> None:
    """kho-v2 (include/linux/kho/abi/kexec_handover.h): ``#define KHO_FDT_COMPATIBLE
    "kho-v2"``, ``#define KHO_FDT_MEMORY_MAP_PROP_NAME "preserved-memory-map"``, ``#define
    KHO_FDT_SUB_TREE_PROP_NAME "preserved-data"``."""
    data = make_kho("kho-v2", q(0x4000_0000), {"LUO": {"preserved-data": q(0x4010_0000)}})
    got = kho.read_kho(DeviceTree.parse(data))
    assert got.clients == (kho.KhoClient("LUO", "preserved-data", 0x4010_0000,
                                         ("preserved-data",)),)
    assert (got.memory_map, got.damage) == (0x4000_0000, ())
    # a v1 property name under v2 is the client's data missing
    data = make_kho("kho-v2", q(0x4000_0000), {"LUO": {"fdt": q(0x4010_0000)}})
    assert kho.read_kho(DeviceTree.parse(data)).damage == ("/LUO: no preserved-data",)


def test_sizes_and_missing_properties_are_damage() -> None:
    """kho_in_debugfs_init: ``if (len != sizeof(*fdt_phys)) { pr_warn("node `%s`'s prop `fdt`
    has invalid length: %d\\n", ...); continue; }``; a root without its map cannot be revived."""
    data = make_kho("kho-v1", struct.pack(">I", 5), {"a": {"fdt": b"\0" * 4}, "b": {}})
    got = kho.read_kho(DeviceTree.parse(data))
    assert got.memory_map is None
    assert got.damage == ("/preserved-memory-map: 4 bytes, not a u64",
                          "/a/fdt: 4 bytes, not a u64", "/b: no fdt")
    assert kho.read_kho(DeviceTree.parse(make_kho("kho-v1", None, {}))).damage == (
        "/: no preserved-memory-map",)


def test_unknown_version_is_shown_not_interpreted() -> None:
    """kho_populate: ``fdt_node_check_compatible(fdt, 0, KHO_FDT_COMPATIBLE)`` -- each kernel
    takes its own version only; kimagekit reads the ones it knows."""
    data = make_kho("kho-v9", q(1), {"x": {"preserved-data": q(2), "blob-size": q(3)}})
    got = kho.read_kho(DeviceTree.parse(data))
    assert (got.known, got.memory_map, got.damage) == (False, 1, ())
    assert got.clients == (kho.KhoClient("x", None, None, ("preserved-data", "blob-size")),)
    assert not kho.is_kho_tree(DeviceTree.parse(make_kho("ibm,pseries", None, {})))


def test_inspect_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "fdt"
    f.write_bytes(make_kho("kho-v1", q(0x1_2345_6000), {"memblock": {"fdt": q(0x7FFF_E000)}}))
    assert main(["inspect", str(f)]) == 0
    assert capsys.readouterr().out == (
        f"{f}: kho-tree\n"
        "  compatible kho-v1 (client data property: fdt)\n"
        "  preserved-memory-map 0x123456000\n"
        "  clients: 1\n"
        "    memblock: fdt 0x7fffe000\n")
    assert main(["inspect", "--json", str(f)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "kho-tree"
    assert doc["summary"] == {
        "compatible": "kho-v1", "known": True, "memory_map": 0x1_2345_6000,
        "clients": [{"name": "memblock", "data_property": "fdt", "data": 0x7FFF_E000,
                     "properties": ["fdt"], "size": None}], "damage": [], "preserved": None}
    f.write_bytes(make_kho("kho-v9", None, {"x": {"blob-size": q(3)}}))
    assert main(["inspect", str(f)]) == 1
    assert capsys.readouterr().out == (
        f"{f}: kho-tree\n"
        "  compatible kho-v9: a KHO ABI kimagekit does not know (kho-v1, kho-v2, kho-v3, "
        "kho-v4); client "
        "properties shown by name only\n"
        "  preserved-memory-map -\n"
        "  clients: 1\n"
        "    x: blob-size\n"
        "  DAMAGE: /: no preserved-memory-map\n")


def test_an_ordinary_tree_stays_a_device_tree(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "t.dtb"
    f.write_bytes(make_kho("acme,board", None, {"kho-v1": {}}))
    assert main(["inspect", str(f)]) == 0
    assert capsys.readouterr().out.startswith(f"{f}: device-tree\n")


# -- kho-v3/v4 (7.2) and the preserved pages ---------------------------------------------------

def test_kho_v4_clients_carry_blob_size() -> None:
    """include/linux/kho/abi/kexec_handover.h:93 ``#define KHO_FDT_COMPATIBLE "kho-v4"`` (7.2's
    own version), :99 ``KHO_SUB_TREE_PROP_NAME "preserved-data"``, :102
    ``KHO_SUB_TREE_SIZE_PROP_NAME "blob-size"`` (its DOC, :43-61, names kho-v3 with blob-size);
    kernel/liveupdate/kexec_handover.c:801-802 (kho_add_subtree) ``fdt_setprop(root_fdt, off,
    KHO_SUB_TREE_SIZE_PROP_NAME, &size_u64, sizeof(size_u64))``; :1397-1401
    (kho_retrieve_subtree): a missing or mis-sized blob-size is ``-EINVAL``."""
    data = make_kho("kho-v4", q(0x3F00_0000), {
        "kexec-metadata": {"preserved-data": q(0x3FF0_1000), "blob-size": q(73)},
        "LUO": {"preserved-data": q(0x3FF0_2000), "blob-size": b"\0" * 4},
        "x": {"preserved-data": q(0x3FF0_3000)}})
    got = kho.read_kho(DeviceTree.parse(data))
    assert got.known and got.clients[0] == kho.KhoClient(
        "kexec-metadata", "preserved-data", 0x3FF0_1000, ("preserved-data", "blob-size"), 73)
    assert got.damage == ("/LUO/blob-size: 4 bytes, not a u64", "/x: no blob-size")
    v3 = make_kho("kho-v3", q(1), {"a": {"preserved-data": q(2), "blob-size": q(3)}})
    assert kho.read_kho(DeviceTree.parse(v3)).clients[0].size == 3


def test_radix_key_encoding() -> None:
    """kernel/liveupdate/kexec_handover.c:108-116 (kho_radix_encode_key) ``h = 1UL <<
    (KHO_ORDER_0_LOG2 - order); l = phys >> (PAGE_SHIFT + order); return h | l;`` and :129-139
    (kho_radix_decode_key) ``order_bit = fls64(key); *order = KHO_ORDER_0_LOG2 - order_bit + 1;
    phys = key << (PAGE_SHIFT + *order);``; include/linux/kho/abi/kexec_handover.h:259-279
    (``KHO_TREE_MAX_DEPTH = DIV_ROUND_UP(KHO_ORDER_0_LOG2 - KHO_BITMAP_SIZE_LOG2 + 1,
    KHO_TABLE_SIZE_LOG2) + 1``)."""
    assert km.encode_key(0x7FFF_E000, 0) == 1 << 52 | 0x7FFFE
    assert km.encode_key(0x4000_0000, 9) == 1 << 43 | 0x200
    assert km.decode_key(1 << 52 | 0x7FFFE) == (0x7FFF_E000, 0)
    assert km.decode_key(1 << 43 | 0x200) == (0x4000_0000, 9)
    assert km.decode_key(1 << 53) is None and km.decode_key(1) is None  # no page encoded
    assert km.radix_geometry(12) == (52, 9, 15, 6)
    assert km.radix_geometry(14) == (50, 11, 17, 5)
    assert km.radix_geometry(16) == (48, 13, 19, 4)


def _dump(tmp_path: Path, d: RadixDump) -> Path:
    f = tmp_path / "mem.raw"
    f.write_bytes(bytes(d.mem))
    return f


def test_walk_preserved_pages(tmp_path: Path) -> None:
    """kernel/liveupdate/kexec_handover.c:305-342 (__kho_radix_walk_tree): from level
    ``KHO_TREE_MAX_DEPTH - 1`` every non-zero table entry, ``key = start | (i << shift)``, down
    to level 1 whose entries are leaves; :285-302 (kho_radix_walk_leaf) each set bit ``i`` is
    the page ``kho_radix_decode_key(key | i)``; :497-509 each is ``1 << (order + PAGE_SHIFT)``
    bytes from ``phys``."""
    d = RadixDump()
    for pa, order in ((0x7FFF_E000, 0), (0x1234_5000, 0), (0x1234_6000, 0),
                      (0x4000_0000, 9), (0x4020_0000, 9), (0x1234_8000, 3)):
        d.add(pa, order)
    with km.PhysMemory(str(_dump(tmp_path, d))) as mem:
        got = km.walk_radix(mem, d.root)
    assert got.ranges == ((0x1234_5000, 0x1234_7000), (0x1234_8000, 0x1235_0000),
                          (0x4000_0000, 0x4040_0000), (0x7FFF_E000, 0x7FFF_F000))
    assert got.orders == ((0, 3), (3, 1), (9, 2))
    assert got.damage == () and got.nodes == (d.next - 0x10000) // 4096


def test_walk_is_bounded_on_damage(tmp_path: Path) -> None:
    """The dump is untrusted: a node outside it, a table entry naming a page already walked
    (a loop back to the root), a leaf bit whose key has no order bit
    (kernel/liveupdate/kexec_handover.c:131-137 would shift by a negative order) are damage;
    the rest is walked."""
    d = RadixDump()
    d.add(0x7FFF_E000, 0)
    d.set_entry(d.root, 7, d.root)  # level 5 entry 7 -> the root itself
    d.set_entry(d.root, 8, 0x4000_0000)  # outside the 1 MiB dump
    d.set_entry(d.root, 9, d.root + 8)  # not a page
    # a leaf under level-5 index 4: keys with bit 53 set encode no page
    node = d.root
    for idx in (4, 0, 0, 0, 0):
        nxt = d.alloc()
        d.set_entry(node, idx, nxt)
        node = nxt
    d.mem[node] = 0x01  # the leaf's bit 0
    with km.PhysMemory(str(_dump(tmp_path, d))) as mem:
        got = km.walk_radix(mem, d.root)
    assert got.ranges == ((0x7FFF_E000, 0x7FFF_F000),)
    assert got.damage == (
        f"leaf bit 0 of key {4 << 51:#x}: encodes no page",  # visited first: index 4
        f"level 5 entry 7: {d.root:#x} is a page already walked: not followed",
        "level 5 entry 8: 0x40000000: not in the memory dump",
        f"level 5 entry 9: {d.root + 8:#x}: not page aligned")


def test_memory_dump_forms(tmp_path: Path) -> None:
    """A raw dump at a base (``FILE@BASE``) and an ELF core whose PT_LOADs carry physical
    addresses (fs/proc/kcore.c:402-407: ``p_paddr = __pa(m->addr)`` for RAM, -1 for what is not
    RAM) read the same pages."""
    base = 0x8000_0000
    moved = RadixDump(size=0x8000, nodes_at=base + 0x1000, base=base)
    moved.add(0x7FFF_E000, 0)
    raw = tmp_path / "high.raw"
    raw.write_bytes(bytes(moved.mem))
    core = tmp_path / "core"
    core.write_bytes(elf_core([(base - 0x8000, bytes(0x8000)), (base, bytes(moved.mem))]))
    for spec in (f"{raw}@{base:#x}", str(core)):
        with km.PhysMemory(spec) as mem:
            assert km.walk_radix(mem, base + 0x1000).ranges == ((0x7FFF_E000, 0x7FFF_F000),)
    with pytest.raises(UsageError, match="BASE 'x' is not a number"):
        km.PhysMemory(f"{raw}@x")


def test_inspect_with_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = RadixDump()
    d.add(0x7FFF_E000, 0)
    d.add(0x1234_8000, 3)
    mem = _dump(tmp_path, d)
    f = tmp_path / "fdt"
    f.write_bytes(make_kho("kho-v4", q(d.root), {
        "kexec-metadata": {"preserved-data": q(0x7FFF_E000), "blob-size": q(73)}}))
    assert main(["inspect", str(f), "--memory", str(mem)]) == 0
    assert capsys.readouterr().out == (
        f"{f}: kho-tree\n"
        "  compatible kho-v4 (client data property: preserved-data)\n"
        "  preserved-memory-map 0x10000\n"
        "  clients: 1\n"
        "    kexec-metadata: preserved-data 0x7fffe000, blob-size 73\n"
        "  preserved pages (the radix tree in the memory dump, 11 nodes read): order 0: 1, "
        "order 3: 1\n"
        "    [0x12348000, 0x12350000) 32 KiB\n"
        "    [0x7fffe000, 0x7ffff000) 4 KiB\n")
    assert main(["inspect", str(f), "--memory", str(mem), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)["summary"]["preserved"]
    assert doc == {"root": 0x10000, "page_size": 4096,
                   "ranges": [[0x1234_8000, 0x1235_0000], [0x7FFF_E000, 0x7FFF_F000]],
                   "orders": [[0, 1], [3, 1]], "nodes": 11, "damage": []}
    d.set_entry(d.root, 9, 0x4000_0000)
    mem.write_bytes(bytes(d.mem))
    assert main(["inspect", str(f), "--memory", str(mem)]) == 1
    assert capsys.readouterr().out.endswith(
        "  DAMAGE: preserved-memory-map: level 5 entry 9: 0x40000000: not in the memory dump\n")
    f.write_bytes(make_kho("kho-v1", q(d.root), {}))
    assert main(["inspect", str(f), "--memory", str(mem)]) == 2
    assert capsys.readouterr().err == (
        "kimagekit: error: --memory: the kho-v1 memory map is not the radix tree kimagekit "
        "walks (kho-v2, kho-v3, kho-v4)\n")
    assert main(["inspect", str(mem), "--memory", str(mem)]) == 2


def test_pseudo_files_are_read_though_they_say_0_bytes() -> None:
    """kernel/liveupdate/kexec_handover_debugfs.c:41 (``debugfs_create_blob``): the tree is read
    from a debugfs file whose size reads 0, as sysfs and procfs files do; read to its end."""
    import os

    from kimagekit.fileio import read_input

    assert os.stat("/proc/version").st_size == 0
    assert read_input("/proc/version").startswith(b"Linux version ")
