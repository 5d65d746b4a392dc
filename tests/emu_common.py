"""What the unicorn runs of real purgatories share: run from the entry until the kernel entry,
stopping at the purgatory's spin loop (a digest mismatch), with only that loop instrumented so
the hashing runs at full speed."""

from __future__ import annotations

import time
from collections.abc import Callable

from unicorn import UC_HOOK_CODE, Uc, UcError

TIMEOUT_S = 300


def run_to_kernel(mu: Uc, spin_begin: int, spin_size: int, entry: int, kentry: int,
                  pc_reg: int, is_spin: Callable[[bytes], bool]) -> tuple[str, int, float]:
    """(outcome, final pc, seconds): outcome is ``kernel-entry``, ``spin``, ``timeout`` or
    ``fault: ...``. ``is_spin`` gets the bytes of each instruction inside the spin function."""
    spun: list[int] = []

    def on_code(uc: Uc, address: int, size: int, _: object) -> None:
        if is_spin(bytes(uc.mem_read(address, size))):
            spun.append(address)
            uc.emu_stop()

    mu.hook_add(UC_HOOK_CODE, on_code, begin=spin_begin, end=spin_begin + max(spin_size, 1) - 1)
    t0 = time.perf_counter()
    outcome = ""
    try:
        mu.emu_start(entry, kentry, timeout=TIMEOUT_S * 1_000_000)
    except UcError as exc:
        outcome = f"fault: {exc}"
    secs = time.perf_counter() - t0
    pc = mu.reg_read(pc_reg)
    if not outcome:
        outcome = "spin" if spun else "kernel-entry" if pc == kentry else "timeout"
    return outcome, pc, secs
