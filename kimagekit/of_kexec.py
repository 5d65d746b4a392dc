"""The next kernel's device tree, as ``of_kexec_alloc_and_setup_fdt`` makes it
(``drivers/of/kexec.c`` of linux 7.2), shared by every device-tree arch (ppc64, arm64, riscv64).

The running tree (``initial_boot_params``) is copied into a buffer of a known size, ``/chosen`` is
edited in the kernel's order, the arch edits the result (ppc64: ``setup_new_fdt_ppc64``), and the
tree is packed or, when the arch does not pack it, kept at the buffer's size. The line numbers in
the docstrings are those of ``drivers/of/kexec.c`` in linux-source 7.2.13.

Offline limits (said, never guessed): no random bytes are invented (``kaslr-seed`` and ``rng-seed``
are written only when given, else omitted as a kernel whose RNG is not initialised omits them); the
running tree's own physical address is an input; bytes the kernel leaves stale (a value's
alignment padding, the buffer's tail) are zeros here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from kimagekit import kho_chosen, ppc_fdt
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import RuleError, UsageError
from kimagekit.image import HandoverStyle
from kimagekit.kho_chosen import KHO_FDT, KHO_SCRATCH

__all__ = [
    "DMCRYPT_KEYS", "FDT_EXTRA_SPACE", "KHO_FDT", "KHO_SCRATCH", "RNG_SEED_SIZE", "ArchFdt",
    "ChosenEdit", "CrashChosen", "FdtRequest", "NewFdt", "Seeds", "append_ranges",
    "fdt_buffer_size", "kho_add_chosen", "setup_chosen", "setup_fdt",
]

FDT_EXTRA_SPACE = 0x1000  # kexec.c:29
RNG_SEED_SIZE = 128  # kexec.c:23
DMCRYPT_KEYS = "linux,dmcryptkeys"

#: An edit of the new tree in place: the KHO hook and the arch's own edits.
ChosenEdit = Callable[[DeviceTree], None]


@dataclass(frozen=True)
class Seeds:
    """``kaslr-seed`` and ``rng-seed`` for a kernel whose RNG is initialised (kexec.c:487-510:
    both or neither). Offline they are inputs, never drawn here."""

    kaslr: int
    rng: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.kaslr < 1 << 64:
            raise UsageError(f"kaslr-seed {self.kaslr:#x} is not a 64-bit value")
        if len(self.rng) != RNG_SEED_SIZE:
            raise UsageError(f"rng-seed is {len(self.rng)} bytes; the kernel writes "
                             f"{RNG_SEED_SIZE}")


@dataclass(frozen=True)
class CrashChosen:
    """A crash load's ``/chosen`` items (kexec.c:409-461): the ELF core header segment, the
    dm-crypt keys segment if any, and ``crashk_res`` then ``crashk_low_res`` (start, size)."""

    elfcorehdr: tuple[int, int]
    usable: tuple[tuple[int, int], ...]
    dm_crypt_keys: tuple[int, int] | None = None


@dataclass(frozen=True)
class FdtRequest:
    """One load's inputs to the tree. ``cmdline`` None: no command line (``bootargs`` deleted);
    ``""``: an empty one. ``running_fdt_pa``: ``initial_boot_params_pa``, whose reservation
    (with the running tree's totalsize) is dropped; None when unknown. ``kho``: the KHO hook
    point (kexec.c:465, ``kho_add_chosen``); ``arch_edit``: what the arch does to the tree after
    ``of_kexec_alloc_and_setup_fdt`` and before packing (ppc64: ``setup_new_fdt_ppc64``)."""

    initrd: tuple[int, int] | None = None
    cmdline: str | None = None
    crash: CrashChosen | None = None
    handover: tuple[int, int] | None = None
    handover_style: HandoverStyle = HandoverStyle.IMA
    seeds: Seeds | None = None
    running_fdt_pa: int | None = None
    kho: ChosenEdit | None = None
    arch_edit: ChosenEdit | None = None


@dataclass(frozen=True)
class ArchFdt:
    """The arch's and its kernel config's choices. ``extra_size``: ``extra_fdt_size`` the arch
    passes (ppc64: ``kexec_extra_fdt_size_ppc64``; arm64 and riscv64: 0). ``pack``: the arch
    calls ``fdt_pack`` (ppc64 skips it for crash loads under CONFIG_CRASH_HOTPLUG).
    ``have_ima_kexec``: CONFIG_HAVE_IMA_KEXEC (a stale ``linux,ima-kexec-buffer`` is removed).
    ``kexec_handover``: CONFIG_KEXEC_HANDOVER (stale ``linux,kho-*`` removed even without KHO)."""

    page_size: int
    pack: bool = True
    extra_size: int = 0
    have_ima_kexec: bool = True
    kexec_handover: bool = False


@dataclass(frozen=True)
class NewFdt:
    """The new tree's bytes, the kernel's buffer size for it, and what was not modelled."""

    blob: bytes
    buffer_size: int
    notes: tuple[str, ...] = field(default=())


def fdt_buffer_size(running_total: int, cmdline: str | None, extra: int) -> int:
    """kexec.c:317-320: the running tree's totalsize + strlen(cmdline) + FDT_EXTRA_SPACE +
    the arch's extra size."""
    return running_total + len((cmdline or "").encode("latin-1")) + FDT_EXTRA_SPACE + extra


def append_ranges(tree: DeviceTree, path: str, name: str, ranges: list[tuple[int, int]]
                  ) -> None:
    """``fdt_appendprop_addrrange`` with parent 0 (the root's cells): a new property goes
    first in the node, an existing one grows in place."""
    old = tree.get(path, name) or b""
    tree.set(path, name, old + ppc_fdt.encode_ranges(tree, ranges, name))


def kho_add_chosen(tree: DeviceTree, enabled: bool) -> None:
    """kexec.c:258-294 without a KHO image: under CONFIG_KEXEC_HANDOVER the stale
    ``linux,kho-fdt`` then ``linux,kho-scratch`` are deleted; otherwise nothing. A KHO load
    replaces this with :attr:`FdtRequest.kho`, e.g. :func:`kimagekit.kho_chosen.kho_add_chosen`
    with the KHO's ranges, which does the deletions too."""
    kho_chosen.kho_add_chosen(tree, None, config=enabled)


def setup_chosen(tree: DeviceTree, req: FdtRequest, arch: ArchFdt,
                 running_total: int | None = None) -> None:
    """Edit ``tree`` (the running tree, copied) as kexec.c:331-517 does, in its order and with
    libfdt's placement (a property set again keeps its place; a new one goes first; a deleted
    name stays in the strings block). ``running_total``: the running tree's totalsize, for the
    reservation of ``req.running_fdt_pa``."""
    tree.keep_deleted_names = True
    if req.running_fdt_pa is not None and running_total is not None:  # kexec.c:331-337
        tree.remove_reservation(req.running_fdt_pa, running_total)
    ppc_fdt.ensure_chosen(tree)  # kexec.c:339-346
    # kexec.c:348-353: a crash kernel's items never carry over; the properties only, not the
    # reservation the elfcorehdr had.
    tree.delete(ppc_fdt.CHOSEN, ppc_fdt.ELFCOREHDR)
    tree.delete(ppc_fdt.CHOSEN, ppc_fdt.USABLE_MEMORY)
    _initrd(tree, req.initrd, arch.page_size)
    if req.crash is not None:
        _crash(tree, req.crash)
    # kexec.c:465: the KHO hook point.
    if req.kho is not None:
        req.kho(tree)
    else:
        kho_add_chosen(tree, arch.kexec_handover)
    # kexec.c:470-477
    if req.cmdline is not None:
        ppc_fdt.set_bootargs(tree, req.cmdline)
    else:
        ppc_fdt.remove_bootargs(tree)
    _seeds(tree, req.seeds)
    tree.set(ppc_fdt.CHOSEN, ppc_fdt.BOOTED_FROM_KEXEC, b"")  # kexec.c:512
    # kexec.c:516-517. The seed style (the 2016 series) is always dropped with its reservation.
    ppc_fdt.remove_handover(tree, None if arch.have_ima_kexec else "seed")
    if req.handover is not None:
        if req.handover_style == HandoverStyle.IMA and not arch.have_ima_kexec:
            raise RuleError("the loading kernel has no CONFIG_HAVE_IMA_KEXEC: it writes no "
                            f"{ppc_fdt.IMA_BUFFER}", fmt="dtb", field="chosen")
        ppc_fdt.set_handover(tree, *req.handover, style=req.handover_style.value)


def setup_fdt(running: bytes, req: FdtRequest, arch: ArchFdt) -> NewFdt:
    """The whole of ``of_kexec_alloc_and_setup_fdt`` for the running tree's bytes, then
    ``req.arch_edit``, then ``fdt_pack`` (or, unpacked, the tree at the buffer's size). A tree
    that outgrows the buffer is refused, as libfdt fails with -FDT_ERR_NOSPACE."""
    tree = DeviceTree.parse(running)
    total = struct.unpack_from(">I", running, 4)[0]
    size = fdt_buffer_size(total, req.cmdline, arch.extra_size)
    setup_chosen(tree, req, arch, total)
    if req.arch_edit is not None:
        req.arch_edit(tree)
    head = tree.header(pack=tree.relaid)
    end = head.off_dt_strings + head.size_dt_strings
    if end > size:
        raise RuleError(f"the new tree needs {end} bytes, more than the {size} the kernel "
                        "allocates for it (-FDT_ERR_NOSPACE: the load fails)", fmt="dtb",
                        field="totalsize")
    notes = _notes(req)
    if arch.pack:
        return NewFdt(tree.build(pack=True), size, notes)
    data = bytearray(tree.build(pack=tree.relaid)[:end].ljust(size, b"\0"))
    struct.pack_into(">I", data, 4, size)
    return NewFdt(bytes(data), size, (*notes, f"unpacked: bytes {end:#x}..{size:#x} are zeros "
                                      "where the kernel's buffer holds stale bytes"))


# -- the steps ---------------------------------------------------------------------------------
def _initrd(tree: DeviceTree, initrd: tuple[int, int] | None, page_size: int) -> None:
    """kexec.c:355-405: the running kernel's initrd reservation goes (exact, else page-rounded:
    kexec.c:374-378); the new one is written in place of the old properties and reserved."""
    has_start = tree.get(ppc_fdt.CHOSEN, ppc_fdt.INITRD_START) is not None
    if has_start and tree.get(ppc_fdt.CHOSEN, ppc_fdt.INITRD_END) is None:
        raise RuleError(f"/chosen has {ppc_fdt.INITRD_START} without {ppc_fdt.INITRD_END}: the "
                        "kernel refuses to set up the new tree", fmt="dtb", field="chosen")
    old = ppc_fdt.get_initrd(tree)
    if old is not None and not tree.remove_reservation(old.start, old.size):
        tree.remove_reservation(old.start, -(-old.size // page_size) * page_size)
    # kexec.c:384 tests initrd_load_addr, so the kernel would take an initrd at address 0 for
    # none; here one placed at 0 (possible only offline: the running kernel's image is at 0)
    # is still written.
    if initrd is not None:
        start, size = initrd
        tree.set(ppc_fdt.CHOSEN, ppc_fdt.INITRD_START, start.to_bytes(8, "big"))
        tree.set(ppc_fdt.CHOSEN, ppc_fdt.INITRD_END, (start + size).to_bytes(8, "big"))
        tree.add_reservation(start, size)
    else:
        tree.delete(ppc_fdt.CHOSEN, ppc_fdt.INITRD_START)
        tree.delete(ppc_fdt.CHOSEN, ppc_fdt.INITRD_END)


def _crash(tree: DeviceTree, crash: CrashChosen) -> None:
    """kexec.c:409-461: elfcorehdr (property and reservation), the dm-crypt keys (appended to
    any stale property, as fdt_appendprop does; reserved), then the crash regions."""
    append_ranges(tree, ppc_fdt.CHOSEN, ppc_fdt.ELFCOREHDR, [crash.elfcorehdr])
    tree.add_reservation(*crash.elfcorehdr)
    if crash.dm_crypt_keys is not None and crash.dm_crypt_keys[0]:
        append_ranges(tree, ppc_fdt.CHOSEN, DMCRYPT_KEYS, [crash.dm_crypt_keys])
        tree.add_reservation(*crash.dm_crypt_keys)
    if not crash.usable:
        raise UsageError("a crash load needs the crash kernel region (crashk_res)")
    # kexec.c:453: crashk_low_res only when it is set: callers pass it only then.
    append_ranges(tree, ppc_fdt.CHOSEN, ppc_fdt.USABLE_MEMORY, list(crash.usable))


def _seeds(tree: DeviceTree, seeds: Seeds | None) -> None:
    """kexec.c:480-510: kaslr-seed deleted, then written afresh (so first in the node) when the
    RNG is initialised; rng-seed written with fdt_setprop_placeholder. A stale rng-seed is
    dropped: the running kernel turned it into NOPs at boot (drivers/of/fdt.c:1110-1115)."""
    ppc_fdt.remove_kaslr_seed(tree)
    ppc_fdt.remove_rng_seed(tree)
    if seeds is not None:
        tree.set(ppc_fdt.CHOSEN, "kaslr-seed", seeds.kaslr.to_bytes(8, "big"))
        tree.set(ppc_fdt.CHOSEN, "rng-seed", seeds.rng)


def _notes(req: FdtRequest) -> tuple[str, ...]:
    out = []
    if req.seeds is None:
        out.append("kaslr-seed and rng-seed omitted (no random bytes offline), as a kernel "
                   "whose RNG is not initialised omits them")
    if req.running_fdt_pa is None:
        out.append("the running tree's own reservation is kept: its physical address "
                   "(initial_boot_params_pa) was not given")
    return tuple(out)
