"""Load the generator script ``testdata/make_images.py`` as a module for the image tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parent.parent / "testdata" / "make_images.py"
_spec = importlib.util.spec_from_file_location("make_images", _PATH)
assert _spec is not None and _spec.loader is not None
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)
sys.modules.setdefault("make_images", gen)  # make_ppc_purgatory builds on its ELF writer

PURGATORY_CORPUS = "purgatory/purgatory-debian-linux-image-6.1.0-50-amd64_6.1.176-1.ro"

_PPC = Path(__file__).resolve().parent.parent / "testdata" / "make_ppc_purgatory.py"
_pspec = importlib.util.spec_from_file_location("make_ppc_purgatory", _PPC)
assert _pspec is not None and _pspec.loader is not None
ppc_gen = importlib.util.module_from_spec(_pspec)
_pspec.loader.exec_module(ppc_gen)

# What verify says after its verdict about a ppc64 image built with --no-purgatory (ls and build
# say the first line after the segment table).
PPC_INSPECTION = ("note: no purgatory (built with --no-purgatory): for inspection only; the "
                  "ppc64 kernel always loads a purgatory and enters it, never the kernel")
PPC_NO_CHECK = ("note: the ppc64 purgatory does not check the digest at reboot: the digest is "
                "kimagekit's check, not the machine's")
PPC_NOTES = f"{PPC_INSPECTION}\n{PPC_NO_CHECK}\n"

_RV = Path(__file__).resolve().parent.parent / "testdata" / "make_riscv_purgatory.py"
_rspec = importlib.util.spec_from_file_location("make_riscv_purgatory", _RV)
assert _rspec is not None and _rspec.loader is not None
riscv_gen = importlib.util.module_from_spec(_rspec)
_rspec.loader.exec_module(riscv_gen)
