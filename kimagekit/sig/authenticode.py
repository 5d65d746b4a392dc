"""A PE kernel's Authenticode signature checked as ``kexec_kernel_verify_pe_sig`` →
``verify_pefile_signature`` checks it: the first certificate entry's PKCS#7 (content type,
messageDigest, the signer's signature, the chain inside the message), its trust in the given
keys (``pkcs7_validate_trust``), then the image digest. bzImage, arm64 Image and EFI zboot are
all PE files here: the whole file is the image."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography import x509

from kimagekit.errors import KimageError
from kimagekit.formats import pe
from kimagekit.pe_file import has_pe
from kimagekit.sig import keys
from kimagekit.sig.keys import TrustedCert
from kimagekit.sig.pe_digest import HashLayout, first_signature, hash_layout, image_digest
from kimagekit.sig.pkcs7 import AuthenticodeData, SignerInfo, parse_authenticode

__all__ = [
    "ECDSA_ALGOS", "RSA_ALGOS", "SignatureSummary", "Trust", "Verification", "chain_in_message",
    "signer_cert", "summaries", "trust", "verify_buffer",
]

RSA_ALGOS = ("rsassa_pkcs1v15",)  # rsaEncryption: the one RSA form 6.1's pkcs7 parser takes
ECDSA_ALGOS = ("sha1_ecdsa", "sha224_ecdsa", "sha256_ecdsa", "sha384_ecdsa", "sha512_ecdsa")


@dataclass(frozen=True)
class SignatureSummary:
    """One certificate table entry, for ``inspect``: no trust anchor needed."""

    index: int
    offset: int
    used_by_kexec: bool  # the kernel reads the first entry only
    signer: str | None  # the signing certificate's subject
    issuer: str | None
    serial: str | None
    digest_algorithm: str | None
    signing_time: str | None
    image_digest: str | None
    image_digest_ok: bool | None
    signature_ok: bool | None  # the signer's signature over the content, with its own cert
    error: str | None


@dataclass(frozen=True)
class Verification:
    file: str
    verified: bool
    reason: str
    trusted_by: str | None  # the given certificate file the chain ends at
    trusted_subject: str | None
    signer: str | None
    image_digest_ok: bool | None
    signatures: int  # entries in the certificate table


def signer_cert(certs: tuple[x509.Certificate, ...], si: SignerInfo) -> x509.Certificate | None:
    """The message's certificate the signer info names (``pkcs7_find_key``)."""
    for c in certs:
        if si.issuer_der is not None and keys.cert_id(c) == (si.issuer_der, si.serial):
            return c
        if si.sid_key_id is not None and keys.skid(c) == si.sid_key_id:
            return c
    return None


def _signer_check(data: AuthenticodeData, si: SignerInfo,
                  cert: x509.Certificate | None) -> str | None:
    """``pkcs7_verify_one`` up to the chain: why it fails, or None."""
    if si.signed_attrs is not None:
        if si.message_digest != hashlib.new(si.digest_algorithm, data.content).digest():
            return "messageDigest does not match the signed content"
        signed = si.signed_attrs
    else:
        signed = data.content  # no authenticated attributes: the content itself is signed
    if si.signature_algorithm not in RSA_ALGOS + ECDSA_ALGOS:
        return f"signature algorithm {si.signature_algorithm} is not one the kernel takes"
    if cert is None:
        return None
    ok = keys.verify(cert, si.signature, signed, si.digest_algorithm)
    if ok is None:
        return "the signer's key type is not one the kernel takes"
    return None if ok else "the signature does not verify with the signer's certificate"


def chain_in_message(certs: tuple[x509.Certificate, ...],
                     cert: x509.Certificate) -> tuple[list[x509.Certificate], str | None]:
    """``pkcs7_verify_sig_chain``: issuers found in the message by the AuthorityKeyIdentifier,
    each link's signature checked; stops at a self-signed cert or one naming no issuer."""
    chain = [cert]
    while True:
        x = chain[-1]
        if x.issuer == x.subject and keys.verify_issued(x, x):
            return chain, None
        by_name, key_id = keys.akid(x)
        parent = next((p for p in certs
                       if (by_name is not None and keys.cert_id(p) == by_name)
                       or (key_id is not None and keys.skid(p) == key_id)), None)
        if parent is None or parent in chain:
            return chain, None
        if not keys.verify_issued(x, parent):
            return chain, (f"certificate {x.subject.rfc4514_string()} does not verify with its "
                           f"issuer {parent.subject.rfc4514_string()} in the signature")
        chain.append(parent)


def _find(trusted: tuple[TrustedCert, ...], by_id: tuple[bytes, int] | None,
          key_id: bytes | None) -> TrustedCert | None:
    for t in trusted:
        if (by_id is not None and keys.cert_id(t.cert) == by_id) or \
                (key_id is not None and keys.skid(t.cert) == key_id):
            return t
    return None


@dataclass(frozen=True)
class Trust:
    key: TrustedCert | None  # the given certificate that verified the chain
    rejected: bool  # a given certificate matched but its key refused: -EKEYREJECTED
    reason: str


def trust(si: SignerInfo, chain: list[x509.Certificate], signed: bytes,
          trusted: tuple[TrustedCert, ...], prehashed: bool = False) -> Trust:
    """``pkcs7_validate_trust_one``: the first certificate of the chain that is in the keyring
    (by issuer+serial or key id) must verify the signature below it; else the key that signed
    the chain's last certificate; else a key matching the signer info directly. ``signed``
    is what the signer info signs (its digest when ``prehashed``)."""
    below = (si.signature, signed, si.digest_algorithm, prehashed)
    for x in chain:
        t = _find(trusted, keys.cert_id(x), keys.skid(x))
        if t is not None:
            return _matched(t, below)
        if x.issuer == x.subject and keys.verify_issued(x, x):
            return Trust(None, False, f"the chain ends at the self-signed "
                          f"{x.subject.rfc4514_string()}, which is not among the given "
                          "certificates")
        below = (x.signature, x.tbs_certificate_bytes, keys.signature_digest(x), False)
    if chain:
        by_name, key_id = keys.akid(chain[-1])
        t = _find(trusted, by_name, key_id)
        if t is not None:
            return _matched(t, below)
    if si.issuer_der is not None and si.serial is not None:
        t = _find(trusted, (si.issuer_der, si.serial), None)
        if t is not None:
            return _matched(t, (si.signature, signed, si.digest_algorithm, prehashed))
    return Trust(None, False, "no certificate of the chain is among the given certificates, "
                  "nor its issuer")


def _matched(t: TrustedCert, below: tuple[bytes, bytes, str, bool]) -> Trust:
    sig, data, digest, prehashed = below
    if keys.verify(t.cert, sig, data, digest, prehashed=prehashed):
        return Trust(t, False, f"chains to {t.subject} ({t.path})")
    return Trust(None, True, f"{t.subject} ({t.path}) matches the chain but its key does not "
                  "verify it")


def verify_buffer(buf: bytes | memoryview, trusted: tuple[TrustedCert, ...],
                  name: str = "") -> Verification:
    """Verified only if every step the kernel takes passes; a malformed PE or signature raises
    (``ParseError``), a well-formed one that fails is ``verified=False`` with the reason."""
    if not has_pe(buf):
        return Verification(name, False, "not signed (no PE header)", None, None, None, None, 0)
    layout = hash_layout(buf)
    first = first_signature(buf, layout)
    count = len(_entries(buf, layout.cert_table))
    if first is None:
        return Verification(name, False, "not signed (no certificate table)", None, None, None,
                            None, 0)
    data = parse_authenticode(first.der, first.der_offset)
    ok_digest = image_digest(buf, layout, data.image_digest_algorithm) == data.image_digest
    signer_name: str | None = None
    trusted_by: TrustedCert | None = None
    reason = ""
    for si in data.signers:
        cert = signer_cert(data.certificates, si)
        if cert is not None and signer_name is None:
            signer_name = cert.subject.rfc4514_string()
        problem = _signer_check(data, si, cert)
        chain: list[x509.Certificate] = []
        if problem is None and cert is not None:
            chain, problem = chain_in_message(data.certificates, cert)
        if problem is not None:
            return Verification(name, False, problem, None, None, signer_name, ok_digest, count)
        signed = si.signed_attrs if si.signed_attrs is not None else data.content
        found = trust(si, chain, signed, trusted)
        if found.rejected:
            return Verification(name, False, found.reason, None, None, signer_name, ok_digest,
                                count)
        if found.key is not None and trusted_by is None:
            trusted_by, reason = found.key, found.reason
        elif trusted_by is None and not reason:
            reason = found.reason
    if trusted_by is None:
        return Verification(name, False, reason, None, None, signer_name, ok_digest, count)
    if not ok_digest:
        return Verification(name, False, "the image digest does not match the signed one "
                            f"({data.image_digest_algorithm})", None, None, signer_name,
                            ok_digest, count)
    return Verification(name, True, reason, trusted_by.path, trusted_by.subject, signer_name,
                        True, count)


def _entries(buf: bytes | memoryview, table: tuple[int, int] | None) -> list[tuple[int, int]]:
    """(offset, dwLength) of each entry, walked as the PE specification aligns them."""
    if table is None:
        return []
    at, end = table[0], table[0] + table[1]
    out = []
    while at + pe.WIN_CERTIFICATE_SIZE <= end:
        (length,) = struct.unpack_from("<I", buf, at)
        if length < pe.WIN_CERTIFICATE_SIZE or at + length > end:
            break
        out.append((at, length))
        at += (length + 7) // 8 * 8
    return out


def summaries(buf: bytes | memoryview) -> tuple[SignatureSummary, ...]:
    """Each PKCS#7 entry of the table described; a malformed one carries its error."""
    try:
        layout = hash_layout(buf)
    except KimageError as err:
        return (SignatureSummary(0, 0, False, None, None, None, None, None, None, None, None,
                                 str(err)),)
    out = []
    for i, (at, length) in enumerate(_entries(buf, layout.cert_table)):
        (ctype,) = struct.unpack_from("<H", buf, at + 6)
        if ctype != pe.WIN_CERT_TYPE_PKCS_SIGNED_DATA:
            continue
        out.append(_summary(buf, layout, i, at, length))
    return tuple(out)


def _summary(buf: bytes | memoryview, layout: HashLayout, i: int, at: int,
             length: int) -> SignatureSummary:
    der_at = at + pe.WIN_CERTIFICATE_SIZE
    try:
        der = bytes(buf[der_at:at + length])
        data = parse_authenticode(_trim(der), der_at)
    except KimageError as err:
        return SignatureSummary(i, at, i == 0, None, None, None, None, None, None, None, None,
                                str(err))
    si = data.signers[0]
    cert = signer_cert(data.certificates, si)
    ok = image_digest(buf, layout, data.image_digest_algorithm) == data.image_digest
    return SignatureSummary(
        i, at, i == 0, cert.subject.rfc4514_string() if cert else None,
        cert.issuer.rfc4514_string() if cert else si.issuer,
        None if si.serial is None else f"{si.serial:x}", data.image_digest_algorithm,
        si.signing_time.isoformat() if si.signing_time else None, data.image_digest.hex(), ok,
        _signer_check(data, si, cert) is None and cert is not None, None)


def _trim(der: bytes) -> bytes:
    """The DER element without the entry's alignment padding."""
    if len(der) >= 4 and der[0] == 0x30 and der[1] == 0x82:
        return der[:(der[2] << 8 | der[3]) + 4]
    if len(der) >= 3 and der[0] == 0x30 and der[1] == 0x81:
        return der[:der[2] + 3]
    if len(der) >= 2 and der[0] == 0x30 and der[1] < 0x80:
        return der[:der[1] + 2]
    return der
