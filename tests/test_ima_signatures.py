"""IMA file signatures in measurement lists: files signed with evmctl (keys generated here), list
entries packed by the independent testdata packer, and kimagekit's per-entry verdict compared
with ``evmctl ima_measurement --verify-sig --key``; the corpus's real lists report their keys."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import need_tool
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from ima_helpers import make_ima
from sig_helpers import make_cert, pem_key

from kimagekit import ima_log
from kimagekit.cli import main
from kimagekit.sig import evm_sig, ima_sig
from kimagekit.sig.ima_sig import Status


def _key(d: Path, name: str, curve: bool = False) -> tuple[Path, Path, object]:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        ec.generate_private_key(ec.SECP256R1()) if curve
        else rsa.generate_private_key(public_exponent=65537, key_size=2048))
    cert = make_cert(f"ima {name}", key, None, 7, False)
    (d / f"{name}.key").write_bytes(pem_key(key))
    (d / f"{name}.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return d / f"{name}.key", d / f"{name}.der", key


def _evm_sign(key: Path, file: Path) -> bytes:
    subprocess.run([need_tool("evmctl"), "ima_sign", "--key", str(key), "--sigfile", "-a",
                    "sha256", str(file)], check=True, capture_output=True)
    return file.with_name(file.name + ".sig").read_bytes()


@pytest.fixture(scope="module")
def signed_list(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    """A SHA-1 ima-sig list; returns (list, key A cert, key B cert, EC cert)."""
    d = tmp_path_factory.mktemp("imasig")
    a_key, a_der, _ = _key(d, "a")
    b_key, b_der, _ = _key(d, "b")
    e_key, e_der, _ = _key(d, "e", curve=True)
    files = {}
    for name, text in (("one", b"one\n"), ("two", b"two\n"), ("three", b"three\n")):
        (d / name).write_bytes(text)
        files[name] = (hashlib.sha256(text).digest(), d / name)
    sig_a1 = _evm_sign(a_key, files["one"][1])
    sig_a2 = _evm_sign(a_key, files["two"][1])
    sig_b3 = _evm_sign(b_key, files["three"][1])
    sig_e2 = _evm_sign(e_key, files["two"][1])
    flipped = bytearray(sig_a1)
    flipped[-1] ^= 1
    short = sig_a1[:-10]  # sig_size no longer matches
    rows = [
        ("/good-a", files["one"][0], sig_a1),
        ("/good-a2", files["two"][0], sig_a2),
        ("/by-b", files["three"][0], sig_b3),
        ("/tampered", files["one"][0], bytes(flipped)),
        ("/other-file", files["two"][0], sig_a1),  # a valid signature of another digest
        ("/short", files["one"][0], short),
        ("/ec", files["two"][0], sig_e2),
        ("/unsigned", files["one"][0], b""),
    ]
    body = make_ima.entry(10, "ima-ng", [make_ima.d_ng("sha256", bytes(32)),
                                         make_ima.n_ng("boot_aggregate")])
    for name, digest, sig in rows:
        body += make_ima.entry(10, "ima-sig", [make_ima.d_ng("sha256", digest),
                                               make_ima.n_ng(name), sig])
    lst = d / "list.bin"
    lst.write_bytes(body)
    return lst, a_der, b_der, e_der


EVMCTL_LINE = re.compile(r"^(/\S+): verification (is OK|failed: (.*))$", re.M)


def _evmctl_verdicts(lst: Path, keys: list[Path]) -> dict[str, str]:
    done = subprocess.run([need_tool("evmctl"), "-v", "ima_measurement", "--verify-sig",
                           "--key", ",".join(map(str, keys)), str(lst)],
                          capture_output=True, text=True, check=False, timeout=60)
    out: dict[str, str] = {}
    for m in EVMCTL_LINE.finditer(done.stdout + done.stderr):
        why = m.group(3) or ""
        out[m.group(1)] = ("valid" if m.group(2) == "is OK" else
                           "unknown key" if why.startswith("unknown keyid") else "invalid")
    return out


@pytest.mark.parametrize("keys", [("a",), ("a", "b"), ("b",), ("a", "b", "e"), ("e",)])
def test_every_entry_agrees_with_evmctl(signed_list: tuple[Path, Path, Path, Path],
                                        keys: tuple[str, ...]) -> None:
    lst, a, b, e = signed_list
    certs = [{"a": a, "b": b, "e": e}[k] for k in keys]
    ours = {s.file_name: s.status.value for s in ima_sig.check_file(lst, list(certs))}
    theirs = _evmctl_verdicts(lst, certs)
    # evmctl prints nothing for an entry without a signature
    assert {k: v for k, v in ours.items() if v != "no signature"} == theirs
    expected = {
        "/good-a": "valid" if "a" in keys else "unknown key",
        "/good-a2": "valid" if "a" in keys else "unknown key",
        "/by-b": "valid" if "b" in keys else "unknown key",
        "/tampered": "invalid" if "a" in keys else "unknown key",
        "/other-file": "invalid" if "a" in keys else "unknown key",
        "/short": "invalid" if "a" in keys else "unknown key",  # evmctl: the key first
        "/ec": "valid" if "e" in keys else "unknown key",
        "/unsigned": "no signature",
    }
    assert ours == expected


def test_ima_check_key_cli(signed_list: tuple[Path, Path, Path, Path],
                           capsys: pytest.CaptureFixture[str]) -> None:
    lst, a, _, _ = signed_list
    code = main(["ima", "check", str(lst), "--key", str(a)])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    kid = f"{ima_sig.key_id(_load(a)):08x}"
    sigs = list(ima_sig.check_file(lst, [a]))
    offs = {s.file_name: s.offset for s in sigs}
    assert out[0] == (f"entry 1 at offset {offs['/good-a']:#x} (ima-sig) /good-a: signature "
                      f"valid (key {kid}; verified with {a})")
    assert out[3] == (f"entry 4 at offset {offs['/tampered']:#x} (ima-sig) /tampered: "
                      f"signature INVALID (key {kid}; the signature does not verify with {a})")
    sig_at = offs["/short"] + 4 + 20 + 4 + 7 + 4 + 4 + 40 + 4 + 7 + 4
    assert out[5] == (f"entry 6 at offset {offs['/short']:#x} (ima-sig) /short: signature "
                      f"INVALID (key {kid}; signature at offset {sig_at:#x}: sig_size 256 but "
                      "246 bytes follow the header)")
    assert out[-2:] == ["signatures: 2 valid, 3 invalid, 2 unknown key, 1 no signature, "
                        "0 not checked",
                        "FAILED: 9 entries, 0 violations, 0 template digest mismatches (sha1)"]
    code = main(["ima", "check", str(lst), "--key", str(a), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert (code, doc["ok"], len(doc["signatures"])) == (1, False, 8)
    assert doc["signatures"][0] == {
        "index": 1, "offset": offs["/good-a"], "template_name": "ima-sig",
        "file_name": "/good-a", "status": "valid", "key_id": kid, "key": str(a),
        "hash_algo": "sha256", "version": 2, "reason": None}


def _load(p: Path) -> x509.Certificate:
    return x509.load_der_x509_certificate(p.read_bytes())


def test_sigv3_signs_the_file_id(tmp_path: Path) -> None:
    """Version 3 (fs-verity, type 0x06): the signature is over the digest of the type byte,
    the hash algorithm number and the file digest. evmctl 1.4 cannot make these (no
    --veritysig), so the key signs here directly."""
    _, der, key = _key(tmp_path, "v3")
    assert isinstance(key, rsa.RSAPrivateKey)
    digest = hashlib.sha256(b"verity").digest()
    file_id = bytes([0x06, 4]) + digest
    raw = key.sign(hashlib.sha256(file_id).digest(), padding.PKCS1v15(),
                   utils.Prehashed(hashes.SHA256()))
    kid = ima_sig.key_id(_load(der))
    sig = struct.pack(">BBBIH", 0x06, 3, 4, kid, len(raw)) + raw
    d_ngv2 = b"verity:sha256:\0" + digest
    for name, s in (("/v3", sig), ("/v3-as-v2", sig[:1] + b"\x02" + sig[2:])):
        body = make_ima.entry(10, "ima-sigv2", [d_ngv2, make_ima.n_ng(name), s])
        (tmp_path / "l.bin").write_bytes(body)
        (got,) = ima_sig.check_file(tmp_path / "l.bin", [der])
        assert (got.status, got.version) == (
            (Status.VALID, 3) if name == "/v3" else (Status.INVALID, 2))


def test_corpus_lists_name_their_keys(corpus: Path) -> None:
    """The Fedora 40 boot signs 21 files with one key; the ibmtss template sampler names two
    ima-sig keys, one EVM portable signature's key and a modsig signer."""
    fedora = corpus / "ima/binary/ibmtss-31443b7-ima-sha1.log"
    got = Counter((s.status.value, s.key_id) for s in ima_sig.check_file(fedora, []))
    assert got == Counter({("no signature", None): 341, ("unknown key", "a3204a9e"): 21})
    sampler = corpus / "ima/binary/ibmtss-0ab80cc-imatest.log"
    got = Counter((s.template_name, s.status.value, s.key_id)
                  for s in ima_sig.check_file(sampler, []))
    assert got == Counter({
        ("ima-sig", "no signature", None): 1, ("ima-modsig", "no signature", None): 1,
        ("ima-sig", "unknown key", "6e6c1046"): 1, ("ima-sig", "unknown key", "f1f2ba3c"): 1,
        ("ima-sigv2", "no signature", None): 1, ("evm-sig", "unknown key", "78511c2a"): 1,
        ("ima-modsig", "unknown key", None): 1})
    (modsig,) = [s for s in ima_sig.check_file(sampler, [])
                 if s.template_name == "ima-modsig" and s.status == Status.UNKNOWN_KEY]
    assert (modsig.file_name, modsig.hash_algo, modsig.reason) == (
        "/boot/vmlinuz-6.1.6-200.fc37.x86_64", "sha256",
        "no given certificate is the modsig's signer (serial "
        "250b78a054442c431874fd0a7339e6f67bd3ab83 issued by CN=Subject) or its issuer")


@pytest.mark.parametrize(("sig", "status", "reason"), [
    (b"\x03\x02\x04", "invalid", "signature at offset {at:#x} is 3 bytes, shorter than its "
                                 "9-byte header"),
    (bytes.fromhex("0902040000000100001122"), "invalid",
     "signature at offset {at:#x}: type 0x09 version 2 is not an IMA digital signature (type "
     "0x03 or 0x06, version 2 or 3)"),
    (bytes.fromhex("050204000000000100") + bytes(256), "not checked",
     "an EVM portable signature (over the inode's xattrs and metadata), which an ima-sig "
     "entry does not record"),
], ids=["short-header", "wrong-type", "evm-portable"])
def test_malformed_signature_headers(tmp_path: Path, sig: bytes, status: str,
                                     reason: str) -> None:
    body = make_ima.entry(10, "ima-sig", [make_ima.d_ng("sha256", bytes(32)),
                                          make_ima.n_ng("/x"), sig])
    (tmp_path / "l.bin").write_bytes(body)
    (got,) = ima_sig.check_file(tmp_path / "l.bin", [])
    at = 4 + 20 + 4 + 7 + 4 + 4 + 40 + 4 + 3 + 4  # the sig field's data
    assert (got.status.value, got.reason) == (status, reason.format(at=at))


# --- ima-modsig: an appended module-style PKCS#7, checked against openssl cms -verify -----------

def _cms_sign(tmp: Path, key: Path, cert_der: Path, content: Path, *, attrs: bool) -> bytes:
    pem = tmp / (cert_der.stem + ".pem")
    pem.write_bytes(_load(cert_der).public_bytes(serialization.Encoding.PEM))
    out = tmp / "modsig.p7s"
    subprocess.run([need_tool("openssl"), "cms", "-sign", "-in", str(content), "-signer",
                    str(pem), "-inkey", str(key), "-binary", "-nocerts", "-outform", "DER",
                    "-out", str(out), "-md", "sha256", *([] if attrs else ["-noattr"])],
                   check=True, capture_output=True)
    return out.read_bytes()


def _cms_verify(tmp: Path, der: bytes, cert_der: Path, content: Path) -> bool:
    pem = tmp / (cert_der.stem + ".pem")
    pem.write_bytes(_load(cert_der).public_bytes(serialization.Encoding.PEM))
    sig = tmp / "check.p7s"
    sig.write_bytes(der)
    done = subprocess.run([need_tool("openssl"), "cms", "-verify", "-binary", "-inform", "DER",
                           "-in", str(sig), "-content", str(content), "-certfile", str(pem),
                           "-CAfile", str(pem), "-purpose", "any", "-out", "/dev/null"],
                          capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.parametrize(("case", "by_openssl", "status"), [
    ("good", True, "valid"),
    ("other-cert", False, "unknown key"),
    ("other-content", False, "invalid"),
    ("with-attributes", True, "invalid"),  # openssl takes them; a module signature may not
])
def test_modsig_agrees_with_openssl_cms(case: str, by_openssl: bool, status: str,
                                        tmp_path: Path) -> None:
    key, der, _ = _key(tmp_path, "mod")
    _, other, _ = _key(tmp_path, "other")
    module = tmp_path / "mod.ko"
    module.write_bytes(b"module body\n")
    modsig = _cms_sign(tmp_path, key, der, module, attrs=case == "with-attributes")
    content = module
    if case == "other-content":
        content = tmp_path / "other.ko"
        content.write_bytes(b"another body\n")
    cert = other if case == "other-cert" else der
    assert _cms_verify(tmp_path, modsig, cert, content) is by_openssl
    d_modsig = make_ima.d_ng("sha256", hashlib.sha256(content.read_bytes()).digest())
    body = make_ima.entry(10, "ima-modsig", [make_ima.d_ng("sha256", bytes(32)),
                                             make_ima.n_ng("/mod.ko"), b"", d_modsig, modsig])
    (tmp_path / "l.bin").write_bytes(body)
    (got,) = ima_sig.check_file(tmp_path / "l.bin", [cert])
    reason = {"valid": None,
              "unknown key": "no given certificate is the modsig's signer (serial 7 issued by "
                             "CN=ima mod) or its issuer",
              "invalid": (f"CN=ima mod ({cert}) matches the chain but its key does not verify "
                          "it" if case == "other-content" else
                          "a module signature with authenticated attributes (the kernel "
                          "refuses it)")}[status]
    assert (got.status.value, got.reason, got.key) == (
        status, reason, str(cert) if status == "valid" else None)


# --- evm-sig: EVM portable signatures evmctl writes on real files, against evmctl verify ------

#: the kernel's evm_config_default_xattrnames, in its order (SELinux, Smack, AppArmor, IMA, caps)
KERNEL_XATTRS = ("security.selinux", "security.SMACK64", "security.SMACK64EXEC",
                 "security.SMACK64TRANSMUTE", "security.SMACK64MMAP", "security.apparmor",
                 "security.ima", "security.capability")
#: vfs_cap_data revision 2, effective, permitted cap_net_raw (13)
CAP_NET_RAW = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)


def _xattr(file: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(file, name)
    except OSError as err:
        if err.errno != errno.ENODATA:
            raise
        return None


def _evm_fields(file: Path, endian: str = "<") -> list[bytes]:
    """The fields of the evm-sig entry a kernel measures for ``file`` (built independently of
    kimagekit): its security.evm, the protected xattrs it has in the kernel's order, its uid,
    gid and mode."""
    found = [(n, v) for n in KERNEL_XATTRS if (v := _xattr(file, n)) is not None]
    st = file.stat()
    u32 = struct.Struct(endian + "I")
    return [make_ima.d_ng("sha256", hashlib.sha256(file.read_bytes()).digest()),
            make_ima.n_ng("/" + file.name), _xattr(file, "security.evm") or b"",
            ("|".join(n for n, _ in found).encode() + b"\0") if found else b"",
            b"".join(u32.pack(len(v)) for _, v in found), b"".join(v for _, v in found),
            u32.pack(st.st_uid), u32.pack(st.st_gid), struct.pack(endian + "H", st.st_mode)]


def _evm_sign_file(key: Path, file: Path, *extra: str, algo: str = "sha256") -> None:
    subprocess.run([need_tool("evmctl"), "sign", "--imahash", "-a", algo, "--key", str(key),
                    *extra, str(file)], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def evm_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path, Path]:
    """Files evmctl signed (security.evm), some changed after signing, and an evm-sig list of
    them all; returns (directory, list, key A cert, key B cert, EC key cert)."""
    d = tmp_path_factory.mktemp("evmsig")
    a_key, a_der, _ = _key(d, "a")
    b_key, b_der, _ = _key(d, "b")
    e_key, e_der, _ = _key(d, "e", curve=True)
    probe = d / "probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "security.ima", b"\x04\x04" + bytes(32))
    except OSError as err:
        pytest.skip(f"no security.* xattrs on {d}: {err}")
    files = {n: d / n for n in ("valid", "labelled", "xattr-tampered", "mode-tampered",
                                "by-b", "ec", "sha1", "immutable", "m32", "unsigned")}
    for name, f in files.items():
        f.write_bytes(f"{name}\n".encode())
        f.chmod(0o644)
    labelled = files["labelled"]
    os.setxattr(labelled, "security.selinux", b"system_u:object_r:bin_t:s0\0")
    os.chown(labelled, 1234, 5678)
    labelled.chmod(0o750)
    os.setxattr(labelled, "security.capability", CAP_NET_RAW)  # after chown, which drops it
    for name in ("valid", "labelled", "xattr-tampered", "mode-tampered"):
        _evm_sign_file(a_key, files[name], "--portable")
    _evm_sign_file(b_key, files["by-b"], "--portable")
    _evm_sign_file(e_key, files["ec"], "--portable")
    _evm_sign_file(a_key, files["sha1"], "--portable", algo="sha1")
    _evm_sign_file(a_key, files["immutable"],
                   "--uuid=12345678-1234-1234-1234-123456789abc")
    _evm_sign_file(a_key, files["m32"], "--portable", "--m32")
    os.setxattr(files["xattr-tampered"], "security.ima",
                b"\x04\x04" + hashlib.sha256(b"other\n").digest())
    files["mode-tampered"].chmod(0o600)
    body = b"".join(make_ima.entry(10, "evm-sig", _evm_fields(f)) for f in files.values())
    (d / "list.bin").write_bytes(body)
    return d, d / "list.bin", a_der, b_der, e_der


def _evmctl_verify(file: Path, keys: list[Path]) -> str:
    done = subprocess.run([need_tool("evmctl"), "verify", "--key", ",".join(map(str, keys)),
                           str(file)], capture_output=True, text=True, check=False, timeout=60)
    if done.returncode == 0:
        return "valid"
    return "unknown key" if "unknown keyid" in done.stdout + done.stderr else "invalid"


@pytest.mark.parametrize("keys", [("a",), ("a", "b"), ("b",), ("a", "b", "e"), ("e",)])
def test_evm_sig_agrees_with_evmctl_verify(evm_files: tuple[Path, Path, Path, Path, Path],
                                           keys: tuple[str, ...]) -> None:
    d, lst, a, b, e = evm_files
    certs = [{"a": a, "b": b, "e": e}[k] for k in keys]
    got = {s.file_name: s for s in ima_sig.check_file(lst, list(certs))}
    ours = {name: s.status.value for name, s in got.items()}
    expected = {
        "/valid": "valid" if "a" in keys else "unknown key",
        "/labelled": "valid" if "a" in keys else "unknown key",
        "/xattr-tampered": "invalid" if "a" in keys else "unknown key",
        "/mode-tampered": "invalid" if "a" in keys else "unknown key",
        "/by-b": "valid" if "b" in keys else "unknown key",
        "/ec": "valid" if "e" in keys else "unknown key",
        "/sha1": "valid" if "a" in keys else "unknown key",
        "/immutable": "not checked",
        "/m32": "invalid" if "a" in keys else "unknown key",  # a 32-bit kernel's h_misc
        "/unsigned": "no signature",
    }
    assert ours == expected
    # evmctl verifies the files themselves; the immutable signature only it can check
    theirs = {f"/{f.name}": _evmctl_verify(f, certs) for f in d.iterdir()
              if f"/{f.name}" in expected and f.name not in ("immutable", "unsigned")}
    assert theirs == {k: v for k, v in expected.items() if k in theirs}
    assert got["/immutable"].reason == (
        "an immutable EVM signature (type 0x03), over the inode number and generation, which "
        "the list does not record")


def test_evm_sig_cli_lines(evm_files: tuple[Path, Path, Path, Path, Path],
                           capsys: pytest.CaptureFixture[str]) -> None:
    _, lst, a, _, _ = evm_files
    code = main(["ima", "check", str(lst), "--key", str(a)])
    out = capsys.readouterr().out.splitlines()
    kid = f"{ima_sig.key_id(_load(a)):08x}"
    offs = {s.file_name: s.offset for s in ima_sig.check_file(lst, [a])}
    assert code == 1
    assert out[1] == (f"entry 1 at offset {offs['/labelled']:#x} (evm-sig) /labelled: "
                      f"signature valid (key {kid}; verified with {a})")
    assert out[3] == (f"entry 3 at offset {offs['/mode-tampered']:#x} (evm-sig) "
                      f"/mode-tampered: signature INVALID (key {kid}; the signature does not "
                      f"verify with {a} over security.ima, uid 0, gid 0, mode 0o100600)")
    assert out[-2] == ("signatures: 3 valid, 3 invalid, 2 unknown key, 1 no signature, "
                       "1 not checked")


def _mutated(fields: list[bytes], case: str) -> list[bytes]:
    f = list(fields)
    if case == "lengths-count":
        f[4] = f[4][:-4]
    elif case == "lengths-sum":
        f[4] = struct.pack("<I", struct.unpack("<I", f[4])[0] + 1)
    elif case == "short-uid":
        f[6] = f[6][:2]
    elif case == "no-ima":
        f[3], f[4], f[5] = b"security.apparmor\0", struct.pack("<I", len(f[5])), f[5]
    elif case == "hmac":
        f[2] = b"\x02" + bytes(20)
    elif case == "wrong-type":
        f[2] = b"\x04" + f[2][1:]
    elif case in ("version-1", "version-3"):
        f[2] = f[2][:1] + bytes([int(case[-1])]) + f[2][2:]
    return f


@pytest.mark.parametrize(("case", "status", "reason"), [
    ("as-is", "valid", None),
    ("version-3", "valid", None),  # integrity_digsig_verify: 2 and 3 verify the same digest
    ("lengths-count", "invalid", "xattrlengths holds 0 bytes for 1 xattr names (4 bytes each)"),
    ("lengths-sum", "invalid", "xattrlengths add up to 35 bytes but xattrvalues holds 34"),
    ("short-uid", "invalid", "iuid holds 2 bytes, not 4"),
    ("no-ima", "invalid", "a portable EVM signature without security.ima in the xattrs (the "
                          "kernel refuses it)"),
    ("hmac", "not checked", "an EVM HMAC (type 0x02), keyed with the machine's EVM key"),
    ("wrong-type", "invalid", "signature at offset {at:#x}: type 0x04 version 2 is not an EVM "
                              "signature (type 0x05, 0x03 or 0x02; version 2 or 3)"),
    ("version-1", "invalid", "signature at offset {at:#x}: type 0x05 version 1 is not an EVM "
                             "signature (type 0x05, 0x03 or 0x02; version 2 or 3)"),
])
def test_evm_sig_fields_checked(evm_files: tuple[Path, Path, Path, Path, Path],
                                tmp_path: Path, case: str, status: str,
                                reason: str | None) -> None:
    d, _, a, _, _ = evm_files
    body = make_ima.entry(10, "evm-sig", _mutated(_evm_fields(d / "valid"), case))
    (tmp_path / "l.bin").write_bytes(body)
    (got,) = ima_sig.check_file(tmp_path / "l.bin", [a])
    at = 4 + 20 + 4 + 7 + 4 + 4 + 40 + 4 + 7 + 4  # the evmsig field's data
    assert (got.status.value, got.reason) == (
        status, None if reason is None else reason.format(at=at))


def test_evm_sig_big_endian_list(evm_files: tuple[Path, Path, Path, Path, Path],
                                 tmp_path: Path) -> None:
    """A big-endian kernel's list: lengths, uid, gid and mode (and its h_misc) big-endian; evmctl
    here hashes a little-endian h_misc, so the signature evmctl made is invalid there."""
    d, _, a, _, _ = evm_files
    (tmp_path / "l.bin").write_bytes(
        make_ima.entry(10, "evm-sig", _evm_fields(d / "valid", ">"), ">"))
    (got,) = ima_sig.check_file(tmp_path / "l.bin", [a])
    assert (got.status.value, got.reason) == (
        "invalid", f"the signature does not verify with {a} over security.ima, uid 0, gid 0, "
                   "mode 0o100644")


def test_corpus_evm_sig_entry_parsed(corpus: Path) -> None:
    """The ibmtss sampler's real evm-sig entry (its key is not available): the xattrs and inode
    metadata the signature covers, and the verdict with an unrelated key."""
    sampler = corpus / "ima/binary/ibmtss-0ab80cc-imatest.log"
    with ima_log.open_list(sampler) as (fmt, view):
        (entry,) = [e for e in ima_log.iter_entries(view, fmt) if e.template_name == "evm-sig"]
    got = evm_sig.evm_input(entry.fields, entry.endian)
    assert got == evm_sig.EvmInput(
        (("security.selinux", b"unconfined_u:object_r:unlabeled_t:s0\0"),
         ("security.ima", bytes.fromhex("0404672650050835777850b66645283ddbcc17305ba14d599e1b"
                                        "186d9d656eb9a85e"))), 0, 0, 0o100644)
    # the 24-byte h_misc spelled out: ino, generation, uid, gid all zero; mode; padding
    h_misc = bytes(20) + b"\xa4\x81" + bytes(2)
    assert evm_sig.portable_digest(got, "sha256", "<") == hashlib.sha256(
        b"".join(v for _, v in got.xattrs) + h_misc).digest()


def test_evm_sig_same_verdicts_from_the_ascii_list(evm_files: tuple[Path, Path, Path, Path, Path],
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The ASCII list (``ima show --ascii``) shows uid, gid and mode in decimal and the xattrs as
    text and hex; read back, every evm-sig entry gets the binary list's verdict."""
    _, lst, a, b, e = evm_files
    assert main(["ima", "show", "--ascii", str(lst)]) == 0
    text = tmp_path / "list.txt"
    text.write_text(capsys.readouterr().out)
    certs = [a, b, e]
    binary = [(s.file_name, s.status, s.reason) for s in ima_sig.check_file(lst, certs)]
    ascii_ = [(s.file_name, s.status, s.reason) for s in ima_sig.check_file(text, certs)]
    assert ascii_ == binary
    assert Counter(status.value for _, status, _ in binary) == Counter(
        {"valid": 5, "invalid": 3, "no signature": 1, "not checked": 1})
