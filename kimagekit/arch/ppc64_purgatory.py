"""What powerpc writes into its purgatory once every segment is placed: ``setup_purgatory``
(``arch/powerpc/kexec/file_load.c``) and ``setup_purgatory_ppc64``
(``arch/powerpc/kexec/file_load_64.c``), called last by ``elf64_load`` (``elf_64.c``).

Every write goes through ``kexec_purgatory_get_set_symbol``'s rules (the symbol's size must be the
size written), and values are in the purgatory's (the target's) byte order. The ppc64 purgatory
checks no digest: kimagekit still stores one (the generic code does), but nothing reads it at
reboot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kimagekit.arch.common import NO_PURGATORY_ARCHES, NO_PURGATORY_NOTE
from kimagekit.errors import RuleError
from kimagekit.purgatory import LoadedPurgatory, get_symbol, set_symbol

__all__ = [
    "INSPECTION_ONLY", "NO_DIGEST_CHECK", "PPC64_ARCHES", "SLAVE_CODE_SIZE", "PurgatoryArgs",
    "image_notes", "setup_purgatory",
]

#: ``SLAVE_CODE_SIZE``: the bytes of the kernel copied over ``purgatory_start``.
SLAVE_CODE_SIZE = 0x100
PPC64_ARCHES = ("ppc64le", "ppc64")
# trampoline_64.S only reserves room for the digest and regions symbols the generic code fills.
NO_DIGEST_CHECK = ("note: the ppc64 purgatory does not check the digest at reboot: the digest is "
                   "kimagekit's check, not the machine's")
INSPECTION_ONLY = ("note: no purgatory (built with --no-purgatory): for inspection only; the "
                   "ppc64 kernel always loads a purgatory and enters it, never the kernel")


@dataclass(frozen=True)
class PurgatoryArgs:
    """``kernel``: the lowest PT_LOAD address (``kexec_elf_load``'s lowest_load_addr);
    ``dt_offset``: the new tree's address; ``backup_start``: ``image->arch.backup_start`` (0
    unless a crash load set up the backup region); ``crash``: a KEXEC_TYPE_CRASH load;
    ``opal``: (base, entry) from the running tree's ``/ibm,opal``, None when it has none."""

    kernel: int
    dt_offset: int
    backup_start: int = 0
    crash: bool = False
    opal: tuple[int, int] | None = None


def setup_purgatory(lp: LoadedPurgatory, slave_code: bytes | memoryview,
                    args: PurgatoryArgs) -> LoadedPurgatory:
    """The purgatory after ``setup_purgatory_ppc64``, in the kernel's order: the slave code
    (keeping the purgatory's first word, its branch to the master path), ``kernel``,
    ``dt_offset``, then ``run_at_load`` = 1 for a crash load (it lies inside the copied area, so
    a normal load keeps the kernel's own word there), ``backup_start``, ``opal_base`` and
    ``opal_entry``."""
    if len(slave_code) < SLAVE_CODE_SIZE:
        raise RuleError(f"the kernel's first program header holds {len(slave_code)} bytes, "
                        f"fewer than the {SLAVE_CODE_SIZE} copied into purgatory_start",
                        fmt="vmlinux", field="phdr[0]")
    order: Literal["little", "big"] = "little" if lp.obj.little else "big"
    current = get_symbol(lp, "purgatory_start", SLAVE_CODE_SIZE)
    lp = set_symbol(lp, "purgatory_start",
                    current[:4] + bytes(slave_code[4:SLAVE_CODE_SIZE]))
    lp = set_symbol(lp, "kernel", args.kernel.to_bytes(8, order))
    lp = set_symbol(lp, "dt_offset", args.dt_offset.to_bytes(8, order))
    if args.crash:
        lp = set_symbol(lp, "run_at_load", (1).to_bytes(4, order))
    lp = set_symbol(lp, "backup_start", args.backup_start.to_bytes(8, order))
    if args.opal is not None:
        lp = set_symbol(lp, "opal_base", args.opal[0].to_bytes(8, order))
        lp = set_symbol(lp, "opal_entry", args.opal[1].to_bytes(8, order))
    return lp


def image_notes(arch: str, has_purgatory: bool) -> tuple[str, ...]:
    """What ``verify``, ``inspect`` and ``ls`` say plainly about a ppc64 image (nothing for
    other arches; arm64: it has no purgatory)."""
    if arch in NO_PURGATORY_ARCHES:
        return (NO_PURGATORY_NOTE,)
    if arch not in PPC64_ARCHES:
        return ()
    return ((() if has_purgatory else (INSPECTION_ONLY,)) + (NO_DIGEST_CHECK,))
