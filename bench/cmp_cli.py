"""CLI start-up comparisons for run_all.py: ``kimagekit inspect`` of a 9-entry list and
``kimagekit --help`` against ``python3 -c pass``, without bytecode for kimagekit (this
environment's PYTHONDONTWRITEBYTECODE=1 over an editable checkout: every kimagekit module compiled
from source at each start) and with it (as an installed wheel, byte-compiled at install).

The first cases delete the checkout's kimagekit/**/__pycache__ so that nothing is read from an
earlier run; the "bytecode" cases let the warm-up run write it.
"""

from __future__ import annotations

import shutil
import sys

from bench.runner import KIMAGEKIT, ROOT, Case

SMALL = str(ROOT / "testdata/ima/small-le.bin")
PASS = [sys.executable, "-c", "pass"]


def _no_bytecode() -> None:
    for cache in (ROOT / "kimagekit").rglob("__pycache__"):
        shutil.rmtree(cache)


def cases() -> list[Case]:
    none = {"PYTHONDONTWRITEBYTECODE": "1"}
    compiled = {"PYTHONDONTWRITEBYTECODE": ""}  # empty: unset for Python
    return [
        Case("inspect 9-entry list, no bytecode", [*KIMAGEKIT, "inspect", SMALL], PASS,
             "cpu<=2.5x", _no_bytecode, env=none),
        Case("--help, no bytecode", [*KIMAGEKIT, "--help"], PASS, "cpu<=4x", _no_bytecode,
             env=none),
        Case("inspect 9-entry list, bytecode", [*KIMAGEKIT, "inspect", SMALL], PASS,
             "cpu<=2.5x", env=compiled),
        Case("--help, bytecode", [*KIMAGEKIT, "--help"], PASS, "cpu<=4x", env=compiled),
    ]
