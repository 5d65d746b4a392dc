"""Benchmark: ``kimagekit dtb set`` on a DTB followed by a sparse tail (default 2 GiB).

Run: python bench/bench_dtb_tail.py [GIB]. Not a test and not run in CI. Prints the wall time,
the child's peak RSS, and the output's size and allocated bytes (a sparse tail must stay sparse).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMALL = Path(__file__).resolve().parent.parent / "testdata" / "dtb" / "small.dtb"


def main() -> int:
    gib = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    with tempfile.TemporaryDirectory(prefix="kimagekit-bench-") as tmp:
        src, out = Path(tmp) / "tailed.dtb", Path(tmp) / "out.dtb"
        src.write_bytes(SMALL.read_bytes())
        with src.open("r+b") as f:
            f.truncate(int(gib * (1 << 30)))
            f.seek(-4, os.SEEK_END)
            f.write(b"END!")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kimagekit", "dtb", "set", str(src), "/chosen",
                        "x", "7", "-o", str(out)], check=True, stdout=subprocess.DEVNULL)
        took = time.perf_counter() - start
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        st = out.stat()
        print(f"tail {gib:g} GiB: {took:.2f} s, peak RSS {rss:.1f} MiB, output "
              f"{st.st_size} bytes, {st.st_blocks * 512} allocated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
