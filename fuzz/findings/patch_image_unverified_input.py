#!/usr/bin/env python3
"""Finding (patch-image, image): patch-handover on an image that does not verify before the
patch (here one bit of the stored digest flipped) writes the patched image, then refuses it
(OutputError "the patched image does not verify: ...") and leaves it at -o; with --in-place
(out = the image) the input itself has been replaced when the command exits 2. The refusal comes
after the write (image.patch_handover: atomic_write, then verify), and blames the patch for
damage the input already had.

Campaign: patch-image seed 1 input 47 (319 in 10^4: "output left by OutputError at
image.py:577:patch_handover"); the same write-then-check order leaves the output behind on a
ParseError from stored_digest (inputs 1941, 2970: the note's purgatory symbols damaged). Exit 1
while either part is there."""

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "testdata")]

import make_images  # noqa: E402

from kimagekit.arch.build import BuildInputs, build_ppc64  # noqa: E402
from kimagekit.errors import KimageError  # noqa: E402
from kimagekit.handover import patch_file  # noqa: E402

bad = 0
with tempfile.TemporaryDirectory() as tmp:
    t = Path(tmp)
    (t / "vmlinux").write_bytes(make_images.make_vmlinux())
    built = build_ppc64(BuildInputs(t / "vmlinux", t / "good.img",
                                    ima=make_images.restorable_list(t / "ima.bin")),
                        arch="ppc64le", dtb=ROOT / "testdata/dtb/small.dtb", page_size=0x1000)
    image = bytearray((t / "good.img").read_bytes())
    at = image.find(bytes.fromhex(built.result.digest))  # the stored digest
    image[at] ^= 1
    (t / "new").write_bytes(make_images.handover_buffer())
    for in_place in (False, True):
        src = t / "damaged.img"
        src.write_bytes(image)
        out = src if in_place else t / "out.img"
        try:
            patch_file(src, out, data=t / "new")
            print(f"in_place={in_place}: patched and verified")
            bad += 1
        except KimageError as err:
            changed = src.read_bytes() != image
            left = out.exists() and not in_place
            print(f"in_place={in_place}: {type(err).__name__}: {err}; output left: {left}; "
                  f"input replaced: {changed}")
            bad += left or changed
print("REPRODUCED" if bad else "fixed")
sys.exit(1 if bad else 0)
