#!/usr/bin/env python3
"""Finding (patch-image, image; oversize, MemoryError, construct error): the page size in an
image's note is taken as is, and patch-handover rewrites the image with every segment aligned to
it. A 48 KiB image whose page size says 64 MiB becomes a 335 MB output (campaign: input 87834);
2**40 allocates the padding (bytes(o - at) in image_chunks): MemoryError under a 2 GiB
RLIMIT_AS (input 46158, 4 in 10^5); 2**63 overflows a u64 file offset: construct's
FormatFieldError from _note_desc, not a KimageError (input 62488). A page size that is not 4 KiB
or 64 KiB (or at least not a small power of two) should be a ParseError naming note.page_size.

Exit 1 while any of the three happens."""

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
from kimagekit.formats.kexec import NOTE_ARCH_LEN  # noqa: E402
from kimagekit.handover import patch_file  # noqa: E402

resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
bad = 0
with tempfile.TemporaryDirectory() as tmp:
    t = Path(tmp)
    (t / "vmlinux").write_bytes(make_images.make_vmlinux())
    ima = make_images.restorable_list(t / "ima.bin")
    build_ppc64(BuildInputs(t / "vmlinux", t / "good.img", ima=ima),
                arch="ppc64le", dtb=ROOT / "testdata/dtb/small.dtb", page_size=0x1000)
    image = bytearray((t / "good.img").read_bytes())
    at = image.index(b"ppc64le") + NOTE_ARCH_LEN  # note.head.page_size follows the arch
    assert struct.unpack_from("<Q", image, at)[0] == 0x1000
    (t / "new").write_bytes(make_images.handover_buffer())
    for page in (1 << 26, 1 << 40, 1 << 63):
        struct.pack_into("<Q", image, at, page)
        (t / "odd.img").write_bytes(image)
        out = t / "out.img"
        out.unlink(missing_ok=True)
        try:
            patch_file(t / "odd.img", out, data=t / "new")
            size = out.stat().st_size
            print(f"page {page:#x}: patched, {len(image)} bytes in, {size} out")
            bad += size > 2 * len(image)
        except KimageError as err:
            print(f"page {page:#x}: refused: {type(err).__name__}: {err}")
        except (MemoryError, Exception) as exc:
            print(f"page {page:#x}: {type(exc).__name__}: {str(exc)[:120]}")
            bad += 1
print("REPRODUCED" if bad else "fixed")
sys.exit(1 if bad else 0)
