"""Cross-check with evmctl (ima-evm-utils): on every corpus list it reads, it must accept the PCR
values kimagekit replays, and reject them when one is changed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import need_tool

from kimagekit import ima_log

# The lists evmctl 1.4 reads: classic SHA-1 lists of one template kind. It rejects the per-bank
# lists (it reads 20-byte digests only), and lists mixing "ima" with other templates.
SUPPORTED = [
    "embrave-37d16c0-binary_runtime_measurements",
    "goima-0841667-ima_ng",
    "goima-0841667-bin_ima",
    "ibmtss-31443b7-ima-sha1.log",
]
REJECTED = [
    "ibmtss-0ab80cc-imatest.log",
    "kraemr-27a6312-binary_runtime_measurements_sha256",
    "embrave-b77d7a9-binary_runtime_measurements",
]


def _write_pcrs(path: Path, table: dict[int, bytes], size: int) -> None:
    # evmctl wants every PCR from 0 up, in order
    lines = [f"PCR-{i:02d}: {table.get(i, bytes(size)).hex()}" for i in range(max(table) + 1)]
    path.write_text("\n".join(lines) + "\n")


def _evmctl(tmp: Path, lst: Path,
            pcrs: dict[str, dict[int, bytes]]) -> subprocess.CompletedProcess[str]:
    args = []
    for bank, size in (("sha1", 20), ("sha256", 32)):
        f = tmp / f"{bank}.txt"
        _write_pcrs(f, pcrs[bank], size)
        args += ["--pcrs", f"{bank},{f}"]
    return subprocess.run([need_tool("evmctl"), "ima_measurement", *args, str(lst)],
                          capture_output=True, text=True, check=False, timeout=120)


@pytest.mark.parametrize("name", SUPPORTED)
def test_evmctl_agrees_with_our_replay(corpus: Path, tmp_path: Path, name: str) -> None:
    lst = corpus / "ima/binary" / name
    report = ima_log.analyse(lst.read_bytes(), banks=["sha1", "sha256"])
    assert report.mismatches == []
    p = _evmctl(tmp_path, lst, report.pcrs)
    assert p.returncode == 0, p.stderr[-500:]
    assert "Matched per TPM bank calculated digest(s)." in p.stdout + p.stderr
    wrong = {b: {k: bytes(len(v)) for k, v in t.items()} for b, t in report.pcrs.items()}
    p = _evmctl(tmp_path, lst, wrong)
    assert p.returncode == 1
    assert "Failed to match per TPM bank or SHA1 padded TPM digest(s)." in p.stdout + p.stderr


@pytest.mark.parametrize(("name", "why"), [
    (REJECTED[0], 'Mixed measurement list containing "ima" and other template formats not '
                  "supported."),
    (REJECTED[1], "ERROR: event name too long!"),  # 32-byte digests read as 20
    (REJECTED[2], "ERROR: event name too long!"),
])
def test_lists_evmctl_rejects(corpus: Path, tmp_path: Path, name: str, why: str) -> None:
    lst = corpus / "ima/binary" / name
    zero = {"sha1": {10: bytes(20)}, "sha256": {10: bytes(32)}}
    p = _evmctl(tmp_path, lst, zero)
    assert p.returncode == 1
    assert why in p.stderr
    # kimagekit reads the first two (mixed templates; a per-bank list), and rejects the third
    if name.startswith("embrave-b77d7a9"):
        with pytest.raises(ima_log.ParseError) as err:
            ima_log.analyse(lst.read_bytes())
        assert str(err.value) == (
            "ima-list: entry[0].template_name_len at offset 0x18: not a valid IMA list: "
            "template_name_len 3604958496 exceeds the 185258 bytes left")
    else:
        report = ima_log.analyse(lst.read_bytes())
        assert (report.mismatches, report.entries) == ([], {REJECTED[0]: 17,
                                                           REJECTED[1]: 3524}[name])
