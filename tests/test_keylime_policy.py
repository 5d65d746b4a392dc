"""``ima check --policy``: keylime runtime policies judged as keylime's verifier judges them.

The cases mirror the rules of keylime 7's ``ima.py``/``ast.py`` (each status below is what
keylime's ``process_measurement_list`` reports for the same line and policy: the README says how
that was compared); lists and policies are built here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from ima_helpers import IMA_DIR, make_ima

from kimagekit import ima_ascii, ima_log
from kimagekit import keylime_policy as kp
from kimagekit.cli import main
from kimagekit.errors import UsageError

D = {n: bytes([n]) * 32 for n in range(1, 8)}  # file digests


def policy(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "meta": {"version": 1, "generator": 1}, "release": 0, "digests": {}, "excludes": [],
        "keyrings": {}, "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1",
                                "dm_policy": None},
        "ima-buf": {}, "verification-keys": ""}
    doc.update(over)
    return doc


def ng(path: str, digest: bytes, algo: str = "sha256", template: str = "ima-ng", pcr: int = 10,
       extra: tuple[bytes, ...] = (), violation: bool = False) -> bytes:
    fields = [make_ima.d_ng(algo, digest), make_ima.n_ng(path), *extra]
    return make_ima.entry(pcr, template, fields, "<", "sha1", violation)


def judge(raw: bytes, doc: dict[str, Any]) -> list[tuple[str | None, str, bool]]:
    rules = kp.parse_policy(json.dumps(doc).encode())
    entries = list(ima_log.iter_entries(raw))
    altered = [m.index for m in ima_log.analyse(raw).mismatches]
    report = kp.judge_entries(entries, rules, altered=altered, bank="sha1")
    return [(v.path, v.status, v.pcr_ok) for v in report.verdicts]


def test_lookup_excludes_and_digests() -> None:
    doc = policy(digests={"/usr/bin/a": [D[1].hex(), D[2].hex()], "boot_aggregate": [D[3].hex()],
                          "/etc/x": [D[5].hex()]},
                 excludes=["/tmp", r"/opt/.*\.so$", "bin/b"])
    raw = b"".join([
        ng("boot_aggregate", D[3]),            # a path like any other
        ng("/usr/bin/a", D[2]),                # any of the path's digests
        ng("/usr/bin/a", D[4]),                # not one of them
        ng("/usr/bin/b", D[1]),                # "bin/b" matches only from the path's start
        ng("/tmpfile", D[4]),                  # re.match: a prefix of the path is enough
        ng("/opt/l.so", D[4]),
        ng("/opt/l.so.1", D[4]),               # "$" anchors the end
        ng("/etc/x", D[5], algo="sha512"),     # only the hex is compared, not the algorithm
        ng("/etc/x", D[5], template="ima-sig", extra=(b"",)),
    ])
    assert judge(raw, doc) == [
        ("boot_aggregate", "allowed", True), ("/usr/bin/a", "allowed", True),
        ("/usr/bin/a", "digest not allowed", True), ("/usr/bin/b", "not in policy", True),
        ("/tmpfile", "excluded", True), ("/opt/l.so", "excluded", True),
        ("/opt/l.so.1", "not in policy", True), ("/etc/x", "allowed", True),
        ("/etc/x", "allowed", True)]


def test_entry_level_failures_come_before_the_policy() -> None:
    doc = policy(digests={"/a": [D[1].hex()]}, excludes=["/tmp"])
    altered = bytearray(ng("/a", D[1]))
    altered[4] ^= 1  # the stored template digest no longer matches
    raw = b"".join([
        ng("/tmp/v", bytes(20), violation=True),  # excluded path, still a violation
        bytes(altered),
        ng("/a", D[1], pcr=11),                   # allowed, but not in PCR 10
        ng("/a", D[1], template="ima-ngv2"),      # keylime parses four templates only
        make_ima.entry(10, "ima", [D[1][:20], b"/a"], "<", "sha1"),
    ])
    assert judge(raw, doc) == [
        ("/tmp/v", "violation", True), ("/a", "altered", True), ("/a", "allowed", False),
        ("/a", "unsupported template", True), ("/a", "digest not allowed", True)]


def test_ima_buf_keys_and_buffers() -> None:
    ec_der = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ed_pem = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def buf(name: str, digest: bytes, data: bytes) -> bytes:
        return ng(name, digest, template="ima-buf", extra=(data,))

    raw = b"".join([
        buf(".ima", D[1], ec_der),              # a key: looked up in keyrings
        buf(".ima", D[2], ec_der),
        buf(".builtin_trusted_keys", D[1], ec_der),
        buf(".ima", D[1], ed_pem),              # keylime takes RSA and EC keys only
        buf("kexec-cmdline", D[3], b"console=hvc0"),  # not a key: looked up in ima-buf
        buf("kexec-cmdline", D[1], b"console=hvc0"),
    ])
    doc = policy(keyrings={".ima": [D[1].hex()]}, **{"ima-buf": {"kexec-cmdline": [D[3].hex()]}})
    assert [s for _, s, _ in judge(raw, doc)] == [
        "allowed", "digest not allowed", "not in policy", "unsupported key", "allowed",
        "digest not allowed"]
    doc["ima"]["ignored_keyrings"] = [".builtin_trusted_keys"]
    assert [s for _, s, _ in judge(raw, doc)][:3] == ["allowed", "digest not allowed",
                                                      "ignored keyring"]
    doc["ima"]["ignored_keyrings"] = ["*"]
    assert [s for _, s, _ in judge(raw, doc)][:3] == ["ignored keyring"] * 3


def test_an_ascii_line_keylime_cannot_split(tmp_path: Path) -> None:
    """keylime splits an ``ima-sig`` line into three fields: without the space before an empty
    signature (the kernel always writes it) it refuses the line; kimagekit's reader takes it."""
    raw = ng("/a", D[1], template="ima-sig", extra=(b"",))
    text = "".join(ima_ascii.render(ima_log.iter_entries(raw)))
    assert text.endswith(" /a \n")
    lst = tmp_path / "list.ascii"
    pol = tmp_path / "policy.json"
    pol.write_text(json.dumps(policy(digests={"/a": [D[1].hex()]})))
    for body, status in ((text, "allowed"), (text.replace(" /a \n", " /a\n"), "UNPARSABLE LINE")):
        lst.write_text(body)
        code = main(["ima", "check", str(lst), "--policy", str(pol)])
        assert code == (0 if status == "allowed" else 1)


def test_the_cli_reports_each_entry_and_a_summary(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    small = IMA_DIR / "small-le.bin"
    pol = tmp_path / "policy.json"
    pol.write_text(json.dumps(policy(
        digests={"/init": ["bb54068aea85faa7e487530083366be9962390af822e4c71ef1aca7033c83e66"],
                 "/bin/sh": [D[1].hex()]},
        excludes=["boot_"],
        **{"ima-buf": {"kexec-cmdline": [
            "6256d62f9c97e24aeaa430ba5a68d81dd339678a5e2627d86e6202a989ec0e0d"]}})))
    code = main(["ima", "check", str(small), "--policy", str(pol)])
    out = capsys.readouterr().out
    assert code == 1
    assert out == (
        "entry 0 (ima-ng) boot_aggregate sha256:4509beb0ab401d71fa4a5cd94a55c9a74f13332776ae4019c5bfc4c2005157ff: excluded\n"  # noqa: E501
        "entry 1 (ima-sig) /init sha256:bb54068aea85faa7e487530083366be9962390af822e4c71ef1aca7033c83e66: allowed\n"  # noqa: E501
        "entry 2 (ima-sig) /bin/sh sha256:89c4ec9f6b3f1086b158d8ef03dfe8155e6f79d9e66434b8f9b3432fe8720e50: DIGEST NOT ALLOWED\n"  # noqa: E501
        "entry 3 (ima-buf) kexec-cmdline sha256:6256d62f9c97e24aeaa430ba5a68d81dd339678a5e2627d86e6202a989ec0e0d: allowed\n"  # noqa: E501
        "entry 4 (ima-ngv2) /usr/bin/env ima:sha256:9ac9c614c6a92d982795493615804846a60286314ea5ab79f312269a3810db02: UNSUPPORTED TEMPLATE\n"  # noqa: E501
        "entry 5 (evm-sig) /etc/passwd sha256:603871c2ddd41c26ee77495e2e31e6de7f9957e0dea3b0f09abf8a5ee17a0d4a: UNSUPPORTED TEMPLATE; PCR 11, NOT 10\n"  # noqa: E501
        "entry 6 (ima-ng) /var/log/violated sha256:0000000000000000000000000000000000000000: VIOLATION\n"  # noqa: E501
        "entry 7 (d-ng|n-ng) /custom/list sha1:11f6ad8ec52a2984abaafd7c3b516503785c2072: UNSUPPORTED TEMPLATE\n"  # noqa: E501
        "entry 8 (ima) /sbin/old c00dbbc9dadfbe1e232e93a729dd4752fade0abf: NOT IN POLICY\n"
        "policy: 9 entries: 2 allowed, 1 excluded, 1 not in policy, 1 digest not allowed, "
        "1 violation, 3 unsupported template, 1 wrong pcr; 6 fail\n"
        "FAILED: 9 entries, 1 violations, 0 template digest mismatches (sha1)\n")
    code = main(["ima", "check", str(small), "--policy", str(pol), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert (code, doc["ok"], doc["policy"]["failed"], doc["policy"]["ok"]) == (1, False, 6, False)
    assert doc["policy"]["entries"][2] == {
        "index": 2, "offset": 0xD7, "pcr": 10, "template_name": "ima-sig", "path": "/bin/sh",
        "digest": "sha256:89c4ec9f6b3f1086b158d8ef03dfe8155e6f79d9e66434b8f9b3432fe8720e50",
        "status": "digest not allowed", "pcr_ok": True, "signed": False, "ok": False}
    assert doc["policy"]["counts"] == {
        "allowed": 2, "excluded": 1, "not in policy": 1, "digest not allowed": 1, "violation": 1,
        "unsupported template": 3, "wrong pcr": 1}


def test_a_signed_entry_failed_by_digest_gets_a_note(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    sig = b"\x03\x02\x04\xaa\xbb\xcc\xdd\x00\x04" + b"\x11" * 4
    raw = (ng("/a", D[1], template="ima-sig", extra=(sig,))
           + ng("/b", D[2], template="ima-sig", extra=(sig,)))
    lst = tmp_path / "l.bin"
    lst.write_bytes(raw)
    pol = tmp_path / "p.json"
    pol.write_text(json.dumps(policy(digests={"/a": [D[1].hex()]})))
    assert main(["ima", "check", str(lst), "--policy", str(pol)]) == 1
    assert capsys.readouterr().out.splitlines()[-4:] == [
        f"entry 1 (ima-sig) /b sha256:{D[2].hex()}: NOT IN POLICY",
        "note: 1 signed ima-sig entry failed by digest: keylime accepts such an entry when its "
        "signature verifies with a key of its keyrings (verification-keys, keys measured into "
        ".ima), which kimagekit does not take",
        "policy: 2 entries: 1 allowed, 1 not in policy; 1 fail",
        "FAILED: 2 entries, 0 violations, 0 template digest mismatches (sha1)"]


def test_a_policy_that_allows_everything_passes(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    raw = ng("boot_aggregate", D[1]) + ng("/a", D[2], template="ima-sig", extra=(b"",))
    lst = tmp_path / "l.bin"
    lst.write_bytes(raw)
    pol = tmp_path / "p.json"
    pol.write_text(json.dumps(policy(digests={"boot_aggregate": [D[1].hex()],
                                              "/a": [D[2].hex()]})))
    assert main(["ima", "check", str(lst), "--policy", str(pol)]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "policy: 2 entries: 2 allowed; 0 fail",
        "OK: 2 entries, 0 violations, 0 template digest mismatches (sha1)"]
    # keylime recomputes template digests in ima.log_hash_alg: another bank fails every entry
    doc = policy(digests={"boot_aggregate": [D[1].hex()], "/a": [D[2].hex()]})
    doc["ima"]["log_hash_alg"] = "sha256"
    pol.write_text(json.dumps(doc))
    assert main(["ima", "check", str(lst), "--policy", str(pol)]) == 1
    assert capsys.readouterr().out.splitlines()[-3:] == [
        "POLICY: the policy's ima.log_hash_alg is sha256 but the list's template digests are "
        "sha1: keylime recomputes them in sha256 and finds every one wrong",
        "policy: 2 entries: 2 allowed; 0 fail",
        "FAILED: 2 entries, 0 violations, 0 template digest mismatches (sha1)"]


@pytest.mark.parametrize(("change", "msg"), [
    ({"digests": {"/a": ["AB" * 32]}},
     "--policy: digests['/a']: 'ABAB"),
    ({"digests": {"/a": []}}, "--policy: digests['/a'] must be a non-empty list of hex digests"),
    ({"meta": {"version": 2, "generator": 1}},
     "--policy: meta.version 2: kimagekit reads version 1"),
    ({"excludes": ["(a"]}, "--policy: excludes: not a regular expression once joined"),
    ({"ima": {"ignored_keyrings": [], "log_hash_alg": "md5", "dm_policy": None}},
     "--policy: ima.log_hash_alg 'md5': one of sha1, sha256, sha384, sha512"),
    ({"ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": {}}},
     "--policy: ima.dm_policy must be null"),
    ({"payload": "e30="}, "--policy: a DSSE envelope (a signed policy)"),
])
def test_policies_keylime_would_refuse(change: dict[str, Any], msg: str) -> None:
    with pytest.raises(UsageError) as info:
        kp.parse_policy(json.dumps(policy(**change)).encode())
    assert str(info.value).startswith(msg)


def test_a_missing_member_and_the_cli_error(capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    doc = policy()
    del doc["keyrings"], doc["ima-buf"]
    pol = tmp_path / "p.json"
    pol.write_text(json.dumps(doc))
    assert main(["ima", "check", str(IMA_DIR / "small-le.bin"), "--policy", str(pol)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {pol}: --policy: not a keylime runtime policy: no keyrings, ima-buf "
        "(as keylime-policy create runtime writes them)\n")
