"""Issue 9's ceilings: inputs that once grew memory without end, hung, or took quadratic time,
each refused (or handled) within a bound. Cases for run_all.py; no reference side: the goal is an
absolute ceiling (seconds, MiB) on kimagekit alone."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

from bench.runner import KIMAGEKIT, Case, quick

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".cache" / "trust"
LIST = ROOT / "testdata" / "ima" / "small-le.bin"
SMALL_DTB = ROOT / "testdata" / "dtb" / "small.dtb"


def _fifo() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    f = WORK / "pcrs.fifo"
    if not f.exists():
        os.mkfifo(f)


def _noline() -> None:
    """An ASCII-looking first line, then no newline for 256 MiB (64 with --quick)."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "noline.ascii"
    mib = 64 if quick() else 256
    if path.exists() and path.stat().st_size > mib << 20:
        return
    with path.open("wb") as f:
        f.write(b"10 " + b"a" * 40 + b" ima-ng sha1:" + b"0" * 40 + b" /")
        block = b"x" * (1 << 20)
        for _ in range(mib):
            f.write(block)


def _tailed_dtb() -> None:
    """small.dtb followed by a 2 GiB sparse tail with 4 bytes of data at its end."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "tailed.dtb"
    path.write_bytes(SMALL_DTB.read_bytes())
    with path.open("r+b") as f:
        f.truncate(2 << 30)
        f.seek(-4, os.SEEK_END)
        f.write(b"END!")


def _huge_page_image() -> None:
    """A valid image whose note then claims a page size of 2^31 (once: 12.6 GB RSS, a 6.4 GB
    output, exit 0)."""
    sys.path.insert(0, str(ROOT / "testdata"))
    import make_images

    from kimagekit.image import write_image

    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "page.img"
    write_image(path, make_images.x86_like_image())
    data = bytearray(path.read_bytes())
    nph = struct.unpack_from("<H", data, 56)[0]
    note = struct.unpack_from("<Q", data, 64 + (nph - 1) * 56 + 8)[0]
    struct.pack_into("<Q", data, note + 24 + 32, 1 << 31)  # note.page_size
    path.write_bytes(bytes(data))
    (WORK / "handover.bin").write_bytes(make_images.handover_buffer())


def _cleanup() -> None:
    for name in ("tailed.dtb", "tailed.out.dtb", "page.out.img"):
        (WORK / name).unlink(missing_ok=True)


def cases() -> list[Case]:
    replay = [*KIMAGEKIT, "ima", "replay", str(LIST), "--pcrs"]
    return [
        Case("refuse --pcrs /dev/zero", [*replay, "/dev/zero"], None,
             goal="wall<=2s, rss<=64MiB", ok_codes=(2,)),
        Case("refuse a --pcrs FIFO with no writer (3 s wait)", [*replay, str(WORK / "pcrs.fifo")],
             None, goal="wall<=5s, rss<=64MiB", setup=_fifo, ok_codes=(2,)),
        Case("refuse an ASCII list with no newline (256 MiB)",
             [*KIMAGEKIT, "ima", "check", str(WORK / "noline.ascii")], None,
             goal="wall<=5s, rss<=64MiB", setup=_noline, ok_codes=(2,)),
        Case("dtb set on a DTB with a 2 GiB sparse tail",
             [*KIMAGEKIT, "dtb", "set", str(WORK / "tailed.dtb"), "/chosen", "x", "7", "-o",
              str(WORK / "tailed.out.dtb")], None, goal="wall<=5s, rss<=64MiB",
             setup=_tailed_dtb, teardown=_cleanup),
        Case("refuse patch-handover of an image noting a 2^31 page size",
             [*KIMAGEKIT, "patch-handover", str(WORK / "page.img"), "--data",
              str(WORK / "handover.bin"), "-o", str(WORK / "page.out.img")], None,
             goal="wall<=5s, rss<=64MiB", setup=_huge_page_image, teardown=_cleanup,
             ok_codes=(2,)),
    ]
