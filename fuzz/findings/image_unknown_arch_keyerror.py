#!/usr/bin/env python3
"""Finding (patch-image, image; KeyError): an image whose note names an arch kimagekit does not
know (the fuzzer's: 'x86_\\x10'; here 'ppc64lf') is read without complaint, patched, and then
image_chunks looks the arch up in ARCHES while writing: KeyError, not a KimageError (the CLI shows
a traceback). read_image should refuse the arch as a ParseError naming the note field.

Campaign: patch-image seed 1 input 4573 (3 in 10^4). Exit 1 while it happens."""

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "testdata")]

import make_images  # noqa: E402

from kimagekit.arch.build import BuildInputs, build_ppc64  # noqa: E402
from kimagekit.errors import KimageError  # noqa: E402
from kimagekit.handover import patch_file  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    t = Path(tmp)
    (t / "vmlinux").write_bytes(make_images.make_vmlinux())
    ima = make_images.restorable_list(t / "ima.bin")
    build_ppc64(BuildInputs(t / "vmlinux", t / "good.img", ima=ima),
                arch="ppc64le", dtb=ROOT / "testdata/dtb/small.dtb", page_size=0x1000,
                no_purgatory=True)
    image = (t / "good.img").read_bytes()
    assert image.count(b"ppc64le") == 1
    (t / "odd.img").write_bytes(image.replace(b"ppc64le", b"ppc64lf"))
    (t / "new").write_bytes(make_images.handover_buffer())
    try:
        patch_file(t / "odd.img", t / "out.img", data=t / "new")
        print("patched: no error at all")
    except KimageError as err:
        print(f"fixed: {type(err).__name__}: {err}")
        sys.exit(0)
    except KeyError as exc:
        print(f"REPRODUCED: KeyError {exc}")
sys.exit(1)
