"""Property tests: random lists round-trip through every form kimagekit writes."""

from __future__ import annotations

import hashlib

from construct import GreedyRange
from hypothesis import given, settings
from hypothesis import strategies as st
from ima_helpers import make_ima

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


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_kimage_errors(blob: bytes) -> None:
    for data in (blob, (b"\x0a\0\0\0" + bytes(20) + b"\x06\0\0\0ima-ng") + blob,
                 b"\x01\0\0\0\0\0\0\0" + blob):
        try:
            fmt = ima_log.detect(data, len(data))
            if fmt is not None and fmt.kind != "ascii":
                ima_log.analyse(data, fmt, banks=["sha1"])
                for e in ima_log.iter_entries(data, fmt):
                    _ = e.fields
                if fmt.kind == "kexec-buffer":
                    ima_kexec.restore(data, fmt.endian)
        except KimageError:
            pass
