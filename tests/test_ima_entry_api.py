"""The entry's library surface: ``path``, ``file_digest`` and reprs that show digests as hex."""

from __future__ import annotations

import pytest
from ima_helpers import IMA_DIR, make_ima

from kimagekit import ima_log
from kimagekit.errors import ParseError
from kimagekit.ima_fields import FileDigest


def test_path_and_file_digest_of_every_template() -> None:
    entries = ima_log.read_entries(IMA_DIR / "small-le.bin")
    got = [(e.template_name, e.path, e.file_digest and str(e.file_digest),
            e.file_digest and e.file_digest.type) for e in entries]
    assert got == [
        ("ima-ng", "boot_aggregate",
         "sha256:4509beb0ab401d71fa4a5cd94a55c9a74f13332776ae4019c5bfc4c2005157ff", None),
        ("ima-sig", "/init",
         "sha256:bb54068aea85faa7e487530083366be9962390af822e4c71ef1aca7033c83e66", None),
        ("ima-sig", "/bin/sh",
         "sha256:89c4ec9f6b3f1086b158d8ef03dfe8155e6f79d9e66434b8f9b3432fe8720e50", None),
        ("ima-buf", "kexec-cmdline",
         "sha256:6256d62f9c97e24aeaa430ba5a68d81dd339678a5e2627d86e6202a989ec0e0d", None),
        ("ima-ngv2", "/usr/bin/env",
         "sha256:9ac9c614c6a92d982795493615804846a60286314ea5ab79f312269a3810db02", "ima"),
        ("evm-sig", "/etc/passwd",
         "sha256:603871c2ddd41c26ee77495e2e31e6de7f9957e0dea3b0f09abf8a5ee17a0d4a", None),
        ("ima-ng", "/var/log/violated", "sha256:" + "00" * 20, None),
        ("d-ng|n-ng", "/custom/list", "sha1:11f6ad8ec52a2984abaafd7c3b516503785c2072", None),
        ("ima", "/sbin/old", "sha1:c00dbbc9dadfbe1e232e93a729dd4752fade0abf", None),
    ]
    fd = entries[0].file_digest
    assert fd == FileDigest("sha256", bytes.fromhex(
        "4509beb0ab401d71fa4a5cd94a55c9a74f13332776ae4019c5bfc4c2005157ff"))
    assert fd.hex == fd.digest.hex()


def test_no_name_no_digest_and_a_bad_entry() -> None:
    raw = make_ima.entry(10, "sig", [b"\x03\x02"], "<", "sha1")
    (e,) = ima_log.iter_entries(raw)
    assert (e.path, e.file_digest) == (None, None)
    # a d-ng field with 16 bytes and a ``d`` of unusual size
    md5 = make_ima.entry(10, "d|n-ng", [b"\x11" * 16, make_ima.n_ng("/x")], "<", "sha1")
    (e,) = ima_log.iter_entries(md5)
    assert e.file_digest == FileDigest("md5", b"\x11" * 16)
    odd = make_ima.entry(10, "d|n-ng", [b"\x11" * 5, make_ima.n_ng("/x")], "<", "sha1")
    (e,) = ima_log.iter_entries(odd)
    assert e.file_digest == FileDigest(None, b"\x11" * 5)
    assert str(e.file_digest) == "1111111111"
    short = make_ima.entry(10, "ima-ng", [make_ima.d_ng("sha1", b"\1" * 20)], "<", "sha1")
    (e,) = ima_log.iter_entries(short)
    with pytest.raises(ParseError, match="template 'ima-ng' has 2 fields, the data holds 1"):
        _ = e.path


def test_reprs_show_digests_as_hex() -> None:
    e = ima_log.read_entries(IMA_DIR / "small-le.bin")[8]
    assert repr(e) == (
        "ImaEntry(pcr=10, template_digest=hex('" + e.template_digest.hex() + "'), "
        "template_name='ima', template_data=hex('" + e.template_data.hex() + "'), "
        f"endian='<', index=8, offset={e.offset})")
    assert repr(e.file_digest) == (
        "FileDigest(algo='sha1', digest=hex('c00dbbc9dadfbe1e232e93a729dd4752fade0abf'), "
        "type=None)")
    assert repr(e.fields[1]) == ("ImaField(id='n', data=hex('" + b"/sbin/old".hex()
                                 + "'), shown='/sbin/old', algo=None, digest=None)")
    m = ima_log.DigestMismatch(1, 2, "ima-ng", b"\xab", b"\xcd", "/x")
    assert repr(m) == ("DigestMismatch(index=1, offset=2, template_name='ima-ng', "
                       "stored=hex('ab'), computed=hex('cd'), path='/x')")
