"""KHO trees (kernel/liveupdate/kexec_handover.c, include/linux/kho/abi/kexec_handover.h) read
from a DTB dump and shown by ``inspect``; the trees are built here, as the kernel's
``kho_finalize`` lays them out. Each rule's kernel source line is in its test's docstring."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from kimagekit import kho
from kimagekit.cli import main
from kimagekit.devicetree import DeviceTree


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
                     "properties": ["fdt"]}], "damage": []}
    f.write_bytes(make_kho("kho-v9", None, {"x": {"blob-size": q(3)}}))
    assert main(["inspect", str(f)]) == 1
    assert capsys.readouterr().out == (
        f"{f}: kho-tree\n"
        "  compatible kho-v9: a KHO ABI kimagekit does not know (kho-v1, kho-v2); client "
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
