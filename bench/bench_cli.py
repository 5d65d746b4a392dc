#!/usr/bin/env python3
"""Cold start of the CLI: ``kimagekit --help`` and ``kimagekit inspect`` on a small list, best of
--repeat runs each, with ``python -c pass`` as the floor. Not a test, not in CI."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def best(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    py = [sys.executable]
    small = str(ROOT / "testdata/ima/small-le.bin")
    rows = [
        ("python -c pass", [*py, "-c", "pass"]),
        ("import kimagekit.cli", [*py, "-c", "import kimagekit.cli"]),
        ("kimagekit --help", [*py, "-m", "kimagekit", "--help"]),
        ("kimagekit inspect small-le.bin", [*py, "-m", "kimagekit", "inspect", small]),
        ("kimagekit ima check small-le.bin", [*py, "-m", "kimagekit", "ima", "check", small]),
    ]
    for name, cmd in rows:
        print(f"{name:<34} {best(cmd, args.repeat) * 1000:7.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
