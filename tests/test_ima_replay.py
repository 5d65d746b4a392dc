"""``ima replay`` verdicts: stored digests replayed, altered entries named, prefixes, the legacy
SHA-1-padded banks and sm3_256; expected values computed here with hashlib, not kimagekit."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from conftest import need_tool
from ima_helpers import IMA_DIR, make_ima

from kimagekit import ima_binary, ima_log
from kimagekit.cli import main

SMALL = IMA_DIR / "small-le.bin"
EXTRA = (10, "ima", [hashlib.sha1(b"old").digest(), b"/sbin/old"], False)
SAMPLE = [*make_ima.sample("<"), EXTRA]  # the entries of small-le.bin


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _replay(entries: list[tuple[int, str, list[bytes], bool]], bank: str, *,
            padded: bool = False) -> dict[int, bytes]:
    """Independent replay: the bank's template hash, or (``padded``) the SHA-1 one zero-padded;
    violations 0xff (20 bytes then zeros when padded)."""
    size = hashlib.new(bank).digest_size
    table: dict[int, bytes] = {}
    for pcr, name, fields, violation in entries:
        if padded:
            d = (b"\xff" * 20 if violation else make_ima.tdigest(name, fields, "<", "sha1"))
            d = d.ljust(size, b"\0")
        else:
            d = b"\xff" * size if violation else make_ima.tdigest(name, fields, "<", bank)
        table[pcr] = hashlib.new(bank, table.get(pcr, bytes(size)) + d).digest()
    return table


def _edit_path(src: bytes, index: int) -> tuple[bytes, str]:
    """``src`` with the last letter of entry ``index``'s file name changed (its stored digest
    kept), and the new name."""
    e = list(ima_log.iter_entries(src))[index]
    name = next(f for f in e.fields if f.id in ("n", "n-ng"))
    at = e.data_offset + e.template_data.index(name.data) + len(name.shown) - 1
    data = bytearray(src)
    data[at] ^= 0x01
    return bytes(data), name.shown[:-1] + chr(src[at] ^ 0x01)


def test_edited_entry_chain_still_matches_and_entry_is_named(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    want = _replay(SAMPLE, "sha1")[10].hex()
    data, path = _edit_path(SMALL.read_bytes(), 2)
    assert path == "/bin/si"
    edited = tmp_path / "edited.bin"
    edited.write_bytes(data)
    stored = data[0xd7 + 4:0xd7 + 24].hex()
    fields = make_ima.sample("<")[2][2]
    computed = make_ima.tdigest("ima-sig", [fields[0], b"/bin/si\0", fields[2]], "<", "sha1")
    code, out, _ = run(capsys, "ima", "replay", edited, "--bank", "sha1",
                       "--expect", f"10:sha1={want}")
    assert code == 1
    assert out.splitlines()[2:] == [
        "sha1 PCR-10: matches the quote after entry 8 (stored template digests)",
        f"entry 2 (/bin/si) altered: template digest stored {stored}, computed {computed.hex()}",
        "FAILED: chain matches the quote (1 expected PCR value reproduced), but 1 entry altered",
    ]
    # --recomputed replays what the edited data hashes to: the chain no longer matches
    code, out, _ = run(capsys, "ima", "replay", edited, "--bank", "sha1", "--recomputed",
                       "--expect", f"10:sha1={want}", "--json")
    doc = json.loads(out)
    assert code == 1
    assert (doc["method"], doc["chain_matches"], doc["ok"]) == ("recomputed", False, False)
    assert doc["altered"] == [{"index": 2, "offset": 0xd7, "template_name": "ima-sig",
                               "stored": stored, "computed": computed.hex(),
                               "path": "/bin/si"}]
    assert doc["verdicts"] == [{"bank": "sha1", "pcr": 10, "expected": want,
                                "replayed": doc["pcrs"]["sha1"]["10"], "status": "mismatch",
                                "method": None, "reached_at": None, "last_entry": 8}]
    assert doc["pcrs"]["sha1"]["10"] != want


def test_evmctl_agrees_on_an_edited_list(capsys: pytest.CaptureFixture[str], corpus: Path,
                                         tmp_path: Path) -> None:
    evmctl = need_tool("evmctl")
    data, path = _edit_path((corpus / "ima/binary/ibmtss-31443b7-ima-sha1.log").read_bytes(), 5)
    assert path == "/usr/lib64/liblzma.so.5.4.7"
    edited = tmp_path / "edited.log"
    edited.write_bytes(data)
    pcrs = tmp_path / "sha1.txt"  # the vTPM's quoted PCR 10 (ibmtss-imakvtpcr10.txt)
    pcrs.write_text("".join(f"PCR-{i:02d}: {'00' * 20}\n" for i in range(10))
                    + "PCR-10: 9be6bac02bf18d09d17e726c2df00bca4e8831ea\n")
    p = subprocess.run([evmctl, "ima_measurement", "--pcrs", f"sha1,{pcrs}", str(edited)],
                       capture_output=True, text=True, check=False, timeout=120)
    assert p.returncode == 1
    said = p.stdout + p.stderr
    assert "Matched SHA1 padded TPM digest(s)." in said
    assert "Failed to verify template data digest." in said
    code, out, _ = run(capsys, "ima", "replay", edited, "--pcrs", f"sha1,{pcrs}")
    assert code == 1
    assert out.splitlines()[-4:] == [
        "sha1 PCR-10: matches the quote after entry 361 (stored template digests)",
        "not compared, the list never extends them: "
        + ", ".join(f"sha1 PCR-{i:02d}" for i in range(10)),
        "entry 5 (/usr/lib64/liblzma.so.5.4.7) altered: template digest stored "
        "5841f1297273a6a465bc91d9327fcce66adddf14, computed "
        "88714882286edf86fb135b973e7f7f89631ace83",
        "FAILED: chain matches the quote (1 expected PCR value reproduced), but 1 entry altered",
    ]


def test_list_grown_after_the_quote(capsys: pytest.CaptureFixture[str]) -> None:
    quoted = _replay(SAMPLE[:7], "sha256")  # the quote came after entry 6
    expect = [f"--expect=10:sha256={quoted[10].hex()}", f"--expect=11:sha256={quoted[11].hex()}"]
    code, out, _ = run(capsys, "ima", "replay", SMALL, "--bank", "sha256", *expect)
    assert code == 1
    assert out.splitlines()[2:] == [
        "sha256 PCR-10: matches the quote after entry 6; entries up to 8 extend it further: the "
        "list grew after the quote, accept with --prefix (recomputed template digests)",
        "sha256 PCR-11: matches the quote after entry 5 (recomputed template digests)",
        "FAILED: chain does not match the quote: 1 of 2 expected PCR values not reproduced",
    ]
    code, out, _ = run(capsys, "ima", "replay", SMALL, "--bank", "sha256", "--prefix", *expect)
    assert code == 0
    assert out.splitlines()[2:] == [
        "sha256 PCR-10: matches the quote after entry 6; entries up to 8 extend it further: the "
        "list grew after the quote, accepted (--prefix) (recomputed template digests)",
        "sha256 PCR-11: matches the quote after entry 5 (recomputed template digests)",
        "OK: chain matches the quote, 2 expected PCR values reproduced",
    ]


def test_sha1_padded_banks_of_pre_58_kernels(capsys: pytest.CaptureFixture[str]) -> None:
    legacy = {b: _replay(SAMPLE, b, padded=True)[10] for b in ("sha256", "sha512")}
    assert legacy["sha256"] != _replay(SAMPLE, "sha256")[10]
    code, out, _ = run(capsys, "ima", "replay", SMALL, "--bank", "sha1",
                       *(f"--expect=10:{b}={v.hex()}" for b, v in legacy.items()))
    assert code == 0
    assert out.splitlines()[-3:] == [
        "sha256 PCR-10: matches the quote after entry 8 (SHA-1 template digests zero-padded, as "
        "before Linux 5.8)",
        "sha512 PCR-10: matches the quote after entry 8 (SHA-1 template digests zero-padded, as "
        "before Linux 5.8)",
        "OK: chain matches the quote, 2 expected PCR values reproduced",
    ]
    code, out, _ = run(capsys, "ima", "replay", SMALL, "--bank", "sha256", "--json")
    assert json.loads(out)["pcrs_sha1_padded"] == {"sha256": {"10": legacy["sha256"].hex(),
                                                   "11": _replay(SAMPLE, "sha256",
                                                                 padded=True)[11].hex()}}


def test_sm3_bank(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    if "sm3" not in hashlib.algorithms_available:
        pytest.skip("this Python's OpenSSL has no SM3")
    want = _replay(SAMPLE, "sm3")[10].hex()
    code, out, _ = run(capsys, "ima", "replay", SMALL, "--expect", f"10:sm3_256={want}")
    assert code == 0
    assert out.splitlines()[-2:] == [
        "sm3_256 PCR-10: matches the quote after entry 8 (recomputed template digests)",
        "OK: chain matches the quote, 1 expected PCR value reproduced"]
    ima_binary.hash_factory.cache_clear()
    monkeypatch.setattr(hashlib, "algorithms_available", hashlib.algorithms_available - {"sm3"})
    try:
        code, _, err = run(capsys, "ima", "replay", SMALL, "--bank", "sm3_256")
    finally:
        ima_binary.hash_factory.cache_clear()
    assert (code, err) == (2, "kimagekit: error: bank sm3_256: this Python's hashlib has no sm3 "
                              "(OpenSSL built without SM3)\n")


def test_no_expected_pcr_extended_is_not_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ima", "replay", SMALL, "--bank", "sha1",
                       "--expect", "12:sha1=" + "00" * 20)
    assert code == 1
    assert out.splitlines()[-2:] == [
        "not compared, the list never extends them: sha1 PCR-12",
        "FAILED: the list extends none of the 1 PCRs expected"]


def test_per_bank_list_replays_its_own_stored_digests(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    # a _sha256 list stores sha256 digests: that bank replays them; sha1 is not in the list, so
    # it gets the SHA-1 hash of the (edited) data, which is not what the TPM saw
    data, path = _edit_path((IMA_DIR / "small-le-sha256.bin").read_bytes(), 2)
    edited = tmp_path / "edited-sha256.bin"
    edited.write_bytes(data)
    want = {b: _replay(SAMPLE, b)[10] for b in ("sha1", "sha256")}
    edited_sample = [*SAMPLE]
    fields = edited_sample[2][2]
    edited_sample[2] = (10, "ima-sig", [fields[0], b"/bin/si\0", fields[2]], False)
    replayed_sha1 = _replay(edited_sample, "sha1")[10]
    code, out, _ = run(capsys, "ima", "replay", edited, "--bank", "sha1", "--bank", "sha256",
                       *(f"--expect=10:{b}={v.hex()}" for b, v in want.items()))
    assert code == 1
    lines = out.splitlines()
    assert lines[4:6] == [
        f"MISMATCH sha1 PCR-10: expected {want['sha1'].hex()}, replayed {replayed_sha1.hex()}",
        "sha256 PCR-10: matches the quote after entry 8 (stored template digests)"]
    assert lines[6].startswith(f"entry 2 ({path}) altered: template digest stored ")
    assert lines[7:] == [
        "FAILED: chain does not match the quote: 1 of 2 expected PCR values not reproduced; "
        "1 entry altered"]


def test_an_unknown_replay_method_is_a_usage_error() -> None:
    from kimagekit import ima_replay
    from kimagekit.errors import UsageError

    with pytest.raises(UsageError) as err:
        ima_log.analyse(ima_log.read_entries(IMA_DIR / "small-le.bin"), banks=["sha1"],
                        method="stored")  # type: ignore[arg-type]
    assert str(err.value) == ("replay method 'stored' is not one of "
                              f"{', '.join(ima_replay.METHODS)}")
