"""The README's "For evmctl and keylime users" table, row by row: the kimagekit command as
written there, and evmctl's beside it on the same input where evmctl has the command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import need_tool

from kimagekit import ima_log
from kimagekit.cli import main

LIST = "ima/binary/ibmtss-31443b7-ima-sha1.log"


def _pcr_file(path: Path, table: dict[int, bytes], size: int) -> Path:
    # evmctl reads every PCR from 0 up
    path.write_text("".join(f"PCR-{i:02d}: {table.get(i, bytes(size)).hex()}\n"
                            for i in range(max(table) + 1)))
    return path


@pytest.mark.parametrize("right", [True, False])
def test_evmctl_ima_measurement_row(corpus: Path, tmp_path: Path, right: bool) -> None:
    lst = corpus / LIST
    pcrs = ima_log.analyse(lst.read_bytes(), banks=["sha1", "sha256"]).pcrs
    if not right:
        pcrs = {b: {k: bytes(len(v)) for k, v in t.items()} for b, t in pcrs.items()}
    f = _pcr_file(tmp_path / "sha1.txt", pcrs["sha1"], 20)
    g = _pcr_file(tmp_path / "sha256.txt", pcrs["sha256"], 32)
    theirs = subprocess.run([need_tool("evmctl"), "ima_measurement", "--pcrs", f"sha1,{f}",
                             "--pcrs", f"sha256,{g}", str(lst)],
                            capture_output=True, text=True, check=False, timeout=120)
    ours = main(["ima", "replay", str(lst), "--pcrs", f"sha1,{f}", "--pcrs", f"sha256,{g}"])
    assert theirs.returncode == ours == (0 if right else 1)


def test_boot_aggregate_row(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need_tool("evmctl")  # the row's left side exists (it reads a TPM, which tests have not)
    assert main(["ima", "show", str(corpus / LIST), "--path-prefix", "boot_aggregate"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("#0 @0x0 pcr 10 ima-sig ")
    assert out[3] == "    n-ng         boot_aggregate"
    assert out[-1] == "1 entry selected"


def test_keylime_rows(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lst = corpus / LIST
    entries = ima_log.read_entries(lst)
    digests: dict[str, list[str]] = {}
    for e in entries:
        fd = e.file_digest
        assert e.path is not None and fd is not None
        digests.setdefault(e.path, []).append(fd.hex)
    policy = {"meta": {"version": 1, "generator": 1}, "release": 0, "digests": digests,
              "excludes": [], "keyrings": {},
              "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": None},
              "ima-buf": {}, "verification-keys": ""}
    pol = tmp_path / "policy.json"
    pol.write_text(json.dumps(policy))
    assert main(["ima", "check", str(lst), "--policy", str(pol)]) == 0
    assert capsys.readouterr().out.splitlines()[-2] == (
        f"policy: {len(entries)} entries: {len(entries)} allowed; 0 fail")
    # the quote row: a PCR-10 value taken after entry 100 is found there
    quoted = ima_log.analyse(entries[:101], banks=["sha1"], method="per-bank").pcrs["sha1"][10]
    assert main(["ima", "replay", str(lst), "--expect", f"10:sha1={quoted.hex()}",
                 "--trace"]) == 1  # the list grew after the quote: --prefix accepts it
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.endswith("= quote")] == [
        f"entry 100 ({entries[100].template_name} {entries[100].path}): sha1 PCR-10 "
        f"{quoted.hex()} = quote"]
