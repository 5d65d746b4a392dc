#!/usr/bin/env python3
"""Run every comparison (the cases() of each bench/cmp_*.py) in one run and print the table.

    python bench/run_all.py [--quick] [--only NAME] [--rounds N] [--markdown PATH]

--only keeps the cases whose name or module contains NAME (may repeat). The table is also written
as markdown (default bench/.cache/run_all.md). Not a test, not in CI.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import runner  # noqa: E402


def discover() -> list[str]:
    return sorted(p.stem for p in (ROOT / "bench").glob("cmp_*.py"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds, smaller inputs")
    ap.add_argument("--only", action="append", default=[], metavar="NAME")
    ap.add_argument("--rounds", type=int, default=None, help="paired rounds (default 5, quick 2)")
    ap.add_argument("--markdown", type=Path, default=ROOT / "bench/.cache/run_all.md")
    args = ap.parse_args(argv)
    args.markdown = args.markdown.resolve()
    # children inherit this folder, and `python -m`/`-c` put it first on sys.path
    os.chdir(ROOT)
    runner.set_quick(args.quick)
    rounds = args.rounds or (2 if args.quick else 5)

    results: list[runner.Result] = []
    for module in discover():
        mod = importlib.import_module(f"bench.{module}")
        for case in mod.cases():
            if args.only and not any(o in case.name or o in module for o in args.only):
                continue
            print(f"[{module}] {case.name} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            res = runner.measure(case, module, rounds)
            note = f" ({res.error})" if res.error else ""
            print(f"    {time.perf_counter() - start:.1f} s{note}", file=sys.stderr, flush=True)
            results.append(res)

    rows = [runner.row(r) for r in results]
    print(runner.text_table(rows))
    header = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Python "
              f"{platform.python_version()}, {rounds} paired rounds"
              f"{', --quick' if args.quick else ''}; CPU = user+sys of the child\n\n")
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(header + runner.markdown_table(rows) + "\n")
    print(f"\nmarkdown: {args.markdown}", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
