"""ASCII lists: the kernel's rendering byte for byte, and parsing lines back with a digest check."""

from __future__ import annotations

from pathlib import Path

import pytest
from ima_helpers import IMA_DIR

from kimagekit import ima_ascii, ima_log
from kimagekit.errors import ParseError


def test_embrave_binary_renders_to_its_ascii_twin_byte_for_byte(corpus: Path) -> None:
    entries = ima_log.iter_entries(
        (corpus / "ima/binary/embrave-37d16c0-binary_runtime_measurements").read_bytes())
    text = "".join(ima_ascii.render(entries)).encode("latin-1")
    assert text == (corpus / "ima/ascii/embrave-37d16c0-ascii_runtime_measurements").read_bytes()


def test_embrave_ascii_parses_back_to_the_binary_list(corpus: Path) -> None:
    binary = (corpus / "ima/binary/embrave-37d16c0-binary_runtime_measurements").read_bytes()
    text = (corpus / "ima/ascii/embrave-37d16c0-ascii_runtime_measurements").read_bytes()
    parsed = list(ima_ascii.parse_ascii(text))
    assert len(parsed) == 922
    assert ima_log.encode_list(parsed, "<", 20) == binary
    assert ima_log.analyse(parsed).mismatches == []


@pytest.mark.parametrize(("name", "count"), [
    ("keylime-01779cf-test_ima_verification.ascii", 6),
    ("keylime-0cdc179-test_ima_ast-valid.ascii", 6),
    ("ima-evm-utils-c5732b6-test_ascii_runtime_measurements", 3),
    ("ima-evm-utils-c5732b6-sample-ascii_runtime_measurements-pcrs-8-9", 1),
])
def test_real_ascii_lines_parse_and_every_digest_recomputes(corpus: Path, name: str,
                                                            count: int) -> None:
    data = (corpus / "ima/ascii" / name).read_bytes()
    assert ima_log.detect(data, len(data)) == ima_log.ListFormat("ascii")
    entries = list(ima_ascii.parse_ascii(data))
    assert len(entries) == len(data.splitlines()) == count
    assert ima_log.analyse(entries).mismatches == []
    # re-rendering gives the lines back; keylime drops the space before an empty last field,
    # the kernel does not
    rendered = [line.rstrip(" \n") for line in ima_ascii.render(entries)]
    assert rendered == [line.rstrip(" ") for line in data.decode("latin-1").splitlines()]


def test_keylime_invalid_lines_each_fail_with_their_reason(corpus: Path) -> None:
    lines = (corpus / "ima/ascii/keylime-0cdc179-test_ima_ast-invalid.ascii").read_bytes()
    errors = []
    offset = 0
    for raw in lines.splitlines(keepends=True):
        with pytest.raises(ParseError) as err:
            list(ima_ascii.parse_ascii(raw))
        errors.append(str(err.value))
        offset += len(raw)
    assert errors == [
        "ima-ascii: line[0].template_name at offset 0x0: unknown template 'not-ima': "
        "its fields cannot be read from text",
        "ima-ascii: line[0] at offset 0x0: not an IMA ASCII line: "
        "'10 I936eb315fb4e74b99e7d461bc5c96049e1ee092 ima-ng sha1:bc02'",
        "ima-ascii: line[0].template_data at offset 0x0: bad field text: non-hexadecimal "
        "number found in fromhex() arg at position 0",
        "ima-ascii: line[0] at offset 0x0: not an IMA ASCII line: "
        "'this is text not an ima entry'",
    ]


@pytest.mark.parametrize("name", ["small-le.bin", "small-le-sha256.bin"])
def test_binary_ascii_binary_round_trip_is_lossless(name: str) -> None:
    data = (IMA_DIR / name).read_bytes()
    text = "".join(ima_ascii.render(ima_log.iter_entries(data))).encode()
    back = list(ima_ascii.parse_ascii(text))
    digest_size = len(back[0].template_digest)
    assert ima_log.encode_list(back, "<", digest_size) == data


def test_big_endian_ascii_round_trip_needs_the_byte_order() -> None:
    data = (IMA_DIR / "small-be.bin").read_bytes()
    text = "".join(ima_ascii.render(ima_log.iter_entries(data))).encode()
    assert ima_log.encode_list(ima_ascii.parse_ascii(text, endian=">"), ">", 20) == data
    # read as little-endian, the entries with lengths in them no longer match their digests
    mismatched = ima_log.analyse(list(ima_ascii.parse_ascii(text))).mismatches
    assert [m.index for m in mismatched] == [0, 1, 2, 3, 4, 5, 7]


def test_render_line_exact_forms() -> None:
    entries = list(ima_log.iter_entries((IMA_DIR / "small-le.bin").read_bytes()))
    lines = [ima_ascii.render_line(e) for e in entries]
    assert lines[2].endswith(" /bin/sh \n")  # empty sig keeps its space
    assert lines[4].split(" ")[3].startswith("ima:sha256:")
    assert lines[5].rstrip("\n").split(" ")[-3:] == ["0", "42", "33188"]
    assert lines[6] == ("10 0000000000000000000000000000000000000000 ima-ng sha256:"
                        + "00" * 20 + " /var/log/violated\n")
    assert lines[8].startswith("10 ") and lines[8].split(" ")[2:] == [
        "ima", "c00dbbc9dadfbe1e232e93a729dd4752fade0abf", "/sbin/old\n"]


def test_line_reader_across_chunk_boundaries() -> None:
    from kimagekit.ima_ascii import _lines

    data = b"a\nbb\n\nccc\nd"
    expected = [(0, b"a"), (2, b"bb"), (5, b""), (6, b"ccc"), (10, b"d")]
    for chunk in range(1, len(data) + 2):
        assert list(_lines(data, chunk)) == expected
        assert list(_lines(data + b"\n", chunk)) == expected


@pytest.mark.parametrize(("line", "message"), [
    (b"10 " + b"a" * 42 + b" ima-ng sha1:" + b"0" * 40 + b" /x\n",
     "ima-ascii: line[0].template_digest at offset 0x0: template digest has 42 hex digits"),
    (b"10 sha256:" + b"a" * 40 + b" ima-ng sha1:" + b"0" * 40 + b" /x\n",
     "ima-ascii: line[0].template_digest at offset 0x0: template digest prefix 'sha256' does "
     "not match its 20 bytes"),
    (b"10 " + b"a" * 40 + b" ima " + b"0" * 38 + b" /x\n",
     "ima-ascii: line[0].template_data.d at offset 0x0: ima template digest has 19 bytes, "
     "20 expected"),
])
def test_bad_digests_in_ascii_lines(line: bytes, message: str) -> None:
    good = b"10 " + b"b" * 40 + b" ima-ng sha1:" + b"0" * 40 + b" /ok\n"
    with pytest.raises(ParseError) as err:
        list(ima_ascii.parse_ascii(line))
    assert str(err.value) == message
    # a bad line after a good one is named by its index and where it starts
    with pytest.raises(ParseError) as err:
        list(ima_ascii.parse_ascii(good + line))
    assert str(err.value) == message.replace("line[0]", "line[1]").replace(
        "offset 0x0", f"offset {len(good):#x}")


def test_last_line_without_newline_parses() -> None:
    entries = ima_log.read_entries(IMA_DIR / "small-le.bin")
    text = "".join(ima_ascii.render(entries)).encode("latin-1")
    assert text.endswith(b"\n")
    back = list(ima_ascii.parse_ascii(text[:-1]))
    assert len(back) == 9
    assert [(e.pcr, e.template_digest, e.template_data) for e in back] == [
        (e.pcr, e.template_digest, e.template_data) for e in entries]


def test_line_longer_than_any_kernel_writes_is_refused() -> None:
    assert ima_ascii.MAX_LINE == 4 << 20
    good = b"10 " + b"b" * 40 + b" ima-ng sha1:" + b"0" * 40 + b" /ok\n"
    longest = b"x" * ima_ascii.MAX_LINE
    assert [len(line) for _, line in ima_ascii._lines(good + longest)] == [len(good) - 1,
                                                                          ima_ascii.MAX_LINE]
    for tail in (b"", b"\n", b"y" * 1000):
        with pytest.raises(ParseError) as err:
            list(ima_ascii.parse_ascii(good + longest + b"x" + tail))
        assert str(err.value) == (f"ima-ascii: line at offset {len(good):#x}: line longer than "
                                  "4194304 bytes (MAX_LINE): no kernel writes one")
