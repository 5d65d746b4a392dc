"""Benchmark ``kimagekit verify`` against ``sha256sum`` on a 45 MB kernel + 256 MB initrd image.

Run: python bench/bench_verify.py [WORKDIR]. Builds the image (synthetic contents), then in the
same run times ``sha256sum IMAGE`` and ``kimagekit verify IMAGE`` (best of 3, warm cache) and
reports each verify's peak RSS, for a small and the large initrd, to show it does not grow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kimagekit.image import seal, write_image
from kimagekit.purgatory import DigestPolicy
from kimagekit.segments import KexecBuf, MemRange, Role, SegmentList, Target, add_buffer

MiB = 1 << 20


def build(path: Path, kernel_mb: int, initrd_mb: int) -> None:
    t = Target("x86_64", ram=(MemRange(0x100000, (4 << 30) - 0x100000),))
    sl = SegmentList(t)
    block = os.urandom(MiB)
    sl, _ = add_buffer(sl, KexecBuf(block * kernel_mb, kernel_mb * MiB, Role.KERNEL,
                                    buf_min=0x1000000, buf_align=0x200000))
    sl, _ = add_buffer(sl, KexecBuf(block[::-1] * initrd_mb, initrd_mb * MiB, Role.INITRD,
                                    top_down=True, buf_max=0xFFFFFFFF))
    sl, _ = add_buffer(sl, KexecBuf(b"h" * 4096, 64 * 1024, Role.HANDOVER, top_down=True,
                                    checksummed=False))
    write_image(path, seal(sl, DigestPolicy.SEED, entry=0x1000000))


def timed(cmd: list[str]) -> tuple[float, int]:
    """Wall time and the child's peak RSS (ru_maxrss, KiB on Linux) of one run."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.execvp(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed")
    return time.perf_counter() - start, usage.ru_maxrss


def best(cmd: list[str], runs: int = 3) -> tuple[float, int]:
    results = [timed(cmd) for _ in range(runs)]
    return min(r[0] for r in results), max(r[1] for r in results)


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="kbench"))
    verify_cmd = [sys.executable, "-m", "kimagekit", "verify"]
    rows = []
    for initrd_mb in (16, 256):
        img = work / f"bench-{initrd_mb}.img"
        build(img, 45, initrd_mb)
        subprocess.run(["cat", str(img)], stdout=subprocess.DEVNULL, check=True)  # warm cache
        t_sha, rss_sha = best(["sha256sum", str(img)])
        t_ver, rss_ver = best([*verify_cmd, str(img)])
        rows.append((initrd_mb, img.stat().st_size, t_sha, t_ver, rss_sha, rss_ver))
        img.unlink()
    print(f"{'initrd':>7} {'image MB':>9} {'sha256sum s':>12} {'verify s':>9} {'ratio':>6} "
          f"{'sha RSS MB':>11} {'verify RSS MB':>14}")
    for mb, size, ts, tv, rs, rv in rows:
        print(f"{mb:>6}M {size / MiB:>9.1f} {ts:>12.3f} {tv:>9.3f} {tv / ts:>6.2f} "
              f"{rs / 1024:>11.1f} {rv / 1024:>14.1f}")


if __name__ == "__main__":
    main()
