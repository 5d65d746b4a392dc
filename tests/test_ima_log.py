"""IMA binary lists: detection, the fast scanner against the schema, digests and replay."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import pytest
from construct import GreedyRange
from ima_helpers import IMA_DIR, make_ima

from kimagekit import ima_binary, ima_log
from kimagekit.errors import ParseError
from kimagekit.formats import ima as schema

CORPUS_LISTS = [
    ("embrave-37d16c0-binary_runtime_measurements", 20, 922),
    ("goima-0841667-bin_ima", 20, 2020),
    ("goima-0841667-ima_ng", 20, 254),
    ("ibmtss-0ab80cc-imatest.log", 20, 17),
    ("ibmtss-31443b7-ima-sha1.log", 20, 362),
    ("ibmtss-31443b7-ima-sha256.log", 32, 362),
    ("ibmtss-31443b7-ima-sha384.log", 48, 362),
    ("ibmtss-31443b7-ima-sha512.log", 64, 362),
    ("kraemr-27a6312-binary_runtime_measurements_sha256", 32, 3524),
]


def _kvt_pcr10(corpus: Path) -> dict[str, bytes]:
    lines = (corpus / "ima/binary/ibmtss-imakvtpcr10.txt").read_text().splitlines()
    values = [bytes.fromhex(line.split(":", 1)[1]) for line in lines if line.strip()]
    return {ima_log.BANK_BY_SIZE[len(v)]: v for v in values}


@pytest.mark.parametrize("bank", ["sha1", "sha256", "sha384", "sha512"])
def test_ibmtss_per_bank_list_replays_to_all_four_tpm_values(corpus: Path, bank: str) -> None:
    data = (corpus / f"ima/binary/ibmtss-31443b7-ima-{bank}.log").read_bytes()
    report = ima_log.analyse(data, banks=ima_log.BANKS)
    assert report.format.digest_size == schema.DIGEST_SIZES[bank]
    assert report.mismatches == []
    expected = _kvt_pcr10(corpus)
    assert set(expected) == set(ima_log.BANKS)
    for b, value in expected.items():
        assert report.pcrs[b] == {10: value}


@pytest.mark.parametrize(("name", "digest_size", "count"), CORPUS_LISTS)
def test_every_corpus_list_verifies_and_fast_path_matches_schema(
        corpus: Path, name: str, digest_size: int, count: int) -> None:
    data = (corpus / "ima/binary" / name).read_bytes()
    fmt = ima_log.detect(data[:65536], len(data))
    assert fmt == ima_log.ListFormat("binary", "<", digest_size, 0, len(data))
    fast = list(ima_log.iter_entries(data, fmt))
    assert len(fast) == count
    slow = GreedyRange(schema.entry("<", digest_size)).parse(data)
    assert len(slow) == count
    for e, s in zip(fast, slow, strict=True):
        assert (e.pcr, e.template_digest, e.template_name.encode()) == (
            s.pcr, s.digest, s.template_name)
        if e.template_name == "ima":
            assert e.template_data == s.template_data.d + schema.ints("<")[1].build(
                s.template_data.n_len) + s.template_data.n
        else:
            assert e.template_data == s.template_data
    # build(parse(b)) == b, with the schema and with the fast encoder
    assert GreedyRange(schema.entry("<", digest_size)).build(slow) == data
    assert ima_log.encode_list(fast, "<", digest_size) == data
    assert ima_log.analyse(data).mismatches == []


def test_imatest_every_entry_decoded_field_by_field(corpus: Path) -> None:
    entries = ima_log.read_entries(corpus / "ima/binary/ibmtss-0ab80cc-imatest.log")
    got = [(e.template_name, [f.id for f in e.fields]) for e in entries]
    assert got == [
        ("d-ng|sig", ["d-ng", "sig"]),
        ("n-ng|d-ng", ["n-ng", "d-ng"]),
        ("n-ng|sig|d-ng", ["n-ng", "sig", "d-ng"]),
        ("n-ng|sig", ["n-ng", "sig"]),
        ("n", ["n"]),
        ("sig", ["sig"]),
        ("ima", ["d", "n"]),
        ("ima-ng", ["d-ng", "n-ng"]),
        ("ima-sig", ["d-ng", "n-ng", "sig"]),
        ("ima-modsig", ["d-ng", "n-ng", "sig", "d-modsig", "modsig"]),
        ("ima-sig", ["d-ng", "n-ng", "sig"]),
        ("ima-sig", ["d-ng", "n-ng", "sig"]),
        ("ima-sigv2", ["d-ngv2", "n-ng", "sig"]),
        ("ima-buf", ["d-ng", "n-ng", "buf"]),
        ("evm-sig", ["d-ng", "n-ng", "evmsig", "xattrnames", "xattrlengths", "xattrvalues",
                     "iuid", "igid", "imode"]),
        ("ima-ngv2", ["d-ngv2", "n-ng"]),
        ("ima-modsig", ["d-ng", "n-ng", "sig", "d-modsig", "modsig"]),
    ]
    assert [e.index for e in entries if e.is_violation] == [6]
    report = ima_log.analyse((corpus / "ima/binary/ibmtss-0ab80cc-imatest.log").read_bytes(),
                             banks=["sha1"])
    assert report.violations == 1
    assert report.mismatches == []
    # the violation extends sha1 PCR 10 with 0xff bytes (MANIFEST's independent value)
    assert report.pcrs["sha1"][10].hex() == "0ff68e1da514770e85581bffe693809776302a63"
    ima = entries[6]
    assert ima.fields[1].shown == "boot_aggregate"
    assert ima.digest_for("sha1") == b"\xff" * 20


def test_goima_custom_template_is_walked_generically(corpus: Path) -> None:
    entries = ima_log.read_entries(corpus / "ima/binary/goima-0841667-bin_ima")
    assert {e.template_name for e in entries} == {"ima-cgpath"}
    first = entries[0].fields
    # its fields have no known ids: split by their length prefixes only (cgroup path, name,
    # d-ng digest, file name)
    assert [f.id for f in first] == ["?"] * 4
    assert [f.data for f in first] == [
        b"swapper/0:swapper/0\0", b"/\0",
        b"sha256:\0" + bytes.fromhex("7b6436b0c98f62380866d9432c2af0ee08ce16a171bda6951aecd95e"
                                     "e1307d61"),
        b"boot_aggregate\0"]
    assert [len(f.data) for f in first] == [20, 2, 40, 15]
    assert sum(4 + len(f.data) for f in first) == len(entries[0].template_data) == 93


def test_embrave_b77d7a9_rejected_naming_first_bad_entry(corpus: Path) -> None:
    data = (corpus / "ima/binary/embrave-b77d7a9-binary_runtime_measurements").read_bytes()
    assert ima_log.detect(data[:65536], len(data)) is None
    with pytest.raises(ParseError) as err:
        list(ima_log.iter_entries(data))
    assert str(err.value) == (
        "ima-list: entry[0].template_name_len at offset 0x18: not a valid IMA list: "
        "template_name_len 3604958496 exceeds the 185258 bytes left")


@pytest.mark.parametrize("name", ["small-le.bin", "small-be.bin", "small-le-sha256.bin",
                                  "small-be-sha512.bin"])
def test_synthetic_lists_both_byte_orders_replay_to_independent_values(name: str) -> None:
    data = (IMA_DIR / name).read_bytes()
    endian = ">" if "-be" in name else "<"
    fmt = ima_log.detect(data, len(data))
    assert fmt is not None
    assert (fmt.kind, fmt.endian) == ("binary", endian)
    report = ima_log.analyse(data, banks=ima_log.BANKS)
    assert report.entries == 9
    assert report.violations == 1
    assert report.mismatches == []
    tag = "be" if endian == ">" else "le"
    expected = json.loads((IMA_DIR / f"small-{tag}.pcrs.json").read_text())
    got = {b: {str(p): v.hex() for p, v in t.items()} for b, t in report.pcrs.items()}
    assert got == expected
    # the entry-object path agrees with the single-pass path
    assert ima_log.replay(ima_log.iter_entries(data)) == report.pcrs


def test_big_endian_uint_fields_decode_in_list_order() -> None:
    entries = ima_log.read_entries(IMA_DIR / "small-be.bin")
    evm = next(e for e in entries if e.template_name == "evm-sig")
    shown = {f.id: f.shown for f in evm.fields}
    assert (shown["iuid"], shown["igid"], shown["imode"]) == ("0", "42", "33188")
    assert shown["xattrnames"] == "security.ima|security.evm"


def test_tampered_entry_reported_by_index_and_offset() -> None:
    data = bytearray((IMA_DIR / "small-le.bin").read_bytes())
    entries = ima_log.read_entries(IMA_DIR / "small-le.bin")
    target = entries[2]
    data[target.offset + 4 + 20 + 4 + 7 + 4 + 6] ^= 1  # inside the d-ng digest of entry 2
    report = ima_log.analyse(bytes(data))
    assert [(m.index, m.offset) for m in report.mismatches] == [(2, target.offset)]
    assert report.mismatches[0].stored == target.template_digest


def test_reencoding_between_byte_orders_keeps_digests() -> None:
    le = ima_log.read_entries(IMA_DIR / "small-le.bin")
    be = (IMA_DIR / "small-be.bin").read_bytes()
    assert ima_log.encode_list(le, ">", 20) == be
    sha512 = (IMA_DIR / "small-be-sha512.bin").read_bytes()
    assert ima_log.encode_list(le, ">", 64) == sha512


def test_unknown_bank_is_a_usage_error() -> None:
    from kimagekit.errors import UsageError

    with pytest.raises(UsageError) as err:
        ima_log.analyse(b"", ima_log.ListFormat("binary"), banks=["md5"])
    assert str(err.value) == "unknown bank 'md5' (known: sha1, sha256, sha384, sha512, sm3_256)"


def test_mapped_list_larger_than_release_step_streams(tmp_path: Path) -> None:
    one = make_ima.entry(10, "ima-ng", [make_ima.d_ng("sha256", bytes(range(32))),
                                        make_ima.n_ng("/usr/lib/a-rather-long-library-name.so")])
    n = (ima_binary.RELEASE_STEP * 2) // len(one) + 7
    path = tmp_path / "big.bin"
    path.write_bytes(one * n)
    with ima_log.open_list(path) as (fmt, view):
        report = ima_log.analyse(view, fmt, banks=["sha1"])
        tail = deque(ima_log.iter_entries(view, fmt), maxlen=1)
    assert (report.entries, report.mismatches) == (n, [])
    assert (tail[0].index, tail[0].offset) == (n - 1, (n - 1) * len(one))
    assert report.pcrs["sha1"] == ima_log.replay([ima_log.ImaEntry(
        10, one[4:24], "ima-ng", one[38:], "<")] * n, ["sha1"])["sha1"]
