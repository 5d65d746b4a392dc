#!/usr/bin/env python3
"""Benchmark: parse + recheck every template digest + replay the sha1 and sha256 banks, kimagekit
against ``evmctl ima_measurement --pcrs sha1,F --pcrs sha256,F`` on the same generated list, in the
same run. Reports wall time (best of --repeat) and peak RSS of each process.

    python bench/bench_ima.py --entries 100000 1000000

Not a test and not run in CI: the 10^6 list is 126 MB. Lists are cached in bench/.cache/.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"

KIMAGEKIT = """
import sys
from kimagekit import ima_log
with ima_log.open_list(sys.argv[1]) as (fmt, view):
    r = ima_log.analyse(view, fmt, banks=["sha1", "sha256"], check=True)
assert not r.mismatches, r.mismatches[:1]
print(r.entries, r.pcrs["sha1"][10].hex(), r.pcrs["sha256"][10].hex())
"""


def make_list(path: Path, n: int) -> dict[str, bytes]:
    """An ima-ng list of ``n`` entries (sha256 file digests, varied names), and its PCR 10."""
    pcr = {"sha1": bytes(20), "sha256": bytes(32)}
    u32 = struct.Struct("<I")
    with path.open("wb") as f:
        for i in range(n):
            d = b"sha256:\0" + hashlib.sha256(i.to_bytes(8, "little")).digest()
            name = f"/usr/lib/x86_64-linux-gnu/lib{i:07d}.so.{i % 7}".encode() + b"\0"
            data = u32.pack(len(d)) + d + u32.pack(len(name)) + name
            t1 = hashlib.sha1(data).digest()
            f.write(u32.pack(10) + t1 + u32.pack(6) + b"ima-ng" + u32.pack(len(data)) + data)
            pcr["sha1"] = hashlib.sha1(pcr["sha1"] + t1).digest()
            pcr["sha256"] = hashlib.sha256(pcr["sha256"] + hashlib.sha256(data).digest()).digest()
    return pcr


def timed(cmd: list[str], repeat: int) -> tuple[float, int, str]:
    best, out = float("inf"), ""
    peak = 0
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        best = min(best, time.perf_counter() - t)
        peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)
        out = p.stdout + p.stderr
        if p.returncode:
            raise SystemExit(f"{cmd[0]} failed ({p.returncode}): {out[-400:]}")
    return best, peak, out


def peak_rss(cmd: list[str]) -> int:
    """Peak RSS in KiB of one run, measured by GNU time when present (ru_maxrss of children is
    the maximum over all children so far)."""
    gnu_time = shutil.which("time") or "/usr/bin/time"
    if not os.path.exists(gnu_time):
        return -1
    p = subprocess.run([gnu_time, "-f", "%M", *cmd], capture_output=True, text=True, check=False)
    return int(p.stderr.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    evmctl = shutil.which("evmctl")
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"{'entries':>9} {'MB':>6} {'kimagekit s':>12} {'evmctl s':>9} {'ratio':>6} "
          f"{'kimagekit RSS MiB':>18} {'evmctl RSS MiB':>15}")
    for n in args.entries:
        lst = CACHE / f"ima-ng-{n}.bin"
        pcr_path = CACHE / f"ima-ng-{n}.pcr"
        if not lst.exists() or not pcr_path.exists():
            pcr = make_list(lst, n)
            pcr_path.write_bytes(pcr["sha1"] + pcr["sha256"])
        raw = pcr_path.read_bytes()
        pcr = {"sha1": raw[:20], "sha256": raw[20:]}
        files = []
        for bank, value in pcr.items():
            f = CACHE / f"ima-ng-{n}.{bank}.pcrs"
            size = len(value)
            f.write_text("".join(f"PCR-{i:02d}: {(bytes(size) if i < 10 else value).hex()}\n"
                                 for i in range(11)))
            files += ["--pcrs", f"{bank},{f}"]
        k_cmd = [sys.executable, "-c", KIMAGEKIT, str(lst)]
        k_time, _, k_out = timed(k_cmd, args.repeat)
        assert k_out.split() == [str(n), pcr["sha1"].hex(), pcr["sha256"].hex()], k_out
        k_rss = peak_rss(k_cmd)
        if evmctl:
            e_cmd = [evmctl, "ima_measurement", *files, str(lst)]
            e_time, _, e_out = timed(e_cmd, args.repeat)
            assert "Matched per TPM bank" in e_out, e_out[-300:]
            e_rss = peak_rss(e_cmd)
            ratio = f"{k_time / e_time:6.2f}"
        else:
            e_time, e_rss, ratio = float("nan"), -1, "  n/a"
        print(f"{n:>9} {lst.stat().st_size / 1e6:>6.0f} {k_time:>12.2f} {e_time:>9.2f} {ratio} "
              f"{k_rss / 1024:>18.1f} {e_rss / 1024:>15.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
