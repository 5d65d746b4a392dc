"""A short run of the IMA fuzzer (the full one is ``python fuzz/fuzz_ima.py --runs 1000000``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "fuzz_ima", Path(__file__).resolve().parent.parent / "fuzz" / "fuzz_ima.py")
assert _spec and _spec.loader
fuzz_ima = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_ima)


def test_fuzz_ima_short_run(tmp_path: Path) -> None:
    assert fuzz_ima.run(3000, seed=5, out=tmp_path) == 0
    assert not list(tmp_path.iterdir())


def test_fuzz_mutations_change_inputs() -> None:
    import random

    rng = random.Random(0)
    seed = fuzz_ima.seeds()[0]
    assert sum(fuzz_ima.mutate(rng, seed) != seed for _ in range(50)) >= 45
