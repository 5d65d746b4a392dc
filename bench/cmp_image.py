"""Image comparisons for run_all.py: ``patch-handover`` on a 301 MiB image against ``cp`` of it
(in place and ``-o``), in place against ``verify`` of the same image, and the purgatory of a
Debian bzImage found while decompressing against the whole decompression.

The image (45 MB kernel, 256 MB initrd, random contents, an IMA hand-over the next kernel takes;
seed policy, so the hand-over is outside the digest) is made in bench/.cache/image/ by a child
process (``python -m bench.cmp_image make``), so the runner never holds it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.runner import KIMAGEKIT, ROOT, Case, quick

WORK = ROOT / "bench/.cache/image"
MiB = 1 << 20
DEBIAN_BZIMAGE = (Path.home() / ".cache/kimagekit/linux-image-6.1.0-50-amd64/boot"
                  / "vmlinuz-6.1.0-50-amd64")


def _gen() -> object:
    spec = importlib.util.spec_from_file_location("make_images", ROOT / "testdata/make_images.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make(path: Path, kernel_mb: int, initrd_mb: int) -> None:
    """The image and its new hand-over contents (the restorable test list without its last
    entry, so the patch changes the bytes)."""
    from kimagekit.ima_kexec import build_buffer
    from kimagekit.image import HandoverStyle, seal, write_image
    from kimagekit.purgatory import DigestPolicy
    from kimagekit.segments import KexecBuf, MemRange, Role, SegmentList, Target, add_buffer

    gen = _gen()
    t = Target("x86_64", ram=(MemRange(0x100000, (4 << 30) - 0x100000),))
    sl = SegmentList(t)
    block = os.urandom(MiB)
    sl, _ = add_buffer(sl, KexecBuf(block * kernel_mb, kernel_mb * MiB, Role.KERNEL,
                                    buf_min=0x1000000, buf_align=0x200000))
    sl, _ = add_buffer(sl, KexecBuf(block[::-1] * initrd_mb, initrd_mb * MiB, Role.INITRD,
                                    top_down=True, buf_max=0xFFFFFFFF))
    sl, _ = add_buffer(sl, KexecBuf(gen.handover_buffer(), 64 * 1024,  # type: ignore[attr-defined]
                                    Role.HANDOVER, top_down=True, checksummed=False))
    write_image(path, seal(sl, DigestPolicy.SEED, entry=0x1000000,
                           handover_style=HandoverStyle.NONE))
    entries = gen.restorable_entries()  # type: ignore[attr-defined]
    path.with_suffix(".handover").write_bytes(build_buffer(entries[:-1]))


def _setup(kernel_mb: int, initrd_mb: int) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    img = WORK / f"k{kernel_mb}-i{initrd_mb}.img"
    if not img.exists() or not img.with_suffix(".handover").exists():
        subprocess.run([sys.executable, "-m", "bench.cmp_image", "make", str(img),
                        str(kernel_mb), str(initrd_mb)], cwd=ROOT, check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    # warm the page cache, as for every run after the first
    subprocess.run(["cat", str(img)], stdout=subprocess.DEVNULL, check=True)


def _teardown() -> None:
    for name in ("copy.img", "out.img"):
        (WORK / name).unlink(missing_ok=True)


def find_early(path: str) -> None:
    from kimagekit import kernels
    from kimagekit.fileio import mapped

    with mapped(path) as view:
        kernels.purgatory_while_decompressing(view)


def find_whole(path: str) -> None:
    from kimagekit import kernels
    from kimagekit.fileio import mapped

    with mapped(path) as view:
        kernels.find_purgatory(view)


def cases() -> list[Case]:
    kernel_mb, initrd_mb = (16, 48) if quick() else (45, 256)
    img = WORK / f"k{kernel_mb}-i{initrd_mb}.img"
    data = img.with_suffix(".handover")
    size = f"{kernel_mb + initrd_mb} MiB image"
    setup = functools.partial(_setup, kernel_mb, initrd_mb)
    patch = [*KIMAGEKIT, "patch-handover", str(img), "--data", str(data)]
    cp = ["cp", str(img), str(WORK / "copy.img")]
    out = [
        Case(f"patch-handover --in-place, {size}", [*patch, "--in-place"], cp,
             "cpu<=0.2x, rss<=64MiB", setup, teardown=_teardown),
        Case(f"patch-handover -o, {size}", [*patch, "-o", str(WORK / "out.img")], cp,
             "cpu<=1.5x, rss<=64MiB", setup, teardown=_teardown),
        Case(f"patch-handover --in-place vs verify, {size}", [*patch, "--in-place"],
             [*KIMAGEKIT, "verify", str(img)], "cpu<=1.2x", setup),
    ]
    if DEBIAN_BZIMAGE.exists():
        out.append(Case("purgatory from Debian 6.1 bzImage: early vs whole decompression",
                        functools.partial(find_early, str(DEBIAN_BZIMAGE)),
                        functools.partial(find_whole, str(DEBIAN_BZIMAGE)), "cpu<=0.75x"))
        build = [*KIMAGEKIT, "build", "--arch", "x86_64", "--kernel", str(DEBIAN_BZIMAGE),
                 "-o", str(WORK / "build.img")]
        purg = WORK / "purgatory.ro"
        out.append(Case("build --purgatory-from vs --purgatory FILE (Debian 6.1)",
                        [*build, "--purgatory-from", str(DEBIAN_BZIMAGE)],
                        [*build, "--purgatory", str(purg)], "cpu<=1.5x",
                        functools.partial(_extract, purg)))
    return out


def _extract(purg: Path) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    if not purg.exists():
        subprocess.run([*KIMAGEKIT, "extract-purgatory", str(DEBIAN_BZIMAGE), "-o", str(purg)],
                       check=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       stdout=subprocess.DEVNULL)


if __name__ == "__main__" and sys.argv[1:2] == ["make"]:
    make(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
elif __name__ == "__main__":
    shutil.rmtree(WORK, ignore_errors=True)
    print("removed", WORK)
