"""``/chosen``'s KHO properties as drivers/of/kexec.c (linux-source 7.2.13) writes them, byte
for byte against a libfdt replay. Each rule's source file and line is in its test's
docstring."""

from __future__ import annotations

import struct

import pytest
from conftest import need_module

from kimagekit.devicetree import DeviceTree
from kimagekit.errors import RuleError
from kimagekit.kho_chosen import KHO_FDT, KHO_SCRATCH, kho_add_chosen

KHO = (0x3FF0_0000, 4096, 0x33FF_0000, 48)


def _tree(cells: tuple[int, int] | None = None, stale: bool = True) -> DeviceTree:
    t = DeviceTree.new()
    t.add_node("/", "chosen")
    if cells is not None:
        t.set("/", "#address-cells", struct.pack(">I", cells[0]))
        t.set("/", "#size-cells", struct.pack(">I", cells[1]))
    t.set("/chosen", "bootargs", b"console=ttyAMA0\0")
    if stale:
        t.set("/chosen", KHO_SCRATCH, struct.pack(">QI", 0x1000_0000, 32))
        t.set("/chosen", KHO_FDT, struct.pack(">QI", 0x2000_0000, 4096))
    t.keep_deleted_names = True  # as the /chosen edit sets it (fdt_delprop keeps names)
    return t


def _libfdt(blob: bytes, kho: tuple[int, int, int, int] | None) -> bytes:
    """drivers/of/kexec.c:267-289 replayed with libfdt itself."""
    libfdt = need_module("libfdt")
    f = libfdt.Fdt(bytearray(blob))
    f.resize(len(blob) + 0x1000)
    ch = f.path_offset("/chosen")
    f.delprop(ch, KHO_FDT, libfdt.QUIET_NOTFOUND)
    f.delprop(ch, KHO_SCRATCH, libfdt.QUIET_NOTFOUND)
    if kho is not None:
        assert libfdt.fdt_appendprop_addrrange(f._fdt, 0, ch, KHO_FDT, kho[0], kho[1]) == 0
        assert libfdt.fdt_appendprop_addrrange(f._fdt, 0, ch, KHO_SCRATCH, kho[2], kho[3]) == 0
    f.pack()
    return bytes(f.as_bytearray())


@pytest.mark.parametrize("cells", [None, (1, 1), (2, 2), (1, 2)])
def test_active_kho_appends_both_ranges(cells: tuple[int, int] | None) -> None:
    """drivers/of/kexec.c:277-289 (kho_add_chosen): ``fdt_mem = image->kho.fdt; fdt_len =
    PAGE_SIZE; scratch_mem = image->kho.scratch->mem; scratch_len =
    image->kho.scratch->bufsz; ... fdt_appendprop_addrrange(fdt, 0, chosen_node,
    "linux,kho-fdt", fdt_mem, fdt_len); ... "linux,kho-scratch", scratch_mem, scratch_len)`` --
    the root's cells (scripts/dtc/libfdt/fdt_addresses.c:34-54: 2 and 1 when absent)."""
    t = _tree(cells)
    blob = t.build(pack=True)
    kho_add_chosen(t, KHO)
    ac, sc = cells or (2, 1)
    assert t.get("/chosen", KHO_FDT) == (0x3FF0_0000).to_bytes(4 * ac, "big") + \
        (4096).to_bytes(4 * sc, "big")
    assert t.get("/chosen", KHO_SCRATCH) == (0x33FF_0000).to_bytes(4 * ac, "big") + \
        (48).to_bytes(4 * sc, "big")
    assert t.build(pack=True) == _libfdt(blob, KHO)


def test_stale_properties_always_go() -> None:
    """drivers/of/kexec.c:267-275: ``ret = fdt_delprop(fdt, chosen_node, "linux,kho-fdt"); ...
    ret = fdt_delprop(fdt, chosen_node, "linux,kho-scratch"); ... if (!image->kho.fdt ||
    !image->kho.scratch) return 0;`` -- deleted whether or not KHO is active; :261 ``#ifdef
    CONFIG_KEXEC_HANDOVER``: without the option nothing is touched. Called at :465, after the
    crash-kernel properties (:409-462) and before ``bootargs`` (:470)."""
    t = _tree()
    blob = t.build(pack=True)
    kho_add_chosen(t, None)
    assert t.get("/chosen", KHO_FDT) is None and t.get("/chosen", KHO_SCRATCH) is None
    assert t.build(pack=True) == _libfdt(blob, None)
    t = _tree()
    kho_add_chosen(t, None, config=False)
    assert t.build(pack=True) == blob
    t = _tree(stale=False)  # nothing to delete is no error (-FDT_ERR_NOTFOUND)
    kho_add_chosen(t, None)
    assert t.build(pack=True) == _tree(stale=False).build(pack=True)


@pytest.mark.parametrize(("cells", "kho", "message"), [
    ((1, 1), (0x1_0000_0000, 4096, 0x1000, 48),
     "node[/chosen].prop[linux,kho-fdt]: linux,kho-fdt: (0x100000000, 0x1000) does not fit 1 "
     "address cell (-FDT_ERR_BADVALUE): the kernel fails the load"),
    ((1, 1), (0xFFFF_F000, 4096, 0xFFFF_F000, 0x1001),
     "node[/chosen].prop[linux,kho-scratch]: linux,kho-scratch: (0xfffff000, 0x1001) does not "
     "fit 1 address cell (-FDT_ERR_BADVALUE): the kernel fails the load"),
    ((2, 0), KHO,
     "node[/chosen].prop[linux,kho-fdt]: linux,kho-fdt: 2 address and 0 size cells (libfdt "
     "takes 1 or 2: -FDT_ERR_BADNCELLS): the kernel fails the load"),
    ((3, 1), KHO,
     "node[/chosen].prop[linux,kho-fdt]: linux,kho-fdt: 3 address and 1 size cells (libfdt "
     "takes 1 or 2: -FDT_ERR_BADNCELLS): the kernel fails the load"),
    ((0, 1), KHO,
     "node[/].prop[#address-cells]: the root's #address-cells (00000000) is not a cell count "
     "libfdt takes (-FDT_ERR_BADNCELLS): the kernel fails the load"),
    ((2, 5), KHO,
     "node[/].prop[#size-cells]: the root's #size-cells (00000005) is not a cell count libfdt "
     "takes (-FDT_ERR_BADNCELLS): the kernel fails the load"),
])
def test_cells_libfdt_refuses(cells: tuple[int, int], kho: tuple[int, int, int, int],
                              message: str) -> None:
    """scripts/dtc/libfdt/fdt_addresses.c:24-29 (fdt_cells: ``len != sizeof(*c)`` or ``val >
    FDT_MAX_NCELLS``: -FDT_ERR_BADNCELLS), :39-40 (#address-cells 0), :75-97
    (fdt_appendprop_addrrange: 1 or 2 cells each; ``(addr > UINT32_MAX) || (((uint64_t)
    UINT32_MAX + 1 - addr) < size)`` and ``size > UINT32_MAX``: -FDT_ERR_BADVALUE);
    drivers/of/kexec.c:465-467 fails the tree, so the load. Nothing is written when refused."""
    t = _tree(cells, stale=False)
    before = t.build()
    with pytest.raises(RuleError) as e:
        kho_add_chosen(t, kho)
    assert str(e.value) == f"dtb: {message}"
    assert t.build() == before
