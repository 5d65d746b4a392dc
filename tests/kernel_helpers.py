"""Load the generator script ``testdata/make_kernels.py`` as a module for the kernel tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parent.parent / "testdata" / "make_kernels.py"
_spec = importlib.util.spec_from_file_location("make_kernels", _PATH)
assert _spec is not None and _spec.loader is not None
kgen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kgen)
