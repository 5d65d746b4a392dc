#!/usr/bin/env python3
"""Finding (build-ppc64, kernel/purgatory): any big-endian ppc64 build given a purgatory of
another machine and byte order (here the synthetic x86-64 one) writes the image, then refuses it
(OutputError: "the written image does not verify: the purgatory's regions or digest differ from
the note's") and leaves the unverified image at -o: exit 2 with an output on disk. The same
purgatory with ppc64le builds "verified", though no powerpc kernel would load an x86-64
purgatory: e_machine and EI_DATA of the purgatory are not checked against the target.

Campaign: build-ppc64 seed 1 inputs 16, 18, 62 (kernel seed make_kernels.make_vmlinux("ppc64"),
corpus x86-64 purgatory). Exit 1 while either part is there."""

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "testdata")]

import make_images  # noqa: E402

from kimagekit.arch.build import BuildInputs, build_ppc64  # noqa: E402
from kimagekit.errors import KimageError  # noqa: E402

bad = 0
with tempfile.TemporaryDirectory() as tmp:
    t = Path(tmp)
    (t / "purgatory.ro").write_bytes(make_images.make_purgatory())  # EM_X86_64, little-endian
    for arch, little in (("ppc64", False), ("ppc64le", True)):
        (t / "vmlinux").write_bytes(make_images.make_vmlinux(little=little))
        out = t / f"{arch}.img"
        try:
            build_ppc64(BuildInputs(t / "vmlinux", out, purgatory=t / "purgatory.ro"),
                        arch=arch, dtb=ROOT / "testdata/dtb/small.dtb")
            print(f"{arch}: built and verified with an x86-64 purgatory")
            bad += 1
        except KimageError as err:
            left = out.exists()
            print(f"{arch}: {type(err).__name__}: {err}; output left on disk: {left}")
            bad += left
print("REPRODUCED" if bad else "fixed")
sys.exit(1 if bad else 0)
