#!/usr/bin/env python3
"""Benchmark: the ASCII list reader on inputs without a final newline.

    python bench/bench_ima_ascii.py --mib 256 --list-mib 64

Two files, each read in a fresh process (wall time and peak RSS of that process):

- ``noline``: ``--mib`` MiB with no newline at all. The reader must refuse it at the first line
  longer than ``ima_ascii.MAX_LINE`` (4 MiB) without reading further or holding more.
- ``list``: about ``--list-mib`` MiB of real ``ima-ng`` lines, the last without its newline:
  every line parsed and its template digest rechecked (``ima_log.analyse``).

Not a test and not run in CI. Files are cached in bench/.cache/.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"

READ = """
import sys
from kimagekit import ima_log
from kimagekit.errors import ParseError
try:
    with ima_log.open_list(sys.argv[1]) as (fmt, view):
        r = ima_log.analyse(view, fmt, banks=["sha1"])
    print("entries", r.entries, "mismatches", len(r.mismatches))
except ParseError as err:
    print("refused:", err)
"""


def make_noline(path: Path, mib: int) -> None:
    # an ASCII-looking first line so that detection says "ascii", then no newline ever
    head = b"10 " + b"a" * 40 + b" ima-ng sha1:" + b"0" * 40 + b" /"
    with path.open("wb") as f:
        f.write(head)
        block = b"x" * (1 << 20)
        for _ in range(mib):
            f.write(block)


def make_list(path: Path, mib: int) -> int:
    n = 0
    with path.open("wb") as f:
        size = 0
        while size < mib << 20:
            fd = hashlib.sha256(n.to_bytes(8, "little")).digest()
            name = f"/usr/lib/x86_64-linux-gnu/lib{n:08d}.so".encode()
            data = (len(b"sha256:\0" + fd).to_bytes(4, "little") + b"sha256:\0" + fd
                    + (len(name) + 1).to_bytes(4, "little") + name + b"\0")
            line = (b"10 " + hashlib.sha1(data).hexdigest().encode() + b" ima-ng sha256:"
                    + fd.hex().encode() + b" " + name + b"\n")
            f.write(line)
            size += len(line)
            n += 1
        f.truncate(size - 1)  # drop the last newline
    return n


def measure(path: Path) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", READ, str(path)], capture_output=True, text=True,
                       check=True, env={"PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(rss, before) / 1024, p.stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--list-mib", type=int, default=64)
    args = ap.parse_args()
    CACHE.mkdir(exist_ok=True)
    noline = CACHE / f"noline-{args.mib}.txt"
    if not noline.exists():
        make_noline(noline, args.mib)
    listed = CACHE / f"ascii-{args.list_mib}.txt"
    if not listed.exists():
        make_list(listed, args.list_mib)
    for label, path in (("noline", noline), ("list", listed)):
        wall, rss, said = measure(path)
        print(f"{label}: {path.stat().st_size} bytes, {wall:.2f} s, peak RSS {rss:.1f} MiB: "
              f"{said}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
