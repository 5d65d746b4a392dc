"""The IMA kexec buffer: building, sizing, the next kernel's restore rules, appending."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from ima_helpers import IMA_DIR, make_ima

from kimagekit import ima_kexec, ima_log
from kimagekit.cli import main
from kimagekit.errors import RuleError


def _without_ima(entries: list[ima_log.ImaEntry]) -> list[ima_log.ImaEntry]:
    return [e for e in entries if e.template_name != "ima"]


@pytest.mark.parametrize(("endian", "name"), [("<", "small-le.kexec"), (">", "small-be.kexec")])
def test_build_matches_independent_packer(endian: str, name: str) -> None:
    src = "small-le.bin" if endian == "<" else "small-be.bin"
    entries = _without_ima(ima_log.read_entries(IMA_DIR / src))
    assert ima_kexec.build_buffer(entries, endian=endian) == (IMA_DIR / name).read_bytes()


def test_headerless_2016_form_is_the_bare_classic_list() -> None:
    entries = _without_ima(ima_log.read_entries(IMA_DIR / "small-le.bin"))
    data = ima_kexec.build_buffer(entries, header=False)
    assert data == (IMA_DIR / "small-2016.kexec").read_bytes()
    assert ima_log.detect(data, len(data)) == ima_log.ListFormat("binary", "<", 20, 0, len(data))


def test_per_bank_list_to_buffer_to_list_keeps_entries(corpus: Path) -> None:
    src = ima_log.read_entries(corpus / "ima/binary/ibmtss-31443b7-ima-sha256.log")
    buf = ima_kexec.build_buffer(src)
    fmt = ima_log.detect(buf, len(buf))
    assert fmt == ima_log.ListFormat("kexec-buffer", "<", 20, 24, len(buf), 362)
    back = ima_kexec.restore(buf).entries
    assert [(e.pcr, e.template_name, e.template_data) for e in back] == [
        (e.pcr, e.template_name, e.template_data) for e in src]
    # the buffer carries SHA-1 digests: the classic list of the same boot
    sha1 = (corpus / "ima/binary/ibmtss-31443b7-ima-sha1.log").read_bytes()
    assert buf[24:] == sha1
    assert ima_log.replay(back) == ima_log.replay(src)


def test_segment_size_as_the_kernel_sizes_it() -> None:
    assert ima_kexec.segment_size(24) == 4096
    assert ima_kexec.segment_size(2048) == 4096
    assert ima_kexec.segment_size(2049) == 8192
    assert ima_kexec.segment_size(49328 + 24) == 53248
    assert ima_kexec.segment_size(49352, page_size=65536) == 131072
    assert ima_kexec.segment_size(1000, extra=1 << 20) == (1 << 20) + 4096


def _buf(body: bytes, count: int, *, version: int = 1, size: int | None = None) -> bytes:
    return struct.pack("<HHIQQ", version, 0, 0, 24 + len(body) if size is None else size,
                       count) + body


def _one(name: str = "ima-ng", fields: list[bytes] | None = None) -> bytes:
    fields = fields if fields is not None else [make_ima.d_ng("sha1", bytes(20)),
                                                make_ima.n_ng("/x")]
    return make_ima.entry(10, name, fields)


@pytest.mark.parametrize(("buf", "message"), [
    (b"\x01\x00", "ima-kexec-buffer: header at offset 0x0: buffer of 2 bytes is shorter than "
                  "the 24-byte header"),
    (_buf(_one(), 1, version=2), "ima-kexec-buffer: header.version at offset 0x0: version 2 is "
                                 "not 1: incompatible measurement list"),
    (_buf(_one(), 1, size=4096), "ima-kexec-buffer: header.buffer_size at offset 0x8: "
                                 "buffer_size 4096 exceeds the 99 bytes of the buffer"),
    (_buf(_one() + _one(), 1), "ima-kexec-buffer: entry[0] at offset 0x18: last entry (count 1) "
                               "ends at 0x63, buffer_size is 0xae"),
    (_buf(_one()[:30], 1), "ima-kexec-buffer: entry[0] at offset 0x18: entry header: nr of "
                           "fields mismatch: expected 4, found 2"),
    # an ima-template entry as lists write it has no data length: the header walk fails first
    (_buf(_one("ima", [bytes(20), b"/x"]), 1),
     "ima-kexec-buffer: entry[0] at offset 0x18: last entry (count 1) ends at 0x3b, "
     "buffer_size is 0x51"),
    (_buf(_one("ima-ng")[:24] + b"\x03\0\0\0ima" + _one("ima-ng")[34:], 1),
     "ima-kexec-buffer: entry[0].template_name at offset 0x34: template \"ima\" cannot be "
     "restored"),
    (_buf(_one("x" * 69, [b"a"]), 1),
     "ima-kexec-buffer: entry[0].template_name at offset 0x34: template name of 69 bytes is "
     "too long (at most 68)"),
    (_buf(_one("ima-cgpath", [b"a"]), 1),
     "ima-kexec-buffer: entry[0].template_name at offset 0x34: template 'ima-cgpath' is neither "
     "built in nor a list of known fields (at most 15)"),
    (_buf(_one("ima-ng", [b"sha1:\0" + bytes(20)]), 1),
     "ima-kexec-buffer: entry[0].template_data at offset 0x3e: template data holds 1 fields, "
     "template 'ima-ng' has 2"),
    (_buf(_one("|".join(["n"] * 16), [b"a"] * 16), 1),
     "ima-kexec-buffer: entry[0].template_name at offset 0x34: template 'n|n|n|n|n|n|n|n|n|n|"
     "n|n|n|n|n|n' is neither built in nor a list of known fields (at most 15)"),
])
def test_restore_refuses_what_the_kernel_refuses(buf: bytes, message: str) -> None:
    with pytest.raises(RuleError) as err:
        ima_kexec.restore(buf)
    assert str(err.value) == message


def test_a_refusal_mid_list_keeps_the_entries_before_it() -> None:
    # the kernel's restore loop breaks at the refused entry without undoing the ones before it
    # (held against Debian 6.1, 6.12 and 7.2 in tests/test_realkernel_load.py)
    bad = _one("ima-ng")[:24] + b"\x03\0\0\0ima" + _one("ima-ng")[34:]
    with pytest.raises(ima_kexec.RestoreStopped) as err:
        ima_kexec.restore(_buf(_one() + _one() + bad + _one(), 4))
    assert err.value.kept == 2
    assert len(_one()) == 0x4B  # the name of entry[2]: 0x34 + 2 * 0x4b = 0xca
    assert ima_kexec.refusal(err.value) == (
        "ima-kexec-buffer: entry[2].template_name at offset 0xca: template \"ima\" cannot be "
        "restored (it keeps the 2 entries before it)")
    # refused at the header or at the first entry: nothing kept, the rule alone
    with pytest.raises(ima_kexec.RestoreStopped) as first:
        ima_kexec.restore(_buf(bad, 1))
    assert first.value.kept == 0
    assert ima_kexec.refusal(first.value) == str(first.value)
    with pytest.raises(RuleError) as header:
        ima_kexec.restore(_buf(_one(), 1, version=2))
    assert not isinstance(header.value, ima_kexec.RestoreStopped)


def test_restore_accepts_count_larger_than_entries_like_the_kernel() -> None:
    restored = ima_kexec.restore(_buf(_one(), 5))
    assert (restored.count, len(restored.entries)) == (5, 1)


def test_append_updates_header_and_keeps_old_bytes() -> None:
    buf = (IMA_DIR / "small-le.kexec").read_bytes()
    fmt = ima_log.detect(buf, len(buf))
    assert fmt is not None
    new = ima_log.read_entries(IMA_DIR / "small-le.bin")[:2]
    out = ima_kexec.append(buf, new, fmt)
    assert out[24:len(buf)] == buf[24:]
    version, _, _, size, count = struct.unpack_from("<HHIQQ", out)
    assert (version, size, count) == (1, len(out), 10)
    assert len(ima_kexec.restore(out).entries) == 10
    listed = (IMA_DIR / "small-le.bin").read_bytes()
    lfmt = ima_log.detect(listed, len(listed))
    assert lfmt is not None
    assert ima_kexec.append(listed, new, lfmt) == listed + listed[:new[1].offset + len(
        ima_log.encode_entry(new[1]))]


def test_count_0_with_entries_is_a_lost_list(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """``while (bufp < bufendp && count++ < khdr->count)`` takes nothing when count is 0: the
    kernel reports no error and the next kernel starts with an empty list, so the PCRs no
    longer match it. That is damage, never "accepted"; an empty buffer with count 0 is fine."""
    buf = bytearray((IMA_DIR / "small-le.kexec").read_bytes())
    struct.pack_into("<Q", buf, 16, 0)
    with pytest.raises(RuleError) as err:
        ima_kexec.restore(bytes(buf))
    why = ("ima-kexec-buffer: header.count at offset 0x10: count 0: the entries from 0x18 to "
           "0x3b4 would not be restored (the kernel takes the buffer and drops them)")
    assert str(err.value) == why
    assert ima_kexec.restore(ima_kexec.build_buffer([])).entries == []
    lost = tmp_path / "lost.kexec"
    lost.write_bytes(bytes(buf))
    assert main(["ima", "check", str(lost)]) == 1
    assert main(["inspect", "--json", str(lost)]) == 1
    assert f"the next kernel would refuse this buffer: {why}" in capsys.readouterr().out
