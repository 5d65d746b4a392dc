#!/usr/bin/env python3
"""Finding (build-x86_64, options): a --mem range whose size or start does not fit in 64 bits
passes parse_mem_ranges and the hole search, then build_boot_params packs it into the e820 table
with struct.pack_into: struct.error, not a KimageError (the CLI shows a traceback).

Campaign: build-x86_64 seed 1 input 266 (mem=0x100000-0x3fffffff,0x7f+0x1000...0).
Exit 1 while the bug is there, 0 once it is refused with a KimageError."""

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "testdata")]

import make_images  # noqa: E402
import make_kernels  # noqa: E402

from kimagekit.arch.build import BuildInputs, build_x86_64  # noqa: E402
from kimagekit.errors import KimageError  # noqa: E402
from kimagekit.segments import parse_mem_ranges  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    t = Path(tmp)
    (t / "bzImage").write_bytes(make_kernels.make_bzimage())
    (t / "purgatory.ro").write_bytes(make_images.make_purgatory())
    # as `kimagekit build --arch x86_64 --mem 0x10000000000000000+0x1000,0x100000-0x3fffffff`
    try:
        ram = parse_mem_ranges("0x10000000000000000+0x1000,0x100000-0x3fffffff")
        build_x86_64(BuildInputs(t / "bzImage", t / "out.img", purgatory=t / "purgatory.ro"),
                     ram=ram)
    except KimageError as err:
        print(f"fixed: {type(err).__name__}: {err}")
        sys.exit(0)
    except Exception as exc:
        print(f"REPRODUCED: {type(exc).__name__}: {exc}")
        sys.exit(1)
    print("built: no error at all")
    sys.exit(1)
