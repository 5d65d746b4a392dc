"""Load the generator script ``testdata/make_images.py`` as a module for the image tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parent.parent / "testdata" / "make_images.py"
_spec = importlib.util.spec_from_file_location("make_images", _PATH)
assert _spec is not None and _spec.loader is not None
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

PURGATORY_CORPUS = "purgatory/purgatory-debian-linux-image-6.1.0-50-amd64_6.1.176-1.ro"

_PPC = Path(__file__).resolve().parent.parent / "testdata" / "make_ppc_purgatory.py"
_pspec = importlib.util.spec_from_file_location("make_ppc_purgatory", _PPC)
assert _pspec is not None and _pspec.loader is not None
ppc_gen = importlib.util.module_from_spec(_pspec)
_pspec.loader.exec_module(ppc_gen)
