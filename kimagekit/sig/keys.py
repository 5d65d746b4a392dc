"""The offline keyring: X.509 certificates given as files (PEM, several per file, or DER) or a
directory of them, and the signature checks ``cryptography`` does for the kernel's
``public_key_verify_signature`` (RSA PKCS#1 v1.5 and ECDSA; 6.1 takes no RSA-PSS)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import SignatureAlgorithmOID

from kimagekit.errors import UsageError

__all__ = [
    "HASHES", "Pathish", "TrustedCert", "akid", "cert_id", "load_certs", "signature_digest",
    "skid", "verify", "verify_issued",
]

Pathish = str | os.PathLike[str]
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512}


@dataclass(frozen=True)
class TrustedCert:
    path: str
    cert: x509.Certificate

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()


def load_certs(files: list[Pathish], directory: Pathish | None = None) -> tuple[TrustedCert, ...]:
    """Every certificate of ``files``, then of each regular file in ``directory`` (by name)."""
    paths = [Path(f) for f in files]
    if directory is not None:
        d = Path(directory)
        if not d.is_dir():
            raise UsageError(f"--keyring {d}: not a directory")
        paths += sorted(p for p in d.iterdir() if p.is_file())
    out: list[TrustedCert] = []
    for p in paths:
        out += [TrustedCert(str(p), c) for c in _read(p)]
    if not out:
        raise UsageError("no certificates given")
    return tuple(out)


def _read(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
        for c in certs:  # decoded lazily: fail here, not mid-verification
            _ = (c.extensions, c.subject.rfc4514_string(), c.issuer.rfc4514_string())
    except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm):
        raise UsageError(f"{path}: not an X.509 certificate (PEM or DER)") from None
    return certs


def cert_id(c: x509.Certificate) -> tuple[bytes, int]:
    """What the kernel keys a certificate by first: its issuer and serial number (any
    serial: the kernel does not hold RFC 5280's positive-serial rule against it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return c.issuer.public_bytes(), c.serial_number


def signature_digest(c: x509.Certificate) -> str:
    """The hash of the certificate's own signature ("" when cryptography does not know it)."""
    try:
        h = c.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return ""
    return h.name if h is not None else ""


def skid(c: x509.Certificate) -> bytes | None:
    try:
        return c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def akid(c: x509.Certificate) -> tuple[tuple[bytes, int] | None, bytes | None]:
    """The issuer's identifiers an AuthorityKeyIdentifier names (issuer+serial, key id)."""
    try:
        ext = c.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None, None
    by_name = None
    if ext.authority_cert_issuer and ext.authority_cert_serial_number is not None:
        names = [n.value for n in ext.authority_cert_issuer
                 if isinstance(n, x509.DirectoryName)]
        if names:
            by_name = (names[0].public_bytes(), ext.authority_cert_serial_number)
    return by_name, ext.key_identifier


def verify(key_cert: x509.Certificate, signature: bytes, data: bytes, digest: str,
           rsa_pss: bool = False, prehashed: bool = False) -> bool | None:
    """Whether ``signature`` over ``data`` (or, ``prehashed``, over the data whose ``digest``
    ``data`` is) verifies with the certificate's key; None when the kernel could not check it
    (an algorithm it lacks)."""
    if rsa_pss or digest not in HASHES:
        return None
    algo: hashes.HashAlgorithm | utils.Prehashed = HASHES[digest]()
    if prehashed:
        algo = utils.Prehashed(HASHES[digest]())
    try:
        key = key_cert.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algo)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algo))
        else:
            return None
    except InvalidSignature:
        return False
    except (UnsupportedAlgorithm, ValueError):
        return None
    return True


def verify_issued(child: x509.Certificate, issuer: x509.Certificate) -> bool | None:
    """The child's signature checked with the issuer's key (names are not compared: the kernel
    found the issuer by its identifiers)."""
    digest = signature_digest(child)
    if not digest:
        return None
    return verify(issuer, child.signature, child.tbs_certificate_bytes, digest,
                  rsa_pss=child.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS)
