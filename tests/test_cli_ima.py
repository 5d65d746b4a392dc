"""The ``kimagekit ima`` and ``inspect`` commands: exact outputs, JSON keys, exit codes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from ima_helpers import IMA_DIR, make_ima

from kimagekit import ima_ascii, ima_kexec, ima_log
from kimagekit.cli import main

SMALL = IMA_DIR / "small-le.bin"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_replay_against_ibmtss_tpm_values(capsys: pytest.CaptureFixture[str],
                                          corpus: Path) -> None:
    for bank in ("sha1", "sha256", "sha384", "sha512"):
        code, out, _ = run(capsys, "ima", "replay",
                           corpus / f"ima/binary/ibmtss-31443b7-ima-{bank}.log",
                           "--pcrs", corpus / "ima/binary/ibmtss-imakvtpcr10.txt")
        assert code == 0
        own = {"sha1": 0, "sha256": 1, "sha384": 2, "sha512": 3}[bank]
        assert out.splitlines()[-5:] == [
            f"{b} PCR-10: matches the quote after entry 361 "
            f"({'stored' if i == own else 'recomputed'} template digests)"
            for i, b in enumerate(("sha1", "sha256", "sha384", "sha512"))
        ] + ["OK: chain matches the quote, 4 expected PCR values reproduced"]


def test_replay_evmctl_pcr_file_and_expect(capsys: pytest.CaptureFixture[str],
                                           corpus: Path) -> None:
    lst = corpus / "ima/binary/ibmtss-31443b7-ima-sha1.log"
    code, out, _ = run(capsys, "ima", "replay", lst, "--bank", "sha256",
                       "--pcrs", f"sha256,{corpus / 'evmctl/ibmtss-pcrs-sha256.txt'}")
    assert code == 0
    # PCR-00..09 are the file's zero fillers: the list never extends them, so they are not
    # counted as reproduced
    untouched = ", ".join(f"sha256 PCR-{i:02d}" for i in range(10))
    assert out == ("sha256 PCR-10: 7fac48c81837d6d29046008aef0cdad8c2745cc98c3340cbba9bfdf39b4124b8"
                   "\nsha256 PCR-10: matches the quote after entry 361 (recomputed template "
                   f"digests)\nnot compared, the list never extends them: {untouched}"
                   "\nOK: chain matches the quote, 1 expected PCR value reproduced\n")
    wrong = "10:sha1=" + "00" * 20
    code, out, _ = run(capsys, "ima", "replay", lst, "--bank", "sha1", "--expect", wrong)
    assert code == 1
    assert out.splitlines()[-2:] == [
        "MISMATCH sha1 PCR-10: expected " + "00" * 20
        + ", replayed 9be6bac02bf18d09d17e726c2df00bca4e8831ea",
        "FAILED: chain does not match the quote: 1 of 1 expected PCR value not reproduced"]


def test_replay_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ima", "replay", SMALL, "--bank", "sha1", "--json")
    assert code == 0
    doc = json.loads(out)
    expected = json.loads((IMA_DIR / "small-le.pcrs.json").read_text())
    assert doc == {"file": str(SMALL), "method": "per-bank", "pcrs": {"sha1": expected["sha1"]},
                   "pcrs_sha1_padded": {}, "verdicts": [], "mismatches": [], "altered": [],
                   "chain_matches": None, "ok": True}


@pytest.mark.parametrize(("arg", "message"), [
    ("10:sha256=abc", "kimagekit: error: --expect: 'abc' is not hex\n"),
    ("10:sha256=zz", "kimagekit: error: --expect '10:sha256=zz': use PCR:BANK=HEX, e.g. "
                     "10:sha256=0a1b...\n"),
    ("10-sha256=00", "kimagekit: error: --expect '10-sha256=00': use PCR:BANK=HEX, e.g. "
                     "10:sha256=0a1b...\n"),
    ("10:md5=00", "kimagekit: error: --expect '10:md5=00': unknown bank 'md5'\n"),
    ("10:sha1=00", "kimagekit: error: --expect: sha1 values have 20 bytes, got 1\n"),
])
def test_bad_expectations_are_usage_errors(capsys: pytest.CaptureFixture[str], arg: str,
                                           message: str) -> None:
    code, _, err = run(capsys, "ima", "replay", SMALL, "--expect", arg)
    assert (code, err) == (2, message)


def test_check_ok_and_tampered(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "ima", "check", SMALL)
    assert (code, out) == (0, "OK: 9 entries, 1 violations, 0 template digest mismatches (sha1)\n")
    bad = tmp_path / "bad.bin"
    data = bytearray(SMALL.read_bytes())
    data[-1] ^= 0x20  # last entry's name
    bad.write_bytes(bytes(data))
    code, out, _ = run(capsys, "ima", "check", bad)
    assert code == 1
    first, last = out.splitlines()
    # the line names the entry's file, as altered ("/sbin/old" with its last bit flipped)
    assert first == ("entry 8 (/sbin/olD) at offset 0x39c (ima): template digest mismatch: "
                     "stored 38680a16550a5746a2d4c151cdb9c98b997e0129, computed "
                     "5b81a35ddc382944a871bf88bdd54459d08fec31")
    assert last == "FAILED: 9 entries, 1 violations, 1 template digest mismatches (sha1)"
    code, out, _ = run(capsys, "ima", "check", bad, "--json")
    assert code == 1
    assert json.loads(out) == {
        "file": str(bad),
        "format": {"kind": "binary", "endian": "little", "bank": "sha1", "digest_size": 20},
        "entries": 9, "violations": 1,
        "mismatches": [{"index": 8, "offset": 0x39c, "template_name": "ima",
                        "stored": "38680a16550a5746a2d4c151cdb9c98b997e0129",
                        "computed": "5b81a35ddc382944a871bf88bdd54459d08fec31",
                        "path": "/sbin/olD"}],
        "restore_error": None, "ok": False}


def test_check_kexec_buffer_applies_restore_rules(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    code, out, _ = run(capsys, "ima", "check", IMA_DIR / "small-le.kexec")
    assert (code, out) == (0, "OK: 8 entries, 1 violations, 0 template digest mismatches "
                              "(sha1)\n")
    data = bytearray((IMA_DIR / "small-le.kexec").read_bytes())
    data[16] = 3  # count 3: the third entry must end the buffer
    bad = tmp_path / "count.kexec"
    bad.write_bytes(bytes(data))
    code, out, _ = run(capsys, "ima", "check", bad)
    # entries 0..2 of the list start at 0, 101 and 215; after the 24-byte header: 0xef, and the
    # third ends at 24 + 314 = 0x152 (make_ima's layout)
    assert (code, out) == (1, "the next kernel would refuse this buffer: ima-kexec-buffer: "
                              "entry[2] at offset 0xef: last entry (count 3) ends at 0x152, "
                              "buffer_size is 0x3b4 (it keeps the 2 entries before it)\n"
                              "FAILED: 8 entries, 1 violations, 0 template digest mismatches "
                              "(sha1)\n")


def test_show_ascii_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ima", "show", "--ascii", SMALL)
    assert code == 0
    lines = out.splitlines()
    assert [" ".join(line.split(" ")[:3]) for line in lines] == _ascii_heads("<")
    assert lines[2].endswith(" /bin/sh ")  # the empty signature keeps its space
    code, out, _ = run(capsys, "ima", "show", "--json", SMALL)
    doc = json.loads(out)
    assert doc["format"] == {"kind": "binary", "endian": "little", "bank": "sha1",
                             "digest_size": 20}
    assert len(doc["entries"]) == 9
    e5 = doc["entries"][5]
    assert [f["id"] for f in e5["fields"]][-3:] == ["iuid", "igid", "imode"]
    assert [f["shown"] for f in e5["fields"]][-3:] == ["0", "42", "33188"]
    assert e5["fields"][0]["algo"] == "sha256"
    assert doc["entries"][6]["violation"] is True
    assert doc["entries"][6]["digest_ok"] is None
    assert all(e["digest_ok"] for i, e in enumerate(doc["entries"]) if i != 6)


def _ascii_heads(endian: str) -> list[str]:
    """"PCR template-hash template-name" of every line of small-*.bin, from make_ima's entries
    and its own digest (zeros for the violation)."""
    items = [*make_ima.sample(endian),
             (10, "ima", [hashlib.sha1(b"old").digest(), b"/sbin/old"], False)]
    return [f"{pcr} {(bytes(20) if v else make_ima.tdigest(n, f, endian, 'sha1')).hex()} {n}"
            for pcr, n, f, v in items]


def test_convert_round_trips(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = IMA_DIR / "small-be.bin"
    asc = tmp_path / "l.ascii"
    assert run(capsys, "ima", "convert", src, "--to", "ascii", "-o", asc) == (
        0, "", f"kimagekit: wrote {asc}: 9 entries, 1336 bytes (ascii)\n")
    text = asc.read_bytes()
    assert len(text) == 1336
    assert [" ".join(line.split(" ")[:3]) for line in text.decode().splitlines()] == \
        _ascii_heads(">")
    # nothing lost: read back in the list's byte order, the ASCII gives the binary list again
    assert ima_log.encode_list(ima_ascii.parse_ascii(text, endian=">"), ">", 20) == \
        src.read_bytes()
    canon = tmp_path / "l.canon"
    assert run(capsys, "ima", "convert", src, "--to", "canonical", "-o", canon) == (
        0, "", f"kimagekit: wrote {canon}: 9 entries, 988 bytes (canonical)\n")
    assert canon.read_bytes() == (IMA_DIR / "small-le.bin").read_bytes()
    kx = tmp_path / "l.kexec"
    # its last entry has the ima template: a kexec buffer the next kernel refuses, unless forced
    assert run(capsys, "ima", "convert", IMA_DIR / "small-le-sha256.bin",
               "--to", "kexec-buffer", "-o", kx) == (
        1, "", f"kimagekit: error: {kx}: ima-kexec-buffer: entry[8] at offset 0x3b4: not "
               "written: the next kernel would refuse it: entry header: nr of fields mismatch: "
               "expected 4, found 3 (--force writes it anyway)\n")
    assert not kx.exists()
    code, _, err = run(capsys, "ima", "convert", IMA_DIR / "small-le-sha256.bin",
                       "--to", "kexec-buffer", "-o", kx, "--force")
    assert code == 0
    assert err == f"kimagekit: wrote {kx}: 9 entries, 1012 bytes (kexec-buffer)\n"
    back = tmp_path / "back.bin"
    assert run(capsys, "ima", "convert", kx, "--to", "binary", "-o", back) == (
        0, "", f"kimagekit: wrote {back}: 9 entries, 988 bytes (binary)\n")
    assert back.read_bytes() == (IMA_DIR / "small-le.bin").read_bytes()
    code, _, err = run(capsys, "ima", "convert", src, "--to", "json", "-o", back)
    assert (code, err) == (2, "kimagekit: error: Invalid value for '--to': 'json' is not one "
                              "of 'ascii', 'binary', 'canonical', 'kexec-buffer'. (see "
                              "'kimagekit ima convert --help')\n")


def test_append(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "more.kexec"
    old = (IMA_DIR / "small-le.kexec").read_bytes()
    new = (IMA_DIR / "small-2016.kexec").read_bytes()
    assert run(capsys, "ima", "append", IMA_DIR / "small-le.kexec",
               IMA_DIR / "small-2016.kexec", "-o", out) == (
        0, "", f"kimagekit: wrote {out}: 16 entries, 1872 bytes\n")
    # ima_kexec_hdr with the new size and count, the old entries, the new ones: byte for byte
    body = old[24:] + new
    assert out.read_bytes() == make_ima.kexec_buffer(body, 16, "<")
    code, text, _ = run(capsys, "ima", "check", out)
    assert (code, text) == (0, "OK: 16 entries, 2 violations, 0 template digest mismatches "
                               "(sha1)\n")
    # an ima-template entry appended to a kexec buffer: the next kernel would refuse it, so it
    # is not written (exit 1) unless --force
    refused = tmp_path / "refused.kexec"
    assert run(capsys, "ima", "append", IMA_DIR / "small-le.kexec", SMALL, "-o", refused) == (
        1, "", f"kimagekit: error: {refused}: ima-kexec-buffer: entry[16] at offset 0x750: not "
               "written: the next kernel would refuse it: entry header: nr of fields mismatch: "
               "expected 4, found 3 (--force writes it anyway)\n")
    assert not refused.exists()
    assert run(capsys, "ima", "append", IMA_DIR / "small-le.kexec", SMALL, "-o", out,
               "--force") == (0, "", f"kimagekit: wrote {out}: 17 entries, 1936 bytes\n")
    assert out.read_bytes() == make_ima.kexec_buffer(old[24:] + SMALL.read_bytes(), 17, "<")
    # an entry whose data no longer matches its template digest: the restored list would not
    # attest, so that is refused too
    entries = ima_log.read_entries(IMA_DIR / "small-le.kexec")
    data = bytearray(entries[1].template_data)
    data[-2] ^= 1  # inside its signature field
    altered = tmp_path / "altered.bin"
    altered.write_bytes(ima_log.encode_list(
        [dataclasses.replace(entries[1], template_data=bytes(data))], "<", 20))
    assert run(capsys, "ima", "append", IMA_DIR / "small-le.kexec", altered, "-o", refused) == (
        1, "", f"kimagekit: error: {refused}: ima-kexec-buffer: entry[8] at offset 0x3b4: not "
               "written: entry 8 (/init): "
               "the template digest does not match its data (1 such entries; --force writes it "
               "anyway)\n")
    assert not refused.exists()
    code, text, _ = run(capsys, "ima", "check", out)
    assert code == 1
    assert text.splitlines()[0] == ("the next kernel would refuse this buffer: ima-kexec-buffer: "
                                    "entry[16] at offset 0x750: entry header: nr of fields "
                                    "mismatch: expected 4, found 3 (it keeps the 16 entries "
                                    "before it)")


def test_inspect_labels_an_ascii_list_with_its_bank(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    ascii_list = tmp_path / "sha256.txt"
    ascii_list.write_text("".join(ima_ascii.render(
        ima_log.read_entries(IMA_DIR / "small-le-sha256.bin"))))
    code, out, _ = run(capsys, "inspect", ascii_list, "--json")
    assert code == 0
    s = json.loads(out)["summary"]
    assert (s["kind"], s["bank"], s["digest_size"], s["entries"], s["digest_mismatches"]) == (
        "ascii", "sha256", 32, 9, 0)
    # its own bank replays the stored digests: as make_ima computes the sha256 bank
    expected = json.loads((IMA_DIR / "small-le.pcrs.json").read_text())
    assert s["pcrs"]["sha256"] == expected["sha256"]
    code, out, _ = run(capsys, "inspect", ascii_list)
    assert out.splitlines()[1] == "  encoding: little-endian, sha256 template digests (32 bytes)"


def test_inspect_detects_by_content(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    renamed = tmp_path / "whatever.dtb"
    renamed.write_bytes((IMA_DIR / "small-be.kexec").read_bytes())
    code, out, _ = run(capsys, "inspect", renamed, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["format"] == "ima-kexec-buffer"
    s = doc["summary"]
    assert (s["kind"], s["endian"], s["entries"], s["violations"]) == ("kexec-buffer", "big", 8, 1)
    assert s["kexec_header"] == {"version": 1, "buffer_size": 948, "count": 8}
    assert s["restore_error"] is None
    # every bank replayed, as make_ima replays the buffer's entries (the list's minus "ima")
    assert s["pcrs"] == make_ima.replay(make_ima.sample(">"), ">")
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fnot anything kimagekit knows" * 10)
    code, _, err = run(capsys, "inspect", junk)
    assert (code, err) == (2, f"kimagekit: error: {junk}: inspect: unrecognised format (known: "
                              "bzImage, arm64 zboot, arm64 Image, vmlinux, kexec image, "
                              "kho-tree, device-tree, ima-kexec-buffer, ima-binary-list, "
                              "ima-ascii-list)\n")
    code, _, err = run(capsys, "inspect", tmp_path / "missing")
    assert code == 2
    assert err == f"kimagekit: error: {tmp_path / 'missing'}: file: " \
                  "cannot open: No such file or directory\n"


def test_python_m_entry_point() -> None:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "kimagekit", "ima", "check", str(SMALL)],
                       capture_output=True, text=True, check=False)
    assert (p.returncode, p.stdout) == (
        0, "OK: 9 entries, 1 violations, 0 template digest mismatches (sha1)\n")


def test_inspect_exits_1_on_a_damaged_list(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    """An altered entry, or a kexec buffer the next kernel refuses, is damage: exit 1, with the
    description still printed (text and JSON)."""
    entries = ima_log.read_entries(SMALL)
    first = entries[0]
    data = bytearray(first.template_data)
    data[-2] ^= 1  # inside the file name, so the stored template digest no longer matches
    altered = tmp_path / "altered.bin"
    altered.write_bytes(SMALL.read_bytes().replace(first.template_data, bytes(data), 1))
    code, out, err = run(capsys, "inspect", str(altered))
    assert (code, err) == (1, "")
    assert out.splitlines()[5] == "  template digests: 1 MISMATCH (first at offset 0x0)"
    code, out, _ = run(capsys, "inspect", "--json", str(altered))
    assert (code, json.loads(out)["summary"]["damage"]) == (1, [
        "1 template digest(s) do not match their entry; the first is entry 0 (boot_aggregatd) "
        "at offset 0x0"])
    refused = tmp_path / "refused.kexec"
    # the last entry has the ima template, written without a data length, as the kernel does
    refused.write_bytes(ima_kexec.build_buffer(entries))
    code, out, _ = run(capsys, "inspect", "--json", str(refused))
    assert (code, json.loads(out)["summary"]["damage"]) == (1, [
        "the next kernel would refuse this buffer: ima-kexec-buffer: entry[8] at offset 0x3b4: "
        "entry header: nr of fields mismatch: expected 4, found 3 (it keeps the 8 entries before "
        "it)"])
    assert run(capsys, "inspect", str(IMA_DIR / "small-le.kexec"))[0] == 0


def test_convert_refuses_a_form_that_cannot_carry_an_entry(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A template the ASCII reader does not know cannot go to ASCII and come back: refused
    before anything is written, naming the entry in the input (campaign finding)."""
    data = SMALL.read_bytes()
    at = data.rfind(b"ima-ng")
    src = tmp_path / "l.bin"
    src.write_bytes(data[:at] + b"ima-nx" + data[at + 6:])  # same length: still a valid list
    entry = next(e for e in ima_log.read_entries(src) if e.template_name == "ima-nx")
    out = tmp_path / "o.txt"
    assert run(capsys, "ima", "convert", str(src), "--to", "ascii", "-o", str(out)) == (
        2, "", f"kimagekit: error: {src}: ima-list: entry[{entry.index}] at offset "
               f"{entry.offset:#x}: the ascii form cannot carry this entry, it would not read "
               "back: unknown template 'ima-nx': its fields cannot be read from text; nothing "
               "written\n")
    assert not out.exists()
