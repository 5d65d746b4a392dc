#!/usr/bin/env python3
"""Inputs and outputs: what a refusal costs (a device, an endless pipe, a writerless FIFO), a
list read from a file (mapped) against the same list from a pipe (read whole, bounded), and an
atomic write (O_TMPFILE, fsync, read-back, rename). Wall time and kimagekit's peak RSS (GNU
time). Not a test, not in CI."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kimagekit import ima_log  # noqa: E402


def measure(shell: str, report: Path) -> tuple[float, float, int]:
    """Seconds, kimagekit's peak RSS in MiB (GNU time, which kimagekit is started by, so the
    figure is its own and not inherited from this process) and the pipeline's exit status."""
    t = time.perf_counter()
    code = subprocess.run(["bash", "-c", shell], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False).returncode
    secs = time.perf_counter() - t
    return secs, int(report.read_text().split()[-1]) / 1024, code


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=200_000)
    args = ap.parse_args()
    small = shlex.quote(str(ROOT / "testdata/ima/small-le.bin"))
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "time"
        k = f"/usr/bin/time -f %M -o {report} {shlex.quote(sys.executable)} -m kimagekit"
        big = Path(tmp) / "big.bin"
        entries = ima_log.read_entries(ROOT / "testdata/ima/small-le.bin")
        big.write_bytes(ima_log.encode_list(entries * (args.entries // len(entries)), "<", 20))
        fifo = Path(tmp) / "fifo"
        os.mkfifo(fifo)
        size = big.stat().st_size / 2**20
        rows = [
            ("--pcrs /dev/zero (refused)", f"{k} ima replay {small} --pcrs /dev/zero"),
            ("yes | --pcrs - (refused at 1 MiB)", f"yes | {k} ima replay {small} --pcrs -"),
            ("--pcrs FIFO, no writer (refused)", f"{k} ima replay {small} --pcrs {fifo}"),
            (f"ima check FILE ({size:.0f} MiB, mapped)", f"{k} ima check {big}"),
            (f"cat FILE | ima check - ({size:.0f} MiB)", f"cat {big} | {k} ima check -"),
            (f"ima convert -o OUT ({size:.0f} MiB)",
             f"{k} ima convert {big} --to binary -o {tmp}/out.bin"),
        ]
        print(f"{'case':<40} {'time':>8} {'peak RSS':>10} {'exit':>5}")
        for name, shell in rows:
            secs, rss, code = measure(shell, report)
            print(f"{name:<40} {secs:7.2f}s {rss:7.1f} MiB {code:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
