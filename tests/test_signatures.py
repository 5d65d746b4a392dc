"""Authenticode signatures of PE kernels: kimagekit's verdict against sbverify's on kernels that
sbsign signed with keys generated here, corrupt signatures refused in one line, and the real
Debian kernel's signature described."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import debian_artifact, need_tool
from kernel_helpers import kgen
from sig_helpers import Pki, make_pki, sbsign, sbverify

from kimagekit.cli import main
from kimagekit.errors import ParseError
from kimagekit.sig import authenticode
from kimagekit.sig.keys import load_certs
from kimagekit.sig.pe_digest import hash_layout, image_digest

CERT_DIRENT = 0x58 + 112 + 4 * 8  # make_kernels' PE32+ header: the SECURITY data directory
CHECKSUM = 0x58 + 64


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    need_tool("sbsign")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def signed(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("signed")
    (d / "plain.efi").write_bytes(kgen.make_bzimage(pe=True))
    return sbsign(pki.signer_key, pki.signer, d / "plain.efi", d / "signed.efi")


def _variant(src: Path, name: str, edit: object) -> Path:
    data = bytearray(src.read_bytes())
    assert callable(edit)
    edit(data)
    out = src.with_name(name)
    out.write_bytes(data)
    return out


def _flip_text(d: bytearray) -> None:
    d[0x900] ^= 1  # inside .text (raw data from 0x200)


def _flip_checksum(d: bytearray) -> None:
    d[CHECKSUM] ^= 0x5A


def _grow_table(d: bytearray) -> None:
    """8 more bytes in the certificate table: its data directory entry is not hashed."""
    at, size = struct.unpack_from("<II", d, CERT_DIRENT)
    struct.pack_into("<II", d, CERT_DIRENT, at, size + 8)
    d += bytes(8)


CASES = {
    # name: (edit, which cert, verified)
    "good-ca": (None, "ca", True),
    "good-signer": (None, "signer", True),
    "wrong-cert": (None, "other", False),
    "hashed-byte": (_flip_text, "ca", False),
    "checksum-byte": (_flip_checksum, "ca", True),
    "table-entry-size": (_grow_table, "ca", True),
}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.parametrize("case", sorted(CASES))
def test_verify_signature_agrees_with_sbverify(case: str, pki: Pki, signed: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    edit, which, expected = CASES[case]
    image = signed if edit is None else _variant(signed, f"{case}.efi", edit)
    cert = {"ca": pki.ca, "signer": pki.signer, "other": pki.other}[which]
    assert sbverify(cert, image) is expected
    code, out, err = _run(["verify-signature", str(image), "--cert", str(cert)], capsys)
    assert (code, err) == (0 if expected else 1, "")
    subject = {"ca": "CN=kimagekit test CA", "signer": "CN=kimagekit test signer"}.get(which)
    if expected:
        assert out == (f"{image}: verified: chains to {subject} ({cert}) "
                       "(signer CN=kimagekit test signer)\n")
    elif case == "wrong-cert":
        assert out == (f"{image}: NOT VERIFIED: no certificate of the chain is among the given "
                       "certificates, nor its issuer (signer CN=kimagekit test signer)\n")
    else:
        assert out == (f"{image}: NOT VERIFIED: the image digest does not match the signed one "
                       "(sha256) (signer CN=kimagekit test signer)\n")


def test_two_signatures_only_the_first_counts(pki: Pki, signed: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A second sbsign appends a second entry. The kernel (since the 2023 wrapper-length fix)
    checks the first one only; sbverify takes any entry that verifies, so the two agree on the
    first signer's chain and differ, by design, on the second's: kimagekit says what kexec does."""
    twice = sbsign(pki.other_key, pki.other, signed, signed.with_name("twice.efi"))
    summary = authenticode.summaries(twice.read_bytes())
    assert [(s.index, s.signer, s.used_by_kexec, s.image_digest_ok) for s in summary] == [
        (0, "CN=kimagekit test signer", True, True), (1, "CN=kimagekit other", False, True)]
    for cert, by_sbverify, by_kexec in ((pki.ca, True, True), (pki.other, True, False),
                                        (pki.signer.with_name("none.pem"), None, None)):
        if by_sbverify is None:
            continue
        assert sbverify(cert, twice) is by_sbverify
        code, _, err = _run(["verify-signature", str(twice), "--cert", str(cert)], capsys)
        assert (code, err) == (0 if by_kexec else 1, "")


def test_truncated_certificate_table_is_refused_in_one_line(
        pki: Pki, signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = signed.read_bytes()
    at, size = struct.unpack_from("<II", data, CERT_DIRENT)
    cut = signed.with_name("cut.efi")
    cut.write_bytes(data[:at + size // 2])
    assert sbverify(pki.ca, cut) is False
    code, out, err = _run(["verify-signature", str(cut), "--cert", str(pki.ca)], capsys)
    assert (code, out) == (2, "")
    assert err == (f"kimagekit: error: {cut}: pe: DataDirectory[SECURITY] at offset "
                   f"{CERT_DIRENT:#x}: certificate table ({size} bytes at {at:#x}) is not "
                   "inside the file after the headers\n")


def _resign_blob(signed: Path, name: str, edit: object) -> tuple[Path, int]:
    """``signed`` with its PKCS#7 blob edited in place (the entry keeps its length)."""
    data = bytearray(signed.read_bytes())
    at, _ = struct.unpack_from("<II", data, CERT_DIRENT)
    assert callable(edit)
    edit(data, at + 8)
    out = signed.with_name(name)
    out.write_bytes(data)
    return out, at + 8


def test_wrong_content_oid_is_refused(pki: Pki, signed: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    def edit(d: bytearray, der: int) -> None:
        oid = bytes.fromhex("2b060104018237020104")  # 1.3.6.1.4.1.311.2.1.4
        i = d.index(oid, der)
        d[i + len(oid) - 1] = 0x05  # ...2.1.5
    bad, der = _resign_blob(signed, "oid.efi", edit)
    # sbverify does not look at the content type (messageDigest does not cover it); the kernel
    # refuses anything but SpcIndirectDataContent for a kexec image: kimagekit does as it does
    assert sbverify(pki.ca, bad) is True
    code, out, err = _run(["verify-signature", str(bad), "--cert", str(pki.ca)], capsys)
    assert (code, out) == (2, "")
    assert err == (f"kimagekit: error: {bad}: pkcs7: SignedData.encapContentInfo.contentType "
                   f"at offset {der:#x}: signed content type 1.3.6.1.4.1.311.2.1.5 is not "
                   "SpcIndirectDataContent (1.3.6.1.4.1.311.2.1.4)\n")


def test_absurd_pkcs7_length_is_refused(pki: Pki, signed: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    def edit(d: bytearray, der: int) -> None:
        d[der + 1:der + 4] = b"\x82\xff\xff"
    bad, der = _resign_blob(signed, "len.efi", edit)
    code, out, err = _run(["verify-signature", str(bad), "--cert", str(pki.ca)], capsys)
    assert (code, out) == (2, "")
    entry = struct.unpack_from("<I", bad.read_bytes(), der - 8)[0]
    assert err == (f"kimagekit: error: {bad}: pe: certificate[0].pkcs7 at offset "
                   f"{der + 1:#x}: PKCS#7 length 65539 runs past its certificate entry "
                   f"({entry - 8} bytes)\n")


def test_truncated_pkcs7_is_refused(pki: Pki, signed: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The DER header claims fewer bytes than the structure needs: asn1crypto's complaint, at
    the PKCS#7's offset."""
    def edit(d: bytearray, der: int) -> None:
        (n,) = struct.unpack_from(">H", d, der + 2)
        struct.pack_into(">H", d, der + 2, n - 200)
    bad, der = _resign_blob(signed, "trunc.efi", edit)
    assert sbverify(pki.ca, bad) is False
    code, out, err = _run(["verify-signature", str(bad), "--cert", str(pki.ca)], capsys)
    assert (code, out) == (2, "")
    # the outer SEQUENCE was cut by 200 bytes; its [0] content (after the 11-byte OID and its
    # own 4-byte header) still claims the old length
    (n,) = struct.unpack_from(">H", signed.read_bytes(), der + 2)
    assert err == (f"kimagekit: error: {bad}: pkcs7: ContentInfo at offset {der:#x}: "
                   f"Insufficient data - {n - 15} bytes requested but only {n - 215} "
                   "available\n")


def test_unsigned_kernel_is_not_verified(pki: Pki, signed: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    plain = signed.with_name("plain.efi")
    code, out, err = _run(["verify-signature", str(plain), "--cert", str(pki.ca), "--json"],
                          capsys)
    assert (code, err) == (1, "")
    assert json.loads(out) == {"file": str(plain), "verified": False,
                               "reason": "not signed (no certificate table)",
                               "trusted_by": None, "trusted_subject": None, "signer": None,
                               "image_digest_ok": None, "signatures": 0}


def test_keyring_directory_says_which_cert(pki: Pki, signed: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    ring = signed.parent / "ring"
    ring.mkdir(exist_ok=True)
    for cert in (pki.other, pki.ca):
        (ring / cert.name).write_bytes(cert.read_bytes())
    code, out, err = _run(["verify-signature", str(signed), "--keyring", str(ring), "--json"],
                          capsys)
    assert (code, err) == (0, "")
    got = json.loads(out)
    assert (got["verified"], got["trusted_by"], got["trusted_subject"]) == (
        True, str(ring / "ca.pem"), "CN=kimagekit test CA")


def test_no_trust_anchor_is_a_usage_error(signed: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["verify-signature", str(signed)], capsys)
    assert (code, out, err) == (2, "", "kimagekit: error: give --cert CERT (repeatable) or "
                                "--keyring DIR\n")


def test_image_digest_regions_follow_verify_pefile(signed: Path) -> None:
    """Headers without CheckSum and the SECURITY entry, the one section, no certificate."""
    data = signed.read_bytes()
    layout = hash_layout(data)
    at, size = struct.unpack_from("<II", data, CERT_DIRENT)
    assert layout.ranges == ((0, CHECKSUM), (CHECKSUM + 4, CERT_DIRENT - CHECKSUM - 4),
                             (CERT_DIRENT + 8, 0x200 - CERT_DIRENT - 8), (0x200, at - 0x200),
                             (at, 0))
    assert layout.cert_table == (at, size)
    assert len(data) == at + size
    (s,) = authenticode.summaries(data)
    assert image_digest(data, layout, "sha256").hex() == s.image_digest


def test_debian_kernel_signed_by_debian(capsys: pytest.CaptureFixture[str]) -> None:
    vmlinuz = debian_artifact("amd64-vmlinuz")
    (s,) = authenticode.summaries(vmlinuz.read_bytes())
    assert (s.signer, s.issuer, s.digest_algorithm, s.image_digest_ok, s.signature_ok) == (
        "CN=Debian Secure Boot Signer 2022 - linux", "CN=Debian Secure Boot CA", "sha256",
        True, True)
    code, out, _ = _run(["inspect", str(vmlinuz), "--json"], capsys)
    assert code == 0
    sigs = json.loads(out)["summary"]["pe"]["signatures"]
    assert [(x["signer"], x["image_digest_ok"]) for x in sigs] == [
        ("CN=Debian Secure Boot Signer 2022 - linux", True)]


def test_debian_kernel_resigned_agrees_with_sbverify(pki: Pki, tmp_path: Path) -> None:
    vmlinuz = debian_artifact("amd64-vmlinuz")
    need_tool("sbattach")
    bare = tmp_path / "bare.efi"
    bare.write_bytes(vmlinuz.read_bytes())
    subprocess.run(["sbattach", "--remove", str(bare)], check=True, capture_output=True)
    ours = sbsign(pki.signer_key, pki.signer, bare, tmp_path / "ours.efi")
    for cert, expected in ((pki.ca, True), (pki.other, False)):
        assert sbverify(cert, ours) is expected
        got = authenticode.verify_buffer(ours.read_bytes(), load_certs([cert]))
        assert got.verified is expected


def _debian_ca(tmp: Path) -> Path:
    """Debian's Secure Boot CA, as shim-signed embeds it: the .vendor_cert section starts with
    shim's cert table (authority size, deauthority size, authority offset, deauthority offset)."""
    shim = debian_artifact("amd64-shim")
    need_tool("objcopy")
    section = tmp / "vendor_cert.bin"
    subprocess.run(["objcopy", "-O", "binary", "--only-section=.vendor_cert", str(shim),
                    str(section)], check=True, capture_output=True)
    blob = section.read_bytes()
    size, _, at, _ = struct.unpack_from("<IIII", blob, 0)
    der = blob[at:at + size]
    pem = tmp / "debian-ca.pem"
    pem.write_bytes(b"-----BEGIN CERTIFICATE-----\n"
                    + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n")
    return pem


def test_debian_kernel_chains_to_debian_ca_from_shim(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vmlinuz = debian_artifact("amd64-vmlinuz")
    ca = _debian_ca(tmp_path)
    assert sbverify(ca, vmlinuz) is True
    code, out, err = _run(["verify-signature", str(vmlinuz), "--cert", str(ca)], capsys)
    assert (code, err) == (0, "")
    assert out == (f"{vmlinuz}: verified: chains to CN=Debian Secure Boot CA ({ca}) "
                   "(signer CN=Debian Secure Boot Signer 2022 - linux)\n")


KINDS = {"bzImage": lambda: kgen.make_bzimage(pe=True),
         "arm64 Image": lambda: kgen.make_arm64_image(pe=True),
         "arm64 zboot": lambda: kgen.make_zboot(pe=True)}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_pe_kernel_kind_agrees_with_sbverify(kind: str, pki: Pki, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """bzImage, arm64 Image and EFI zboot (its outer PE): good, wrong cert, a hashed byte."""
    plain = tmp_path / "plain.efi"
    plain.write_bytes(KINDS[kind]())
    image = sbsign(pki.signer_key, pki.signer, plain, tmp_path / "signed.efi")
    code, out, _ = _run(["inspect", str(image), "--json"], capsys)
    found = json.loads(out)
    pe_info = found["summary"]["pe"]
    assert (code, found["format"], pe_info["signed"]) == (0, kind, True)
    assert [(s["signer"], s["issuer"], s["image_digest_ok"], s["signature_ok"])
            for s in pe_info["signatures"]] == [
        ("CN=kimagekit test signer", "CN=kimagekit test CA", True, True)]
    flipped = _variant(image, "flipped.efi", _flip_section)
    for path, cert, expected in ((image, pki.ca, True), (image, pki.other, False),
                                 (flipped, pki.ca, False)):
        assert sbverify(cert, path) is expected
        code, _, err = _run(["verify-signature", str(path), "--cert", str(cert)], capsys)
        assert (code, err) == (0 if expected else 1, "")


def _flip_section(d: bytearray) -> None:
    d[0x210] ^= 0xFF  # inside .text for every kind (raw data from 0x200)


# --- build --require-signature -------------------------------------------------------------------

def _build(kernel: Path, out: Path, *extra: str) -> list[str]:
    from conftest import corpus_dir
    from image_helpers import PURGATORY_CORPUS
    c = corpus_dir()
    if c is None:
        pytest.skip("real-file corpus not found")
    return ["build", "--arch", "x86_64", "--kernel", str(kernel), "--purgatory",
            str(c / PURGATORY_CORPUS), "-o", str(out), *extra]


def test_build_require_signature_accepts_a_verified_kernel(
        pki: Pki, signed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.img"
    code, _, err = _run(_build(signed, out, "--require-signature", str(pki.ca)), capsys)
    assert (code, err) == (0, "")
    assert out.exists()


def test_build_require_signature_with_a_keyring_directory(
        pki: Pki, signed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ring = tmp_path / "ring"
    ring.mkdir()
    (ring / "ca.pem").write_bytes(pki.ca.read_bytes())
    code, _, err = _run(_build(signed, tmp_path / "x.img", "--require-signature", str(ring)),
                        capsys)
    assert (code, err) == (0, "")


@pytest.mark.parametrize("case", ["wrong-cert", "hashed-byte", "unsigned"])
def test_build_require_signature_refuses_as_kexec_sig_force(
        case: str, pki: Pki, signed: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    kernel = {"wrong-cert": signed, "unsigned": signed.with_name("plain.efi"),
              "hashed-byte": _variant(signed, "b-hashed.efi", _flip_text)}[case]
    cert = pki.other if case == "wrong-cert" else pki.ca
    out = tmp_path / "x.img"
    code, stdout, err = _run(_build(kernel, out, "--require-signature", str(cert)), capsys)
    why = {"wrong-cert": "no certificate of the chain is among the given certificates, nor "
                         "its issuer",
           "unsigned": "not signed (no certificate table)",
           "hashed-byte": "the image digest does not match the signed one (sha256)"}[case]
    assert (code, stdout, out.exists()) == (2, "", False)
    assert err == (f"kimagekit: error: {kernel}: kexec-sig: kernel: signature not verified "
                   f"(KEXEC_SIG_FORCE would refuse it): {why}\n")


@pytest.mark.parametrize("case", ["unsigned", "no-pe", "hashed-byte", "signed"])
def test_build_without_require_warns_like_kexec_sig(
        case: str, signed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if case == "no-pe":
        kernel = tmp_path / "bzImage"
        kernel.write_bytes(kgen.make_bzimage())
    else:
        kernel = {"unsigned": signed.with_name("plain.efi"), "signed": signed,
                  "hashed-byte": _variant(signed, "w-hashed.efi", _flip_text)}[case]
    code, _, err = _run(_build(kernel, tmp_path / "x.img"), capsys)
    warning = {"unsigned": "not signed (no certificate table): a KEXEC_SIG_FORCE kernel "
                           "refuses it",
               "no-pe": "not signed (no PE header): a KEXEC_SIG_FORCE kernel refuses it",
               "hashed-byte": "the image digest does not match the signature: a "
                              "KEXEC_SIG_FORCE kernel refuses it"}.get(case)
    assert code == 0
    assert err == ("" if warning is None else f"kimagekit: warning: {kernel}: {warning}\n")


def test_build_require_signature_is_x86_only(pki: Pki, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["build", "--arch", "ppc64le", "--no-purgatory",
                         "--kernel", str(tmp_path / "v"),
                         "--dtb", str(tmp_path / "d"), "-o", str(tmp_path / "o"),
                         "--require-signature", str(pki.ca)], capsys)
    assert (code, err) == (2, "kimagekit: error: --require-signature checks PE kernels "
                           "(x86_64): a ppc64 vmlinux carries no Authenticode signature\n")


# --- signatures sbsign cannot make (testdata/make_signed.py signs without it) --------------------

def _make_signed() -> Any:
    import importlib.util
    path = Path(__file__).resolve().parent.parent / "testdata" / "make_signed.py"
    spec = importlib.util.spec_from_file_location("make_signed", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ms = _make_signed()


def _pem(tmp: Path, name: str, cert: Any) -> Path:
    from cryptography.hazmat.primitives import serialization
    path = tmp / name
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize(("case", "by_sbverify", "by_kexec"), [
    ("ecdsa", True, True),
    ("no-attributes", True, True),
    ("sha384", False, True),  # sbverify hashes images with SHA-256 only
    ("intermediate-in-message", True, True),
    ("no-key-identifiers", True, False),  # the kernel finds issuers by AKID only
])
def test_make_signed_cases(case: str, by_sbverify: bool, by_kexec: bool, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    need_tool("sbverify")
    k = ms.test_keys()
    plain = kgen.make_bzimage(pe=True)
    root = k.ca_cert
    if case == "ecdsa":
        signed_pe = ms.sign_pe(plain, k.ec_key, k.ec_cert)
    elif case == "no-attributes":
        signed_pe = ms.sign_pe(plain, k.rsa_key, k.rsa_cert, attributes=False)
    elif case == "sha384":
        signed_pe = ms.sign_pe(plain, k.ec_key, k.ec_cert, digest="sha384")
    elif case == "intermediate-in-message":
        # root -> intermediate (carried in the message) -> signer; only the root is given
        mid = ms.make_cert("intermediate", k.rsa_key, (k.ca_cert, k.ca_key), 10, ca=True)
        leaf = ms.make_cert("leaf", k.ec_key, (mid, k.rsa_key), 11)
        signed_pe = ms.sign_pe(plain, k.ec_key, leaf, extra_certs=(mid,))
    else:
        leaf = ms.make_cert("no ids", k.ec_key, (k.ca_cert, k.ca_key), 12, key_ids=False)
        signed_pe = ms.sign_pe(plain, k.ec_key, leaf)
    image = tmp_path / f"{case}.efi"
    image.write_bytes(signed_pe)
    ca = _pem(tmp_path, "ca.pem", root)
    assert sbverify(ca, image) is by_sbverify
    code, out, err = _run(["verify-signature", str(image), "--cert", str(ca)], capsys)
    assert (code, err) == (0 if by_kexec else 1, "")
    if by_kexec:
        assert out.startswith(f"{image}: verified: chains to CN=make_signed CA ({ca}) ")
    else:
        assert out == (f"{image}: NOT VERIFIED: no certificate of the chain is among the given "
                       "certificates, nor its issuer (signer CN=no ids)\n")


def test_inspect_text_lines(signed: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    (s,) = authenticode.summaries(signed.read_bytes())
    code, out, _ = _run(["inspect", str(signed)], capsys)
    assert code == 0
    assert (f"    signature 0 at {s.offset:#x} (the one kexec checks): signer CN=kimagekit test "
            f"signer, issuer CN=kimagekit test CA, serial 2, sha256, signing time "
            f"{s.signing_time}; image digest matches the file") in out.splitlines()
    filler = tmp_path / "filler.efi"  # make_kernels' placeholder blob: not a PKCS#7
    filler.write_bytes(kgen.make_bzimage(pe=True, signed=True))
    code, out, _ = _run(["inspect", str(filler)], capsys)
    assert code == 0
    assert ("    signature 0 at 0xf80: unreadable: pkcs7: ContentInfo at offset 0xf88: "
            "Insufficient data - 1 bytes requested but only 0 available") in out.splitlines()


def test_a_key_given_as_certificate_is_a_usage_error(pki: Pki, signed: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["verify-signature", str(signed), "--cert", str(pki.signer_key)],
                          capsys)
    assert (code, out, err) == (2, "", f"kimagekit: error: {pki.signer_key}: not an X.509 "
                                "certificate (PEM or DER)\n")
    code, out, err = _run(["verify-signature", str(signed), "--keyring", str(pki.ca)], capsys)
    assert (code, out, err) == (2, "", f"kimagekit: error: --keyring {pki.ca}: not a "
                                "directory\n")


def test_build_debian_kernel_with_debian_ca_required(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vmlinuz = debian_artifact("amd64-vmlinuz")
    ca = _debian_ca(tmp_path)
    out = tmp_path / "deb.img"
    code, stdout, err = _run(["build", "--arch", "x86_64", "--kernel", str(vmlinuz),
                              "--purgatory-from", str(vmlinuz), "--no-ima-kexec", "-o",
                              str(out), "--require-signature", str(ca), "--json"], capsys)
    assert (code, err) == (0, "")
    result = json.loads(stdout)["result"]
    assert (result["output"], result["signature_warning"]) == (str(out), None)


@pytest.mark.parametrize(("rel", "field", "word"), [(16, "SizeOfRawData", "runs"),
                                                    (20, "PointerToRawData", "starts")])
def test_section_past_the_file_names_its_header(signed: Path, rel: int, field: str,
                                                word: str) -> None:
    """A section whose raw data lies past the file is refused naming the header field (and its
    offset) that says so, as the kernel's pefile_digest_pe_contents would fail."""
    d = bytearray(signed.read_bytes())
    lfanew = struct.unpack_from("<I", d, 0x3C)[0]
    opt_size = struct.unpack_from("<H", d, lfanew + 20)[0]
    h = lfanew + 24 + opt_size  # the first section header
    name = d[h:h + 8].rstrip(b"\0").decode()
    size, at = struct.unpack_from("<II", d, h + 16)
    struct.pack_into("<I", d, h + rel, 0x7FFFFFF0)
    size, at = (0x7FFFFFF0, at) if rel == 16 else (size, 0x7FFFFFF0)
    with pytest.raises(ParseError) as err:
        hash_layout(bytes(d))
    assert str(err.value) == (f"pe: section[{name}].{field} at offset {h + rel:#x}: section "
                              f"{name!r} ({size} bytes at {at:#x}) {word} past the end of the "
                              "file")
