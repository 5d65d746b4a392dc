"""Property tests: random lists round-trip through every form kimagekit writes."""

from __future__ import annotations

import hashlib

from construct import GreedyRange
from hypothesis import given, settings
from hypothesis import strategies as st
from ima_helpers import IMA_DIR, make_ima

from kimagekit import ima_ascii, ima_kexec, ima_log
from kimagekit.errors import KimageError
from kimagekit.formats import ima as schema

_name = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80)
_digest = st.binary(min_size=32, max_size=32)


@st.composite
def entries(draw: st.DrawFn) -> tuple[int, str, list[bytes], bool]:
    kind = draw(st.sampled_from(["ima-ng", "ima-sig", "ima-buf", "ima-ngv2", "n-ng|d-ng"]))
    algo = draw(st.sampled_from(["sha1", "sha256", "sha512"]))
    size = {"sha1": 20, "sha256": 32, "sha512": 64}[algo]
    digest = draw(st.binary(min_size=size, max_size=size))
    d = make_ima.d_ng(algo, digest)
    n = make_ima.n_ng(draw(_name))
    extra = draw(st.binary(max_size=40))
    fields = {
        "ima-ng": [d, n],
        "ima-sig": [d, n, extra],
        "ima-buf": [d, n, extra or b"\x01"],
        "ima-ngv2": [b"ima:" + d, n],
        "n-ng|d-ng": [n, d],
    }[kind]
    return draw(st.integers(0, 23)), kind, fields, draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(st.lists(entries(), min_size=1, max_size=12), st.sampled_from(["<", ">"]),
       st.sampled_from(["sha1", "sha256", "sha384", "sha512"]))
def test_random_lists_round_trip(items: list[tuple[int, str, list[bytes], bool]], endian: str,
                                 bank: str) -> None:
    data = b"".join(make_ima.entry(p, n, f, endian, bank, v) for p, n, f, v in items)
    fmt = ima_log.detect(data, len(data))
    assert fmt is not None
    size = len(hashlib.new(bank).digest())
    assert (fmt.kind, fmt.endian, fmt.digest_size) == ("binary", endian, size)
    parsed = list(ima_log.iter_entries(data, fmt))
    assert len(parsed) == len(items)
    # the fast path agrees with the declarative schema it is derived from
    slow = GreedyRange(schema.entry(fmt.endian, fmt.digest_size)).parse(data)
    assert [(e.pcr, e.template_digest, e.template_name.encode(), e.template_data)
            for e in parsed] == [(s.pcr, s.digest, s.template_name, s.template_data)
                                 for s in slow]
    assert ima_log.encode_list(parsed, endian, fmt.digest_size) == data
    report = ima_log.analyse(data, fmt, banks=ima_log.BANKS)
    assert report.mismatches == []
    assert report.violations == sum(1 for *_, v in items if v)
    # the replay against make_ima's own (hashlib, struct) replay of the same items
    expected = make_ima.replay(items, endian)
    assert {b: {str(p): v.hex() for p, v in t.items()} for b, t in report.pcrs.items()} == expected
    # list -> kexec buffer -> list keeps the entries and the replay
    buf = ima_kexec.build_buffer(parsed, endian=endian)
    back = ima_kexec.restore(buf, endian).entries
    assert [(e.pcr, e.template_name, e.template_data) for e in back] == [
        (e.pcr, e.template_name, e.template_data) for e in parsed]
    assert ima_log.replay(back) == report.pcrs
    # binary -> ASCII -> binary
    text = "".join(ima_ascii.render(parsed)).encode("latin-1")
    again = list(ima_ascii.parse_ascii(text, endian=endian))
    assert ima_log.encode_list(again, endian, fmt.digest_size) == data


IMA_FMTS = ("ima-list", "ima-kexec-buffer")


def _only_kimage_errors(data: bytes, fmt: ima_log.ListFormat | None) -> str:
    """Read ``data`` every way (detected, or as ``fmt``): "ok", or the one-line KimageError, which
    must name its format and an offset inside ``data``; any other exception fails the test."""
    try:
        if fmt is None:
            fmt = ima_log.detect_or_raise(data)
        if fmt.kind == "ascii":
            return "ascii"
        ima_log.analyse(data, fmt, banks=["sha1"])
        for e in ima_log.iter_entries(data, fmt):
            _ = e.fields
        if fmt.kind == "kexec-buffer":
            ima_kexec.restore(data, fmt.endian)
    except KimageError as err:
        text = str(err)
        assert err.fmt in IMA_FMTS, text
        assert err.offset is not None and 0 <= err.offset <= len(data), text
        assert "\n" not in text and text.startswith(f"{err.fmt}: "), text
        return "error"
    return "ok"


_FORMATS = [ima_log.ListFormat("binary", e, ds) for e in ("<", ">") for ds in (20, 32, 48, 64)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_kimage_errors(blob: bytes) -> None:
    # Random bytes hardly ever pass detection: every binary reading is also forced on them.
    for data in (blob, (b"\x0a\0\0\0" + bytes(20) + b"\x06\0\0\0ima-ng") + blob,
                 b"\x01\0\0\0\0\0\0\0" + blob):
        assert _only_kimage_errors(data, None) in ("ok", "ascii", "error")
        for fmt in _FORMATS:
            assert _only_kimage_errors(data, fmt) in ("ok", "error")


_BASES = {name: (IMA_DIR / name).read_bytes() for name in (
    "small-le.bin", "small-be.bin", "small-le-sha256.bin", "small-be-sha512.bin",
    "small-le.kexec", "small-be.kexec")}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(_BASES)),
       st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=4),
       st.one_of(st.none(), st.integers(0, 2000)))
def test_damaged_real_lists_only_raise_kimage_errors(name: str, edits: list[tuple[int, int]],
                                                     cut: int | None) -> None:
    # A valid list with a few bytes changed and maybe cut short: detection still succeeds for
    # most, so the entry walk, the field split, the digests and the restore rules all run.
    data = bytearray(_BASES[name])
    for at, value in edits:
        data[at % len(data)] = value
    blob = bytes(data if cut is None else data[:cut])
    outcome = _only_kimage_errors(blob, None)
    if not edits and cut is None:
        assert outcome == "ok"
