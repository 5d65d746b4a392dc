"""``/chosen``'s KHO properties as ``drivers/of/kexec.c`` (``kho_add_chosen``) writes them for a
device-tree architecture (arm64 in 7.2), for the shared ``/chosen`` edit to call.

With ``CONFIG_KEXEC_HANDOVER`` the stale ``linux,kho-fdt`` and ``linux,kho-scratch`` are always
deleted (in that order); with an active KHO the new ones are appended: the tree's address and
one page, the scratch segment's address and bufsz, each an address/size pair in the root's
``#address-cells``/``#size-cells`` (libfdt's ``fdt_appendprop_addrrange``, which takes 1 or 2
cells of each and refuses a value they cannot hold). ``of_kexec_alloc_and_setup_fdt`` calls it
after the crash-kernel properties and before ``bootargs``.
"""

from __future__ import annotations

from kimagekit.devicetree import DeviceTree
from kimagekit.errors import RuleError

__all__ = ["KHO_FDT", "KHO_SCRATCH", "addrrange", "kho_add_chosen"]

CHOSEN = "/chosen"
KHO_FDT = "linux,kho-fdt"
KHO_SCRATCH = "linux,kho-scratch"
_MAX_NCELLS = 4  # FDT_MAX_NCELLS


def _cells(tree: DeviceTree, name: str, default: int) -> int:
    """libfdt's fdt_address_cells / fdt_size_cells of the root (``parent`` 0)."""
    raw = tree.get("/", name)
    if raw is None:
        return default
    val = int.from_bytes(raw, "big") if len(raw) == 4 else -1
    if not 0 <= val <= _MAX_NCELLS or (val == 0 and name == "#address-cells"):
        raise RuleError(f"the root's {name} ({raw.hex()}) is not a cell count libfdt takes "
                        "(-FDT_ERR_BADNCELLS): the kernel fails the load", fmt="dtb",
                        field=f"node[/].prop[{name}]")
    return val


def addrrange(tree: DeviceTree, name: str, addr: int, size: int) -> bytes:
    """One address/size pair as ``fdt_appendprop_addrrange(fdt, 0, ...)`` encodes it."""
    ac, sc = _cells(tree, "#address-cells", 2), _cells(tree, "#size-cells", 1)
    why = None
    if ac not in (1, 2) or sc not in (1, 2):
        why = f"{ac} address and {sc} size cells (libfdt takes 1 or 2: -FDT_ERR_BADNCELLS)"
    elif ac == 1 and (addr > 0xFFFFFFFF or (1 << 32) - addr < size):
        why = f"({addr:#x}, {size:#x}) does not fit 1 address cell (-FDT_ERR_BADVALUE)"
    elif sc == 1 and size > 0xFFFFFFFF:
        why = f"size {size:#x} does not fit 1 size cell (-FDT_ERR_BADVALUE)"
    if why is not None:
        raise RuleError(f"{name}: {why}: the kernel fails the load", fmt="dtb",
                        field=f"node[{CHOSEN}].prop[{name}]")
    return addr.to_bytes(4 * ac, "big") + size.to_bytes(4 * sc, "big")


def kho_add_chosen(tree: DeviceTree, kho: tuple[int, int, int, int] | None, *,
                   config: bool = True) -> None:
    """``kho_add_chosen`` on a tree whose ``/chosen`` exists. ``kho``: (tree address, tree size,
    scratch address, scratch bufsz) of an active KHO (:func:`kimagekit.kho_load.kho_data`),
    None when inactive; ``config``: the loading kernel has ``CONFIG_KEXEC_HANDOVER`` (without
    it nothing is touched, stale properties included)."""
    if not config:
        return
    tree.delete(CHOSEN, KHO_FDT)
    tree.delete(CHOSEN, KHO_SCRATCH)
    if kho is None:
        return
    # both encoded first: a refusal leaves nothing half written (the kernel drops the tree)
    fdt = addrrange(tree, KHO_FDT, kho[0], kho[1])
    scratch = addrrange(tree, KHO_SCRATCH, kho[2], kho[3])
    tree.set(CHOSEN, KHO_FDT, fdt)  # after the deletes, an append adds a new property
    tree.set(CHOSEN, KHO_SCRATCH, scratch)
