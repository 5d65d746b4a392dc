#!/usr/bin/env python3
"""Build the kernel's own kexec_file purgatory for ARCH from Debian's ``linux-source``, cached.

    python scripts/build_purgatory.py ppc64le     # prints the purgatory's path

Debian's kernels for these architectures do not enable ``KEXEC_FILE``, so their purgatory is
built here: the architecture's defconfig with ``KEXEC_FILE`` on, ``make prepare``, then the
purgatory's folder (the relocatable ``purgatory.ro`` linked ``-r``, before it is wrapped into
``kexec-purgatory.o``). Through :mod:`kbuild`: out of tree, cached by source version and recipe,
the cold build's wall time in ``build-seconds`` beside the output. One :data:`RECIPES` entry per
architecture.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kbuild import Recipe, build, built_dir

RECIPES: dict[str, Recipe] = {
    "ppc64le": Recipe(
        name="purgatory-ppc64le", arch="powerpc", cross_compile="powerpc64le-linux-gnu-",
        base="ppc64le_defconfig", options={"KEXEC_FILE": "y"},
        targets=("prepare", "arch/powerpc/purgatory/"),
        outputs=("arch/powerpc/purgatory/purgatory.ro",)),
    "riscv64": Recipe(
        name="purgatory-riscv64", arch="riscv", cross_compile="riscv64-linux-gnu-",
        base="defconfig", options={"KEXEC_FILE": "y"},
        targets=("prepare", "arch/riscv/purgatory/"),
        outputs=("arch/riscv/purgatory/purgatory.ro",)),
}


def purgatory_path(arch: str) -> Path | None:
    """ARCH's purgatory built before on the unpacked source (no fetch, no build), if any."""
    d = built_dir(RECIPES[arch])
    return d / RECIPES[arch].outputs[0] if d is not None else None


def build_purgatory(arch: str) -> Path:
    """Build (once per source version and recipe) and return ARCH's purgatory."""
    return build(RECIPES[arch]) / RECIPES[arch].outputs[0]


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in RECIPES:
        print(f"usage: build_purgatory.py {{{','.join(RECIPES)}}}", file=sys.stderr)
        return 2
    recipe = RECIPES[argv[0]]
    try:
        out = build(recipe)
    except (OSError, subprocess.CalledProcessError, RuntimeError) as exc:
        print(f"purgatory {argv[0]}: build failed: {exc}", file=sys.stderr)
        return 1
    seconds = (out / "build-seconds").read_text().strip()
    print(f"purgatory {argv[0]}: cold build took {seconds} s", file=sys.stderr)
    print(out / recipe.outputs[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
