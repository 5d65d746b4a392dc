"""The device-tree side of a ppc64 kexec_file load: where segments may go (from the running
kernel's tree) and the new tree's ``/chosen`` (``of_kexec_alloc_and_setup_fdt``), through ppc_fdt.

The input tree stands for the running kernel's ``initial_boot_params``: its ``/memory`` nodes give
RAM, and its ``/memreserve/`` entries and ``/reserved-memory`` children are the exclude list the
powerpc hole search walks around.
"""

from __future__ import annotations

from kimagekit import of_kexec, ppc_fdt
from kimagekit.arch import ppc64_fdt
from kimagekit.arch.ppc64 import DtHook, DtRequest
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import RuleError
from kimagekit.segments import MemRange, Target

__all__ = [
    "OPAL_NODE", "PPC64_PAGE_SIZE", "chosen_hook", "opal_from_tree", "setup_chosen",
    "target_from_tree",
]

# Debian's ppc64el kernels set CONFIG_PPC_64K_PAGES=y (see their /boot/config-*).
PPC64_PAGE_SIZE = 0x10000
OPAL_NODE = "/ibm,opal"


def target_from_tree(tree: DeviceTree, arch: str, page_size: int = PPC64_PAGE_SIZE) -> Target:
    """RAM and reserved ranges as the running kernel would see them in ``tree``.

    Modelling choice: the exclude list is the tree's ``/memreserve/`` entries and
    ``/reserved-memory``. The 6.1 kernel's list is built from its own state instead (its image
    ``[0, _end)``, its initrd, RTAS, TCE tables, OPAL, the hash table, the root's
    ``reserved-ranges``) and does not read ``/memreserve/``."""
    ram = tuple(MemRange(r.start, r.size) for r in ppc_fdt.ram_ranges(tree) if r.size)
    if not ram:
        raise RuleError("the device tree has no memory node: nowhere to place segments",
                        fmt="dtb", field="/memory")
    reserved = tuple(MemRange(r.start, r.size) for r in ppc_fdt.reserved_ranges(tree) if r.size)
    return Target(arch, page_size=page_size, ram=ram, reserved=reserved)


def setup_chosen(tree: DeviceTree, req: DtRequest, page_size: int = PPC64_PAGE_SIZE) -> None:
    """Edit ``/chosen`` as the loading kernel does for a normal (not crash) kexec, through
    :func:`kimagekit.of_kexec.setup_chosen` (an empty command line counts as none)."""
    of_kexec.setup_chosen(tree, of_kexec.FdtRequest(
        initrd=req.initrd, cmdline=req.cmdline or None, handover=req.handover,
        handover_style=req.handover_style), of_kexec.ArchFdt(page_size))


def chosen_hook(page_size: int = PPC64_PAGE_SIZE, running: bool = False) -> DtHook:
    """The hook :func:`kimagekit.arch.ppc64.build` calls once the other segments are placed:
    ``of_kexec_alloc_and_setup_fdt``, then, for a ``running`` kernel's tree,
    ``setup_new_fdt_ppc64`` (:mod:`kimagekit.arch.ppc64_fdt`), then ``fdt_pack``. A firmware
    dump (``running`` False) gets the ``/chosen`` edit only: the ranges the running kernel
    reserves are not in it."""

    def hook(req: DtRequest) -> bytes:
        rmem = ppc64_fdt.reserved_memory_ranges(DeviceTree.parse(req.dtb)) if running else ()

        def arch_edit(tree: DeviceTree) -> None:
            ppc64_fdt.setup_new_fdt_ppc64(tree, rmem)

        fdt_req = of_kexec.FdtRequest(
            initrd=req.initrd, cmdline=req.cmdline or None, handover=req.handover,
            handover_style=req.handover_style, arch_edit=arch_edit if running else None)
        # kexec_extra_fdt_size_ppc64 (file_load_64.c:647-671): the reserve entries; no CPU
        # hotplugged since boot is visible offline, no PLPKS.
        arch = of_kexec.ArchFdt(page_size, extra_size=ppc64_fdt.FDT_RESERVE_ENTRY * len(rmem))
        return of_kexec.setup_fdt(req.dtb, fdt_req, arch).blob

    return hook


def opal_from_tree(tree: DeviceTree) -> tuple[int, int] | None:
    """``opal-base-address`` and ``opal-entry-address`` of ``/ibm,opal`` as
    ``of_property_read_u64`` reads them (big-endian, the first 8 bytes); None without the node.
    A node without either property is refused, as the kernel fails the load since 6.12 (the
    83b5a407 fix; earlier kernels wrote an uninitialised value)."""
    if tree.find(OPAL_NODE) is None:
        return None
    out = []
    for name in ("opal-base-address", "opal-entry-address"):
        raw = tree.get(OPAL_NODE, name)
        if raw is None or len(raw) < 8:
            why = "is missing" if raw is None else f"is {len(raw)} bytes, not 8"
            raise RuleError(f"{OPAL_NODE}/{name} {why}: the kernel cannot set the purgatory's "
                            f"opal_{name.split('-')[1]} and refuses the load", fmt="dtb",
                            field=f"{OPAL_NODE}/{name}")
        out.append(int.from_bytes(raw[:8], "big"))
    return out[0], out[1]
