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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the bench package lives beside it

# the image run_all's patch cases use: a hand-over the next kernel takes (verify judges it)
from bench.cmp_image import MiB  # noqa: E402
from bench.cmp_image import make as build  # noqa: E402


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
