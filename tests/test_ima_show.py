"""``ima show --ascii`` / ``--json`` rendered from the scanner's records (kimagekit.ima_show)
against the entry-by-entry path (ImaEntry, render_line, json.dumps of the CLI's dict): equal
text on random lists, and on broken ones the same text up to the same error."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ima_helpers import IMA_DIR, make_ima

from kimagekit import ima_ascii, ima_fields, ima_log, ima_show
from kimagekit.cli.ima import _entry_json
from kimagekit.errors import ParseError
from kimagekit.formats.ima import FIELD_FORMATS

_FIDS = sorted(FIELD_FORMATS)
# field bytes that hit every branch of the digest and string forms: NULs, colons, high bytes
_chunk = st.one_of(
    st.binary(max_size=48),
    st.builds(lambda a, b: a + b, st.sampled_from([b"sha256:\0", b":\0", b"\0", b"ima:sha1:\0",
                                                   b"x\xff:\0", b"sha1\0", b"a:b"]),
              st.binary(max_size=40)),
    st.sampled_from([b"\x01\x02", b"\x01\x02\x03\x04", b"\x01" * 8, b"/bin/\"q\\\0", b"\xe9\0"]),
)


@st.composite
def _entry(draw: st.DrawFn) -> tuple[int, str, list[bytes], bool]:
    name = draw(st.sampled_from(["ima-ng", "ima-sig", "evm-sig", "ima-ngv2", "ima",
                                 "d-ng|n-ng|iuid|imode", "buf|sig", "mine", "n|d"]))
    ids = ima_fields.template_field_ids(name)
    if name == "ima":
        fields = [draw(st.binary(min_size=20, max_size=20)),
                  draw(st.binary(max_size=60).map(lambda b: b.replace(b"\0", b"")))]
    elif ids is None:
        fields = draw(st.lists(_chunk, max_size=4))
    else:
        fields = [draw(_chunk) for _ in ids]
    return draw(st.integers(0, 63)), name, fields, draw(st.booleans())


def _old_ascii(data: bytes, fmt: ima_log.ListFormat) -> Iterator[str]:
    for e in ima_log.iter_entries(data, fmt):
        yield ima_ascii.render_line(e)


def _old_json(data: bytes, fmt: ima_log.ListFormat) -> Iterator[str]:
    for i, e in enumerate(ima_log.iter_entries(data, fmt)):
        yield (",\n" if i else "\n") + json.dumps(_entry_json(e))


def _drain(chunks: Iterator[str]) -> tuple[str, str | None]:
    """All the text, and the error (message, field, offset) that stopped it."""
    out: list[str] = []
    try:
        for c in chunks:
            out.append(c)
    except ParseError as err:
        return "".join(out), f"{err} | {err.field} | {err.offset}"
    return "".join(out), None


def _both(data: bytes, fmt: ima_log.ListFormat,
          ) -> list[tuple[tuple[str, str | None], tuple[str, str | None]]]:
    recs: Callable[[], Iterator[ima_show.Record]] = lambda: ima_show.records(data, fmt)  # noqa: E731
    return [
        (_drain(ima_show.ascii_lines(recs(), fmt.endian)), _drain(_old_ascii(data, fmt))),
        (_drain(ima_show.json_entries(recs(), fmt.endian)), _drain(_old_json(data, fmt))),
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(_entry(), min_size=1, max_size=10), st.sampled_from(["<", ">"]),
       st.sampled_from(["sha1", "sha256", "sha512"]), st.data())
def test_random_lists_render_as_entry_by_entry(items: list[tuple[int, str, list[bytes], bool]],
                                               endian: str, bank: str,
                                               data: st.DataObject) -> None:
    raw = b"".join(make_ima.entry(p, n, f, endian, bank, v) for p, n, f, v in items)
    size = {"sha1": 20, "sha256": 32, "sha512": 64}[bank]
    fmt = ima_log.ListFormat("binary", endian, size, 0, len(raw))  # type: ignore[arg-type]
    # a random cut or flipped byte: the same text up to the same error
    how = data.draw(st.sampled_from(["whole", "cut", "flip"]))
    if how == "cut":
        raw = raw[:data.draw(st.integers(0, len(raw)))]
        fmt = ima_log.ListFormat("binary", endian, size, 0, len(raw))  # type: ignore[arg-type]
    elif how == "flip":
        at = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1:]
    for new, old in _both(raw, fmt):
        assert new == old
    if how == "whole":
        assert _both(raw, fmt)[0][0][1] is None


@pytest.mark.parametrize("name", ["small-le.bin", "small-be.bin", "small-le-sha256.bin",
                                  "small-be-sha512.bin", "small-le.kexec", "small-be.kexec",
                                  "small-2016.kexec"])
def test_sample_lists_render_as_entry_by_entry(name: str) -> None:
    with ima_log.open_list(IMA_DIR / name) as (fmt, view):
        for new, old in _both(bytes(view), fmt):
            assert new == old
            assert new[1] is None and new[0]


def test_ascii_input_lists_render_as_entry_by_entry() -> None:
    with ima_log.open_list(IMA_DIR / "small-le.bin") as (fmt, view):
        text = "".join(ima_show.ascii_lines(ima_show.records(view, fmt), fmt.endian)).encode()
    afmt = ima_log.detect(text, len(text))
    assert afmt is not None and afmt.kind == "ascii"
    for new, old in _both(text, afmt):
        assert new == old


def test_an_error_comes_after_the_block_before_it() -> None:
    one = make_ima.entry(10, "ima-ng", [make_ima.d_ng("sha1", b"\1" * 20), make_ima.n_ng("/a")])
    bad = make_ima.entry(10, "ima-ng", [make_ima.d_ng("sha1", b"\2" * 20)])  # one field of two
    raw = one * (ima_show.BLOCK + 5) + bad
    fmt = ima_log.ListFormat("binary", "<", 20, 0, len(raw))
    text, err = _drain(ima_show.ascii_lines(ima_show.records(raw, fmt), "<"))
    assert text == ima_ascii.render_line(next(ima_log.iter_entries(one, fmt))) \
        * (ima_show.BLOCK + 5)
    assert err == (f"ima-list: entry[{ima_show.BLOCK + 5}].template_data at offset "
                   f"{hex(len(one) * (ima_show.BLOCK + 5) + 38)}: template 'ima-ng' has 2 "
                   f"fields, the data holds 1 | entry[{ima_show.BLOCK + 5}].template_data | "
                   f"{len(one) * (ima_show.BLOCK + 5) + 38}")


# --- shown_parts against the field rendering it replaced ---------------------------------------

def _oracle(fid: str, data: bytes, endian: str) -> tuple[str, str | None, bytes | None]:
    kind = FIELD_FORMATS.get(fid, "hex")
    if kind in ("digest-algo", "digest-type-algo") and data:
        sep = data.find(b"\0")
        head = data[:sep] if sep >= 0 else b""
        colon = head.rfind(b":")
        if sep >= 0 and colon == len(head) - 1:
            digest = data[sep + 1:]
            prefix = head[:colon].decode("ascii", "backslashreplace")
            algo = prefix.rsplit(":", 1)[-1] or None
            text = head[:head.find(b"\0")] if b"\0" in head else head
            shown = digest.hex() if colon == 0 else text.decode("latin-1") + digest.hex()
            return shown, algo, digest
        return data.hex(), None, None
    if kind == "digest":
        return data.hex(), None, data
    if kind == "string":
        end = data.find(b"\0")
        return (data if end < 0 else data[:end]).decode("latin-1"), None, None
    if kind == "uint":
        code = {1: "B", 2: "H", 4: "I", 8: "Q"}.get(len(data))
        return (str(struct.unpack(endian + code, data)[0]) if code else ""), None, None
    return data.hex(), None, None


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([*_FIDS, "?"]), _chunk, st.sampled_from(["<", ">"]))
def test_shown_parts_as_before(fid: str, data: bytes, endian: str) -> None:
    assert ima_fields.shown_parts(fid, data, endian) == _oracle(fid, data, endian)  # type: ignore[arg-type]


@pytest.mark.parametrize(("data", "shown", "algo"), [
    (b"sha256:\0\xab", "sha256:ab", "sha256"),
    (b":\0\xab", "ab", None),
    (b"\0\xab", "ab", None),
    (b"ima:sha1:\0\xab", "ima:sha1:ab", "sha1"),
    (b"sha1\0\xab", "7368613100ab", None),
])
def test_digest_field_forms(data: bytes, shown: str, algo: str | None) -> None:
    assert ima_fields.shown_parts("d-ng", data, "<")[:2] == (shown, algo)
