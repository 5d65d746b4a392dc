"""Corrupt IMA input: every truncation and every bad length gives a KimageError naming the field
and offset, never another exception, never an allocation sized by the bad field."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from ima_helpers import IMA_DIR

from kimagekit import ima_kexec, ima_log
from kimagekit.cli import main
from kimagekit.errors import KimageError, ParseError, RuleError

SMALL = (IMA_DIR / "small-le.bin").read_bytes()
ENTRIES = ima_log.read_entries(IMA_DIR / "small-le.bin")
BOUNDARIES = [e.offset for e in ENTRIES] + [len(SMALL)]


def _entry_at(offset: int) -> int:
    return max(i for i, start in enumerate(BOUNDARIES[:-1]) if start <= offset)


def _truncation_error(cut: int) -> tuple[str, int, str]:
    """(field, offset, message) for ``SMALL[:cut]``, from the entry layout (28-byte header:
    pcr, 20-byte digest, name length; then the name; then a data length and the data, or for
    the "ima" template a 20-byte digest and a name length), independently of the scanner."""
    if cut < 4:
        return "entry[0]", 0, ("not an IMA measurement list: no byte order and digest size "
                               "(20/32/48/64) gives a valid first entry, and it is not ASCII")
    index = _entry_at(cut)
    e = ENTRIES[index]
    start, rel, name_len = e.offset, cut - e.offset, len(e.template_name)
    after_name = 28 + name_len
    where = f"entry[{index}]"
    if rel < 28:
        field, offset, msg = where, start, f"truncated entry header: 28 bytes needed, {rel} left"
    elif rel < after_name:
        field, offset, msg = (f"{where}.template_name_len", start + 24,
                              f"template_name_len {name_len} exceeds the {rel - 28} bytes left")
    elif e.template_name == "ima" and rel < after_name + 24:
        field, offset, msg = (f"{where}.template_data", start + after_name,
                              f"truncated ima template data: 24 bytes needed, "
                              f"{rel - after_name} left")
    elif e.template_name == "ima":
        name = len(e.template_data) - 24
        field, offset, msg = (f"{where}.template_data.n_len", start + after_name + 20,
                              f"name length {name} exceeds the {rel - after_name - 24} bytes "
                              f"left")
    elif rel < after_name + 4:
        field, offset, msg = (f"{where}.template_data_len", start + after_name,
                              f"truncated template_data_len: 4 bytes needed, "
                              f"{rel - after_name} left")
    else:
        field, offset, msg = (f"{where}.template_data_len", start + after_name,
                              f"template_data_len {len(e.template_data)} exceeds the "
                              f"{rel - after_name - 4} bytes left")
    # the first entry decides detection: reported as not a valid list, at the same field
    return field, offset, ("not a valid IMA list: " + msg if index == 0 else msg)


@pytest.mark.parametrize("cut", range(1, len(SMALL)))
def test_truncated_at_every_offset(cut: int) -> None:
    data = SMALL[:cut]
    if cut in BOUNDARIES:
        assert len(list(ima_log.iter_entries(data))) == BOUNDARIES.index(cut)
        return
    with pytest.raises(ParseError) as err:
        list(ima_log.iter_entries(data))
    field, offset, message = _truncation_error(cut)
    e = err.value
    assert (e.fmt, e.field, e.offset, e.message) == ("ima-list", field, offset, message)
    assert str(e) == f"ima-list: {field} at offset {offset:#x}: {message}"


def _with_u32(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack("<I", value) + data[offset + 4:]


@pytest.mark.parametrize("index", range(len(ENTRIES)))
@pytest.mark.parametrize("value", [0xFFFFFFFF, 0x7FFFFFFF, 0x10000])
def test_huge_name_length_in_every_entry(index: int, value: int) -> None:
    at = ENTRIES[index].offset + 24
    data = _with_u32(SMALL, at, value)
    with pytest.raises(KimageError) as err:
        list(ima_log.iter_entries(data))
    if index == 0:
        # the first entry decides detection: reported as not a valid list, at the same field
        assert str(err.value) == (f"ima-list: entry[0].template_name_len at offset 0x18: "
                                  f"not a valid IMA list: template_name_len {value} exceeds "
                                  f"the {len(SMALL) - 28} bytes left")
    else:
        assert str(err.value) == (
            f"ima-list: entry[{index}].template_name_len at offset {at:#x}: "
            f"template_name_len {value} exceeds the {len(SMALL) - at - 4} bytes left")


@pytest.mark.parametrize("index", [i for i, e in enumerate(ENTRIES) if e.template_name != "ima"])
def test_huge_data_length_in_every_entry(index: int) -> None:
    e = ENTRIES[index]
    at = e.offset + 28 + len(e.template_name)
    data = _with_u32(SMALL, at, 0xFFFFFFF0)
    with pytest.raises(KimageError) as err:
        list(ima_log.iter_entries(data))
    assert err.value.field == f"entry[{index}].template_data_len"
    assert err.value.offset == at
    prefix = "not a valid IMA list: " if index == 0 else ""
    assert err.value.message == (f"{prefix}template_data_len {0xFFFFFFF0} exceeds the "
                                 f"{len(SMALL) - at - 4} bytes left")


def test_flipped_field_length_inside_template_data() -> None:
    e = ENTRIES[1]  # ima-sig: d-ng, n-ng, sig
    at = e.offset + 28 + len(e.template_name) + 4
    data = bytearray(SMALL)
    data[at + 3] ^= 0x80  # the d-ng length's top byte
    entry = list(ima_log.iter_entries(bytes(data)))[1]
    with pytest.raises(ParseError) as err:
        _ = entry.fields
    assert str(err.value) == (
        f"ima-list: entry[1].template_data.field[0].len at offset {at:#x}: field length "
        f"{0x80000000 + 40} exceeds the {len(e.template_data) - 4} bytes left")


def test_no_allocation_sized_by_a_bad_length() -> None:
    data = _with_u32(SMALL, ENTRIES[3].offset + 24, 0xFFFFFFFF)
    tracemalloc.start()
    try:
        with pytest.raises(ParseError) as walked:
            list(ima_log.iter_entries(data))
        with pytest.raises(ParseError) as analysed:
            ima_log.analyse(data, banks=ima_log.BANKS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < len(data) + 64 * 1024
    want = (f"ima-list: entry[3].template_name_len at offset {ENTRIES[3].offset + 24:#x}: "
            f"template_name_len 4294967295 exceeds the {len(SMALL) - ENTRIES[3].offset - 28} "
            "bytes left")
    assert (str(walked.value), str(analysed.value)) == (want, want)


@pytest.mark.parametrize("cut", [1, 10, 23, 24, 40, 200, 947])
def test_truncated_kexec_buffer(cut: int) -> None:
    full = (IMA_DIR / "small-le.kexec").read_bytes()
    buf = full[:cut]
    with pytest.raises(RuleError) as err:
        ima_kexec.restore(buf)
    if cut < 24:
        assert str(err.value) == (f"ima-kexec-buffer: header at offset 0x0: buffer of {cut} "
                                  "bytes is shorter than the 24-byte header")
    else:  # the header still claims the whole buffer
        assert str(err.value) == (f"ima-kexec-buffer: header.buffer_size at offset 0x8: "
                                  f"buffer_size {len(full)} exceeds the {cut} bytes of the buffer")


def test_cli_exits_2_with_one_line(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.bin"
    bad.write_bytes(_with_u32(SMALL, ENTRIES[2].offset + 24, 0xFFFFFFFF))
    for argv in (["ima", "show", str(bad)], ["ima", "check", str(bad)],
                 ["ima", "replay", str(bad)], ["inspect", str(bad)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err == (f"kimagekit: error: {bad}: ima-list: entry[2].template_name_len at offset "
                       f"{ENTRIES[2].offset + 24:#x}: template_name_len 4294967295 exceeds the "
                       f"{len(SMALL) - ENTRIES[2].offset - 28} bytes left\n")


def test_ima_template_name_longer_than_the_kernel_allows() -> None:
    e = ENTRIES[8]  # the ima template: digest, n_len, name
    assert e.template_name == "ima"
    at = e.offset + 4 + 20 + 4 + 3 + 20
    data = _with_u32(SMALL, at, 256) + bytes(300)
    with pytest.raises(ParseError) as err:
        list(ima_log.iter_entries(data))
    assert str(err.value) == (f"ima-list: entry[8].template_data.n_len at offset {at:#x}: "
                              "name length 256 exceeds IMA_EVENT_NAME_LEN_MAX (255)")


def test_template_name_with_bytes_no_kernel_writes() -> None:
    e = ENTRIES[3]
    at = e.offset + 28
    data = SMALL[:at] + b"ima buf" + SMALL[at + 7:]  # "ima-buf" with a space
    with pytest.raises(ParseError) as err:
        list(ima_log.iter_entries(data))
    assert str(err.value) == (f"ima-list: entry[3].template_name at offset {at:#x}: "
                              "template name b'ima buf' is not a template name")


def test_kexec_template_data_that_does_not_split() -> None:
    buf = bytearray((IMA_DIR / "small-le.kexec").read_bytes())
    first = 24 + 4 + 20 + 4 + len("ima-ng") + 4  # entry 0's template data
    struct.pack_into("<I", buf, first, 0xFFFF)  # its first field length
    with pytest.raises(KimageError) as err:
        ima_kexec.restore(bytes(buf))
    assert str(err.value) == (f"ima-kexec-buffer: entry[0].template_data at offset {first:#x}: "
                              "template data does not split into 2 fields")
