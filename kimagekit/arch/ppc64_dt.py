"""The device-tree side of a ppc64 kexec_file load: where segments may go (from the running
kernel's tree) and the new tree's ``/chosen`` (``of_kexec_alloc_and_setup_fdt``), through ppc_fdt.

The input tree stands for the running kernel's ``initial_boot_params``: its ``/memory`` nodes give
RAM, and its ``/memreserve/`` entries and ``/reserved-memory`` children are the exclude list the
powerpc hole search walks around.
"""

from __future__ import annotations

from kimagekit import ppc_fdt
from kimagekit.arch.ppc64 import DtHook, DtRequest
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import RuleError
from kimagekit.segments import MemRange, Target

# Debian's ppc64el kernels set CONFIG_PPC_64K_PAGES=y (see their /boot/config-*).
PPC64_PAGE_SIZE = 0x10000


def target_from_tree(tree: DeviceTree, arch: str, page_size: int = PPC64_PAGE_SIZE) -> Target:
    """RAM and reserved ranges as the running kernel would see them in ``tree``."""
    ram = tuple(MemRange(r.start, r.size) for r in ppc_fdt.ram_ranges(tree) if r.size)
    if not ram:
        raise RuleError("the device tree has no memory node: nowhere to place segments",
                        fmt="dtb", field="/memory")
    reserved = tuple(MemRange(r.start, r.size) for r in ppc_fdt.reserved_ranges(tree) if r.size)
    return Target(arch, page_size=page_size, ram=ram, reserved=reserved)


def setup_chosen(tree: DeviceTree, req: DtRequest, page_size: int = PPC64_PAGE_SIZE) -> None:
    """Edit ``/chosen`` as the loading kernel does for a normal (not crash) kexec."""
    # A crash kernel's items never carry over to a normal kexec.
    ppc_fdt.remove_elfcorehdr(tree)
    ppc_fdt.remove_usable_memory(tree)
    ppc_fdt.remove_initrd(tree, page_size)
    if req.initrd is not None:
        ppc_fdt.set_initrd(tree, *req.initrd, page_size=page_size)
    # The kernel sets bootargs from the new command line, or deletes them when it is empty.
    if req.cmdline:
        ppc_fdt.set_bootargs(tree, req.cmdline)
    else:
        ppc_fdt.remove_bootargs(tree)
    # The running kernel consumed the seed it booted with; the kernel would write fresh random
    # bytes, which an offline tool must not invent: the stale one goes, nothing replaces it.
    ppc_fdt.remove_rng_seed(tree)
    # Stale hand-overs of either style go with their reservations before the new one is added.
    ppc_fdt.remove_handover(tree)
    if req.handover is not None:
        ppc_fdt.set_handover(tree, *req.handover, style=req.handover_style.value)


def chosen_hook(page_size: int = PPC64_PAGE_SIZE) -> DtHook:
    """The hook :func:`kimagekit.arch.ppc64.build` calls once the other segments are placed; the
    result is packed, as the kernel packs the tree (``fdt_pack``) before adding it."""

    def hook(req: DtRequest) -> bytes:
        tree = DeviceTree.parse(req.dtb)
        setup_chosen(tree, req, page_size)
        return tree.build(pack=True)

    return hook
