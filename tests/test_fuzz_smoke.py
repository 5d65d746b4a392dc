"""Short runs of every fuzz target.

Full runs: ``python fuzz/fuzz.py --target T --runs 1000000``.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "kimagekit_fuzz", Path(__file__).resolve().parent.parent / "fuzz" / "fuzz.py")
assert _spec and _spec.loader
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


@pytest.mark.parametrize("target", sorted(fuzz.TARGETS))
def test_fuzz_target_short_run(tmp_path: Path, target: str) -> None:
    assert fuzz.run(target, 1500, seed=5, out=tmp_path) == 0
    assert not list(tmp_path.iterdir())


def test_a_finding_is_saved_and_fails_the_run(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(data: bytes) -> None:
        raise IndexError("boom")

    monkeypatch.setitem(fuzz.TARGETS, "ima", (fuzz.seeds_ima, explode))
    assert fuzz.run("ima", 10, seed=1, out=tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ima-1-0.bin"]


def test_mutations_change_inputs() -> None:
    rng = random.Random(0)
    seed = fuzz.seeds_ima()[0]
    assert sum(fuzz.mutate(rng, seed) != seed for _ in range(50)) >= 45
