"""IMA comparisons for run_all.py, on a generated ``ima-ng`` list of 10^6 entries (10^5 with
--quick; bench/bench_ima.py's generator, cached in bench/.cache/ima/):

- ``ima show --ascii`` and ``--json`` against ``ima replay --bank sha1 --bank sha256`` of the
  same list;
- ``ima replay`` (sha1 and sha256, compared with the expected PCR 10) against
  ``evmctl ima_measurement`` with the same PCR files;
- ``ima check`` of 200 lists with ``--jobs 2`` against ``--jobs 1`` (the ratio is the speed-up
  inverted: 1.7x faster is a wall ratio of 0.59).
"""

from __future__ import annotations

import os
import shutil
from functools import partial
from pathlib import Path

from bench import bench_ima
from bench.runner import KIMAGEKIT, ROOT, Case, quick

WORK = ROOT / "bench/.cache/ima"
LISTS = 200


def _list(n: int) -> Path:
    """The list and its sha1/sha256 PCR files in evmctl's format (PCR-00..09 zero, PCR-10)."""
    WORK.mkdir(parents=True, exist_ok=True)
    lst = WORK / f"ima-ng-{n}.bin"
    pcr_path = WORK / f"ima-ng-{n}.pcr"
    if not lst.exists() or not pcr_path.exists():
        pcr = bench_ima.make_list(lst, n)
        pcr_path.write_bytes(pcr["sha1"] + pcr["sha256"])
    raw = pcr_path.read_bytes()
    for bank, value in (("sha1", raw[:20]), ("sha256", raw[20:])):
        (WORK / f"ima-ng-{n}.{bank}.pcrs").write_text("".join(
            f"PCR-{i:02d}: {(bytes(len(value)) if i < 10 else value).hex()}\n"
            for i in range(11)))
    return lst


def _many(n: int) -> list[str]:
    one = _list(n)
    folder = WORK / f"many-{n}"
    folder.mkdir(exist_ok=True)
    out = []
    for i in range(LISTS):
        f = folder / f"list-{i:03d}.bin"
        if not f.exists():
            os.link(one, f)  # same bytes, another name: no more disk, the same page cache
        out.append(str(f))
    return out


def _setup_list(n: int) -> None:
    _list(n)


def _setup_many(per_list: int) -> None:
    _many(per_list)


def cases() -> list[Case]:
    n = 100_000 if quick() else 1_000_000
    lst = WORK / f"ima-ng-{n}.bin"
    pcrs = [a for bank in ("sha1", "sha256")
            for a in ("--pcrs", f"{bank},{WORK / f'ima-ng-{n}.{bank}.pcrs'}")]
    replay = [*KIMAGEKIT, "ima", "replay", "--bank", "sha1", "--bank", "sha256", str(lst)]
    evmctl = shutil.which("evmctl")
    per_list = 2000 if quick() else 20000
    many = [str(WORK / f"many-{per_list}" / f"list-{i:03d}.bin") for i in range(LISTS)]
    label = f"{n:,}"
    setup = partial(_setup_list, n)
    cases = [
        Case(f"ima show --ascii, {label} entries (ref: ima replay sha1+sha256)",
             [*KIMAGEKIT, "ima", "show", "--ascii", str(lst)], replay, "cpu<=1.5x", setup),
        Case(f"ima show --json, {label} entries (ref: ima replay sha1+sha256)",
             [*KIMAGEKIT, "ima", "show", "--json", str(lst)], replay, "cpu<=1.5x", setup),
    ]
    if evmctl:
        cases.append(Case(f"ima replay sha1+sha256 vs quote, {label} entries (ref: evmctl)",
                          [*KIMAGEKIT, "ima", "replay", "--bank", "sha1", "--bank", "sha256",
                           *pcrs, str(lst)],
                          [evmctl, "ima_measurement", *pcrs, str(lst)], "cpu<=0.8x", setup))
    cases.append(Case(f"ima check {LISTS} lists of {per_list:,}, --jobs 2 (ref: --jobs 1)",
                      [*KIMAGEKIT, "ima", "check", "--jobs", "2", *many],
                      [*KIMAGEKIT, "ima", "check", "--jobs", "1", *many], "wall<=0.59x",
                      partial(_setup_many, per_list)))
    return cases
