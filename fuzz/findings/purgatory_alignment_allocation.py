#!/usr/bin/env python3
"""Finding (build-ppc64, purgatory; MemoryError): a purgatory whose section declares a huge
sh_addralign makes add_purgatory allocate the laid-out buffer (bytes(lay.bufsz), the sections
padded to that alignment) before anything checks it against the input or RAM: MemoryError (or
gigabytes of RSS without a limit) instead of a KimageError. The fuzzer's input set section 3's
sh_addralign to 2**56; here 2**32, under a 2 GiB RLIMIT_AS as in the campaign's worker.

Campaign: build-ppc64 seed 1 input 1598 (purgatory: u64> 0x5b8=0x1). Exit 1 while it happens."""

import resource
import struct
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "testdata")]

import make_images  # noqa: E402

from kimagekit.arch.build import BuildInputs, build_ppc64  # noqa: E402
from kimagekit.errors import KimageError  # noqa: E402

purg = bytearray(make_images.make_purgatory())
shoff = struct.unpack_from("<Q", purg, 0x28)[0]
struct.pack_into("<Q", purg, shoff + 3 * 64 + 48, 1 << 32)  # section 3's sh_addralign
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
with tempfile.TemporaryDirectory() as tmp:
    t = Path(tmp)
    (t / "vmlinux").write_bytes(make_images.make_vmlinux())
    (t / "purgatory.ro").write_bytes(purg)
    try:
        build_ppc64(BuildInputs(t / "vmlinux", t / "out.img", purgatory=t / "purgatory.ro"),
                    arch="ppc64le", dtb=ROOT / "testdata/dtb/small.dtb")
        print("built: no error at all")
    except KimageError as err:
        print(f"fixed: {type(err).__name__}: {err}")
        sys.exit(0)
    except MemoryError:
        print("REPRODUCED: MemoryError")
sys.exit(1)
