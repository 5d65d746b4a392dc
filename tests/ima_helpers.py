"""Shared test helpers for the IMA tests: the independent entry packer of testdata/make_ima.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "make_ima", Path(__file__).resolve().parent.parent / "testdata" / "make_ima.py")
assert _spec and _spec.loader
make_ima = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_ima)

IMA_DIR = Path(__file__).resolve().parent.parent / "testdata" / "ima"
