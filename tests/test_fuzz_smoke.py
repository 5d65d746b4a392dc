"""Short runs of every fuzz target.

Full runs: ``python fuzz/fuzz.py --target T --runs 1000000``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
import time
from pathlib import Path

import pytest

from kimagekit.errors import OutputError, RuleError

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


# --- the command campaign (fuzz/campaign.py): ~50 inputs per entry point ----------------------

_cspec = importlib.util.spec_from_file_location(
    "kimagekit_campaign", Path(__file__).resolve().parent.parent / "fuzz" / "campaign.py")
assert _cspec and _cspec.loader
campaign = importlib.util.module_from_spec(_cspec)
sys.modules[_cspec.name] = campaign  # its dataclasses cross the worker's pipe by name
_cspec.loader.exec_module(campaign)
entries = campaign.entries
FINDINGS = ("exception", "oversize", "hang", "died")


@pytest.mark.parametrize("entry", sorted(entries.ENTRIES))
def test_campaign_entry_short_run(tmp_path: Path, entry: str) -> None:
    st = campaign.campaign(entry, 50, seed=7, out=tmp_path, quiet=True)
    assert st.next == 50 and sum(st.counts.values()) == 50
    # no exception but KimageError, no output over its bound, no hang, no dead worker
    assert not [k for k in st.counts if k in FINDINGS], st.findings
    assert st.counts.get("ok", 0) > 0  # the mutations leave some inputs that build


def test_campaign_inputs_are_rebuilt_from_entry_seed_and_index(tmp_path: Path) -> None:
    a = entries.make_case("build-ppc64", 3, 11, tmp_path / "a")
    b = entries.make_case("build-ppc64", 3, 11, tmp_path / "b")
    c = entries.make_case("build-ppc64", 3, 12, tmp_path / "c")
    files = [{k: p.read_bytes() for k, p in x.files.items() if p} for x in (a, b, c)]
    assert a.mutated == b.mutated and a.opts == b.opts and files[0] == files[1]
    assert (c.mutated, files[2]) != (a.mutated, files[0])


def test_campaign_resumes_where_it_stopped(tmp_path: Path) -> None:
    whole = campaign.campaign("ima-convert", 60, seed=2, out=tmp_path / "a", chunk=20,
                              quiet=True)
    campaign.campaign("ima-convert", 40, seed=2, out=tmp_path / "b", chunk=20, quiet=True)
    resumed = campaign.campaign("ima-convert", 60, seed=2, out=tmp_path / "b", resume=True,
                                quiet=True)
    assert (resumed.next, resumed.counts, resumed.findings) == (60, whole.counts,
                                                                 whole.findings)
    assert json.loads((tmp_path / "b/ima-convert-seed2.json").read_text())["next"] == 60


def _fake(monkeypatch: pytest.MonkeyPatch, run: object) -> None:
    monkeypatch.setitem(entries.ENTRIES, "fake", entries.Entry(
        {"list": "ima"}, (), lambda rng, files: {}, entries._no_options, run))


def _write_100(p: dict[str, Path | None], o: object, out: Path) -> tuple[Path, int, str]:
    out.write_bytes(bytes(100))
    return out, 99, "99 on purpose"


def _hang(p: object, o: object, out: Path) -> tuple[Path, int, str]:
    time.sleep(30)
    raise AssertionError("not reached")


def _blow_up(p: object, o: object, out: Path) -> tuple[Path, int, str]:
    bytearray(3 << 30)  # over the worker's RLIMIT_AS
    raise AssertionError("not reached")


def _die(p: object, o: object, out: Path) -> tuple[Path, int, str]:
    os._exit(3)


def _refuse_late(p: object, o: object, out: Path) -> tuple[Path, int, str]:
    out.write_bytes(b"x")
    raise OutputError("written, then refused")


@pytest.mark.parametrize(("run", "kind", "key"), [
    (_write_100, "oversize", "oversize in fake, mutated "),
    (_hang, "hang", "hang over 1.0s in fake"),
    (_blow_up, "exception", "MemoryError at test_fuzz_smoke.py:"),
    (_die, "died", "worker died in fake (exit 3)"),
    (_refuse_late, "stale", "output left by OutputError at test_fuzz_smoke.py:"),
])
def test_campaign_catches_each_kind_of_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               run: object, kind: str, key: str) -> None:
    _fake(monkeypatch, run)
    st = campaign.campaign("fake", 2, seed=1, out=tmp_path, timeout=1.0, rss_mib=1024,
                           quiet=True)
    assert st.next == 2 and st.counts == {kind: 2}
    assert all(k.startswith(key) for k in st.findings)
    assert sum(f["count"] for f in st.findings.values()) == 2
    found = next(k for k, f in st.findings.items() if f["index"] == 0)
    saved = tmp_path / "fake/seed1-0"  # the first input of each finding, rebuilt
    assert sorted(p.name for p in saved.iterdir()) == ["finding.txt", "list"]
    assert (saved / "finding.txt").read_text().startswith(found + "\n")


def test_campaign_counts_refusals_by_class(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(p: object, o: object, out: Path) -> tuple[Path, int, str]:
        raise RuleError("no")

    _fake(monkeypatch, refuse)
    st = campaign.campaign("fake", 3, seed=1, out=tmp_path, quiet=True)
    assert (st.counts, st.findings) == ({"refused:RuleError": 3}, {})
