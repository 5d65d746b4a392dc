"""Expected PCR values from files and ``--expect``: every accepted form, every refusal exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ima_helpers import IMA_DIR

from kimagekit import pcrs
from kimagekit.cli import main
from kimagekit.errors import UsageError

SHA1_ZERO = "00" * 20


def test_readme_main_job(capsys: pytest.CaptureFixture[str]) -> None:
    # the README's first command, on the bundled data
    assert main(["ima", "replay", str(IMA_DIR / "small-le.bin"),
                 "--pcrs", str(IMA_DIR / "small-le.pcrs.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    expected = json.loads((IMA_DIR / "small-le.pcrs.json").read_text())
    assert out[:8] == [f"{b} PCR-{int(p):02d}: {v}" for b, t in expected.items()
                       for p, v in t.items()]
    # PCR 10 is last extended by entry 8, PCR 11 by entry 5; sha1 is the list's own bank
    assert out[8:] == [
        f"{b} PCR-{p}: matches the quote after entry {8 if p == 10 else 5} "
        f"({'stored' if b == 'sha1' else 'recomputed'} template digests)"
        for b in ("sha1", "sha256", "sha384", "sha512") for p in (10, 11)
    ] + ["OK: chain matches the quote, 8 expected PCR values reproduced"]


def test_file_forms(tmp_path: Path) -> None:
    evm = tmp_path / "evm.txt"
    evm.write_text(f"PCR-00: {SHA1_ZERO}\nPCR-10: {'ab' * 32}\n\n")
    assert pcrs.parse_pcr_file(evm) == {"sha1": {0: bytes(20)}, "sha256": {10: b"\xab" * 32}}
    tpm = tmp_path / "tpm.txt"
    tpm.write_text(" PCR 10: " + " ".join(["cd"] * 20) + " \n")
    assert pcrs.parse_pcr_file(tpm) == {"sha1": {10: b"\xcd" * 20}}
    doc = tmp_path / "p.json"
    doc.write_text(json.dumps({"sha384": {"11": "ef" * 48}}))
    assert pcrs.parse_pcr_file(doc) == {"sha384": {11: b"\xef" * 48}}


@pytest.mark.parametrize(("text", "message"), [
    ("PCR-10 deadbeef\n", "--pcrs {f}:1: expected 'PCR-NN: hex', got 'PCR-10 deadbeef'"),
    ("PCR-10: abc\n", "--pcrs {f}:1: 'abc' is not hex"),
    ("PCR-10: " + "00" * 21 + "\n", "--pcrs {f}:1: a 21-byte value matches no bank"),
    ("{", "--pcrs {f}: bad JSON: Expecting property name enclosed in double quotes: line 1 "
          "column 2 (char 1)"),
    ('{"md5": {"10": "00"}}', "--pcrs {f}: unknown bank 'md5'"),
    ('{"sha1": {"10": "00"}}', "--pcrs {f}: sha1 values have 20 bytes, got 1"),
])
def test_bad_files_say_why(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad"
    f.write_text(text)
    with pytest.raises(UsageError) as err:
        pcrs.parse_pcr_file(f)
    assert str(err.value) == message.format(f=f)


def test_bank_prefix(tmp_path: Path) -> None:
    f = tmp_path / "one.txt"
    f.write_text(f"PCR-10: {SHA1_ZERO}\n")
    assert pcrs.parse_pcr_file(Path(f"sha1,{f}")) == {"sha1": {10: bytes(20)}}
    with pytest.raises(UsageError) as err:
        pcrs.parse_pcr_file(Path(f"sha256,{f}"))
    assert str(err.value) == f"--pcrs {f}:1: sha256 values have 32 bytes, got 20"
    with pytest.raises(UsageError) as err:
        pcrs.parse_pcr_file(Path(f"md5,{f}"))
    assert str(err.value) == "--pcrs: unknown bank 'md5'"
    with pytest.raises(UsageError) as err:
        pcrs.parse_pcr_file(tmp_path / "missing")
    missing = tmp_path / "missing"
    assert (str(err.value), err.value.file) == ("--pcrs: cannot open: No such file or directory",
                                                str(missing))
    binary = tmp_path / "binary"
    binary.write_bytes(b"PCR-10: \xff\n")
    with pytest.raises(UsageError) as err:
        pcrs.parse_pcr_file(binary)
    assert str(err.value) == f"--pcrs {binary}: not UTF-8 text (byte 8)"
