"""``ima check`` / ``ima replay`` over several lists: one report per file in order, ``--jobs``
on worker processes with the same output, ``--jsonl``, and the per-file functions on Dask."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
from conftest import need_module
from ima_helpers import IMA_DIR

from kimagekit import ima_batch, ima_files
from kimagekit.cli import main

LE, BE, KEXEC = IMA_DIR / "small-le.bin", IMA_DIR / "small-be.bin", IMA_DIR / "small-le.kexec"


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def altered(tmp_path: Path) -> Path:
    """small-le.bin with one byte of the first entry's file name changed."""
    raw = bytearray(LE.read_bytes())
    at = raw.index(b"boot_aggregate")
    raw[at] ^= 0x20
    bad = tmp_path / "altered.bin"
    bad.write_bytes(bytes(raw))
    return bad


def test_check_several_prefixes_each_files_lines(capsys: pytest.CaptureFixture[str],
                                                 altered: Path) -> None:
    singles = []
    for f in (LE, altered, KEXEC):
        code, out, _ = run(capsys, "ima", "check", f)
        singles.append((code, out.splitlines()))
    assert [c for c, _ in singles] == [0, 1, 0]
    code, out, err = run(capsys, "ima", "check", LE, altered, KEXEC)
    assert (code, err) == (1, "")
    assert out.splitlines() == [f"{f}: {line}" for f, (_, lines) in
                                zip((LE, altered, KEXEC), singles, strict=True) for line in lines]


def test_jobs_2_gives_the_same_output_as_1(capsys: pytest.CaptureFixture[str],
                                           altered: Path) -> None:
    files = [LE, altered, BE, KEXEC] * 3
    one = run(capsys, "ima", "check", *files)
    two = run(capsys, "ima", "check", "--jobs", "2", *files)
    assert one == two
    assert one[0] == 1
    one = run(capsys, "ima", "replay", "--jsonl", *files)
    two = run(capsys, "ima", "replay", "-j", "2", "--jsonl", *files)
    assert one == two


def test_jsonl_is_each_files_json_on_one_line(capsys: pytest.CaptureFixture[str],
                                              altered: Path) -> None:
    for cmd in ("check", "replay"):
        singles = [json.loads(run(capsys, "ima", cmd, "--json", f)[1]) for f in (BE, altered)]
        code, out, _ = run(capsys, "ima", cmd, "--jsonl", BE, altered)
        assert code == 1
        assert [json.loads(line) for line in out.splitlines()] == singles
        assert len(out.splitlines()) == 2
        code, out, _ = run(capsys, "ima", cmd, "--json", BE, altered)
        assert (code, json.loads(out)) == (1, singles)


def test_an_unreadable_file_is_reported_and_the_others_still_run(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\0" * 3)
    code, out, err = run(capsys, "ima", "check", junk, LE)
    assert code == 2
    assert err == (f"kimagekit: error: {junk}: ima-list: entry[0] at offset 0x0: not an IMA "
                   "measurement list: no byte order and digest size (20/32/48/64) gives a "
                   "valid first entry, and it is not ASCII\n")
    assert out == f"{LE}: OK: 9 entries, 1 violations, 0 template digest mismatches (sha1)\n"
    code, out, _ = run(capsys, "ima", "check", "--jsonl", junk, LE)
    first = json.loads(out.splitlines()[0])
    assert (code, first) == (2, {
        "file": str(junk), "exit_code": 2,
        "error": "ima-list: entry[0] at offset 0x0: not an IMA measurement list: no byte order "
                 "and digest size (20/32/48/64) gives a valid first entry, and it is not ASCII"})
    assert json.loads(out.splitlines()[1])["ok"] is True


def test_one_file_is_reported_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "ima", "check", LE)
    assert (code, out, err) == (0, "OK: 9 entries, 1 violations, 0 template digest mismatches "
                                   "(sha1)\n", "")
    code, out, _ = run(capsys, "ima", "check", "--jsonl", LE)
    assert code == 0 and len(out.splitlines()) == 1
    assert json.loads(out) == json.loads(run(capsys, "ima", "check", "--json", LE)[1])


@pytest.mark.parametrize(("argv", "message"), [
    (["--json", "--jsonl"], "--json and --jsonl exclude each other"),
    (["--jobs", "0"], "--jobs 0: give at least 1"),
])
def test_usage(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run(capsys, "ima", "check", *argv, LE, BE)
    assert (code, out, err) == (2, "", f"kimagekit: error: {message}\n")


def test_run_all_keeps_order_on_a_pool(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"x")
    files = [LE, junk, BE, KEXEC, LE]
    serial = list(ima_batch.run_all(ima_files.check_file, files, 1))
    pooled = list(ima_batch.run_all(ima_files.check_file, files, 2))
    assert [o.file for o in pooled] == [str(f) for f in files]
    assert [o.value for o in pooled] == [o.value for o in serial]
    assert [str(o.error) if o.error else None for o in pooled] == \
        [str(o.error) if o.error else None for o in serial]
    assert pooled[1].error is not None and pooled[1].error.file == str(junk)
    assert [o.value.ok for o in pooled if o.value] == [True, True, True, True]


def test_the_dask_bag_recipe_on_the_local_scheduler(tmp_path: Path, altered: Path) -> None:
    bag = need_module("dask.bag")
    junk = tmp_path / "junk"
    junk.write_bytes(b"x")
    files = [str(f) for f in (LE, altered, BE, junk, KEXEC)]
    # the README's recipe
    outcomes = (bag.from_sequence(files, npartitions=3)
                .map(partial(ima_batch.attempt, ima_files.check_file))
                .compute(scheduler="processes", num_workers=2))
    serial = [ima_batch.attempt(ima_files.check_file, f) for f in files]
    assert [o.value for o in outcomes] == [o.value for o in serial]
    assert [(o.file, o.value.ok if o.value else None) for o in outcomes] == [
        (files[0], True), (files[1], False), (files[2], True), (files[3], None), (files[4], True)]
    assert str(outcomes[3].error) == str(serial[3].error)
    assert outcomes[3].error is not None and outcomes[3].error.file == files[3]


def test_replay_without_the_padded_tables_unless_a_verdict_needs_them() -> None:
    from kimagekit import ima_replay

    banks = ["sha1", "sha256"]
    full = ima_files.replay_file(LE, banks, expected={}, legacy=True)
    own = {b: full.pcrs[b][10] for b in banks}
    padded = full.padded["sha256"][10]
    assert padded != own["sha256"]
    cases = {
        "per-bank": ({"sha1": {10: own["sha1"]}, "sha256": {10: own["sha256"]}}, False),
        "padded": ({"sha256": {10: padded}}, True),
        "neither": ({"sha256": {10: bytes(32)}}, True),
        "sha1 only, wrong": ({"sha1": {10: bytes(20)}}, False),
        "none": ({}, False),
    }
    for name, (expected, second_pass) in cases.items():
        lazy = ima_files.replay_file(LE, banks, expected=expected, legacy=None)
        both = ima_files.replay_file(LE, banks, expected=expected, legacy=True)
        assert lazy.replayed is not None and both.replayed is not None
        assert ima_replay.judge(expected, lazy.replayed) == \
            ima_replay.judge(expected, both.replayed), name
        assert lazy.pcrs == both.pcrs and lazy.mismatches == both.mismatches, name
        assert (lazy.padded == both.padded) if second_pass else (lazy.padded == {}), name
    verdict = ima_replay.judge(cases["padded"][0], ima_files.replay_file(
        LE, banks, expected=cases["padded"][0], legacy=None).replayed)  # type: ignore[arg-type]
    assert [(v.status, v.method) for v in verdict] == [("match", "sha1-padded")]
