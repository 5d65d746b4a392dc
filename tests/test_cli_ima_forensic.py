"""``ima show`` filters, ``ima replay --trace``: exact outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from ima_helpers import IMA_DIR, make_ima

from kimagekit.cli import main

SMALL = IMA_DIR / "small-le.bin"


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def shown(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    """``ima show`` stdout; it exits 0 and says nothing on stderr."""
    code, out, err = run(capsys, "ima", "show", *argv)
    assert (code, err) == (0, "")
    return out


def test_index_is_0_based_and_excludes_its_end(capsys: pytest.CaptureFixture[str]) -> None:
    out = shown(capsys, SMALL, "--json", "--index", "2:4")
    assert [e["index"] for e in json.loads(out)["entries"]] == [2, 3]
    ends = {"0:1": [0], ":1": [0], "8:": [8], "8:9": [8], "8:100": [8], "9:": [], "3:3": [],
            ":": list(range(9))}
    for spec, want in ends.items():
        out = shown(capsys, SMALL, "--json", "--index", spec)
        assert [e["index"] for e in json.loads(out)["entries"]] == want, spec


@pytest.mark.parametrize(("spec", "msg"), [
    ("4:2", "--index '4:2': the end 2 is before the start 4"),
    ("3", "--index '3': use A:B (0-based, B excluded), e.g. 0:10, 5:, :20"),
    ("-1:2", "--index '-1:2': use A:B (0-based, B excluded), e.g. 0:10, 5:, :20"),
])
def test_bad_index_is_a_usage_error(capsys: pytest.CaptureFixture[str], spec: str,
                                    msg: str) -> None:
    assert run(capsys, "ima", "show", SMALL, "--index", spec) == (
        2, "", f"kimagekit: error: {msg}\n")


def test_filters_combine_in_text(capsys: pytest.CaptureFixture[str]) -> None:
    out = shown(capsys, SMALL, "--path-prefix", "/",
                         "--template", "ima-sig", "--pcr", "10")
    assert out == (
        f"{SMALL}: binary list, little-endian, sha1 template digests\n"
        "#1 @0x65 pcr 10 ima-sig 53aee5edabac82daf2c195f800e41da202d55b9f [digest ok]\n"
        "    d-ng         sha256:bb54068aea85faa7e487530083366be9962390af822e4c71ef1aca7033c83e66\n"
        "    n-ng         /init\n"
        "    sig          030204aabbccdd00081111111111111111\n"
        "#2 @0xd7 pcr 10 ima-sig caed87647a9f7b585872a747209551b8fc353bfa [digest ok]\n"
        "    d-ng         sha256:89c4ec9f6b3f1086b158d8ef03dfe8155e6f79d9e66434b8f9b3432fe8720e50\n"
        "    n-ng         /bin/sh\n"
        "    sig          \n"
        "2 entries selected\n")
    # one more condition narrows further; the index range applies with the others
    out = shown(capsys, SMALL, "--path-prefix", "/bin",
                       "--template", "ima-sig", "--index", "0:2")
    assert out == (f"{SMALL}: binary list, little-endian, sha1 template digests\n"
                   "0 entries selected\n")


def test_filters_in_ascii_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    out = shown(capsys, SMALL, "--ascii", "--pcr", "11")
    assert out == ("11 772632213ebc37b90fa12e793a17cfdac3b56a3f evm-sig "
                   "sha256:603871c2ddd41c26ee77495e2e31e6de7f9957e0dea3b0f09abf8a5ee17a0d4a "
                   "/etc/passwd 050222222222222222222222 security.ima|security.evm 0004000a "
                   "3333333333333333333333333333 0 42 33188\n")
    out = shown(capsys, SMALL, "--ascii", "--path-prefix", "/usr",
                       "--template", "ima-ngv2")
    assert out == ("10 97220b8e1586ef35e78d966966bf690c4ee32ba4 ima-ngv2 "
                   "ima:sha256:9ac9c614c6a92d982795493615804846a60286314ea5ab79f312269a3810db02 "
                   "/usr/bin/env\n")
    out = shown(capsys, SMALL, "--json", "--violations")
    doc = json.loads(out)
    assert [(e["index"], e["path"], e["violation"]) for e in doc["entries"]] == [
        (6, "/var/log/violated", True)]
    out = shown(capsys, SMALL, "--json", "--path-prefix", "/sbin/")
    assert [(e["index"], e["template_name"], e["path"]) for e in json.loads(out)["entries"]] \
        == [(8, "ima", "/sbin/old")]
    # a prefix is a prefix: "/bin" does not pick "/sbin/old", and names are compared whole
    out = shown(capsys, SMALL, "--ascii", "--path-prefix", "/bin")
    assert [line.split(" ")[4] for line in out.splitlines()] == ["/bin/sh"]


def test_mismatch_names_the_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = bytearray(SMALL.read_bytes())
    at = data.index(b"/bin/sh")
    data[at + 1] ^= 0x20  # "/Bin/sh": the stored template digest no longer matches
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(data))
    out = shown(capsys, bad, "--index", "2:3")
    assert out.splitlines()[1] == ("#2 @0xd7 pcr 10 ima-sig "
                                   "caed87647a9f7b585872a747209551b8fc353bfa "
                                   "[DIGEST MISMATCH: /Bin/sh]")
    out = shown(capsys, bad, "--json", "--index", "2:3")
    (e,) = json.loads(out)["entries"]
    assert (e["digest_ok"], e["path"]) == (False, "/Bin/sh")


def _ext(bank: str, pcr: bytes, digest: bytes) -> bytes:
    return hashlib.new(bank, pcr + digest).digest()


def test_replay_trace_finds_where_the_quote_was_reached(capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    fields = [[make_ima.d_ng("sha256", bytes([i]) * 32), make_ima.n_ng(f"/f{i}")]
              for i in range(3)]
    raw = b"".join(make_ima.entry(10, "ima-ng", f, "<", "sha1") for f in fields)
    lst = tmp_path / "l.bin"
    lst.write_bytes(raw)
    # independently: sha1 extends the stored digests, sha256 the recomputed template hash
    s1, s256 = bytes(20), bytes(32)
    want1, want256 = [], []
    for f in fields:
        s1 = _ext("sha1", s1, make_ima.tdigest("ima-ng", f, "<", "sha1"))
        s256 = _ext("sha256", s256, make_ima.tdigest("ima-ng", f, "<", "sha256"))
        want1.append(s1.hex())
        want256.append(s256.hex())
    code, out, err = run(capsys, "ima", "replay", lst, "--bank", "sha1", "--bank", "sha256",
                         "--trace", "--expect", f"10:sha1={want1[1]}", "--prefix")
    assert (code, err) == (0, "")
    assert out == (
        f"entry 0 (ima-ng /f0): sha1 PCR-10 {want1[0]}\n"
        f"entry 0 (ima-ng /f0): sha256 PCR-10 {want256[0]}\n"
        f"entry 1 (ima-ng /f1): sha1 PCR-10 {want1[1]} = quote\n"
        f"entry 1 (ima-ng /f1): sha256 PCR-10 {want256[1]}\n"
        f"entry 2 (ima-ng /f2): sha1 PCR-10 {want1[2]}\n"
        f"entry 2 (ima-ng /f2): sha256 PCR-10 {want256[2]}\n"
        f"sha1 PCR-10: {want1[2]}\n"
        f"sha256 PCR-10: {want256[2]}\n"
        "sha1 PCR-10: matches the quote after entry 1; entries up to 2 extend it further: the "
        "list grew after the quote, accepted (--prefix) (stored template digests)\n"
        "OK: chain matches the quote, 1 expected PCR value reproduced\n")
    code, out, _ = run(capsys, "ima", "replay", lst, "--bank", "sha256", "--trace", "--json",
                       "--expect", f"10:sha256={want256[2]}")
    doc = json.loads(out)
    assert code == 0
    assert doc["trace"] == [
        {"index": i, "offset": i * len(raw) // 3, "pcr": 10, "template_name": "ima-ng",
         "path": f"/f{i}", "values": {"sha256": want256[i]},
         "quoted": ["sha256"] if i == 2 else []} for i in range(3)]
    # without --trace, no trace member
    _, out, _ = run(capsys, "ima", "replay", lst, "--json")
    assert "trace" not in json.loads(out)


@pytest.mark.parametrize(("command", "example", "options"), [
    ("show", "kimagekit ima show LIST --path-prefix /usr/bin/ --index 0:100",
     ["--path-prefix", "--template", "--pcr", "--index", "--violations"]),
    ("check", "kimagekit ima check LIST --policy runtime-policy.json", ["--policy"]),
    ("replay", "kimagekit ima replay LIST --expect 10:sha256=HEX --trace", ["--trace"]),
])
def test_help_has_an_example_and_every_new_option(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  command: str, example: str,
                                                  options: list[str]) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # the help's width, whatever runs the tests
    code, out, _ = run(capsys, "ima", command, "--help")
    assert code == 0
    assert f"Example: {example}" in out
    for opt in options:
        line = next(x for x in out.splitlines() if x.startswith(f"│ {opt} "))
        assert line.split(opt, 1)[1].strip(" │"), opt  # help text beside it
