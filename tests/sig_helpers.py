"""Keys, certificates and signed kernels for the signature tests: a CA and a signer issued by it
(with the key identifiers the kernel chains by), an unrelated self-signed cert, all generated
here; kernels signed with sbsign (sbsigntool)."""

from __future__ import annotations

import datetime
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

EPOCH = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Pki:
    ca: Path
    signer: Path
    signer_key: Path
    other: Path
    other_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(cn: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
          issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None, serial: int,
          ca: bool) -> x509.Certificate:
    pub = key.public_key()
    b = (x509.CertificateBuilder().subject_name(_name(cn))
         .issuer_name(issuer[0].subject if issuer else _name(cn))
         .public_key(pub).serial_number(serial)
         .not_valid_before(EPOCH).not_valid_after(EPOCH + datetime.timedelta(days=3650))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False))
    signing_key = key if issuer is None else issuer[1]
    b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
        signing_key.public_key()), critical=False)  # type: ignore[arg-type]
    return b.sign(signing_key, hashes.SHA256())


def pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_pki(d: Path) -> Pki:
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = make_cert("kimagekit test CA", ca_key, None, 1, True)
    signer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = make_cert("kimagekit test signer", signer_key, (ca, ca_key), 2, False)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = make_cert("kimagekit other", other_key, None, 3, True)
    files = {"ca.pem": ca, "signer.pem": signer, "other.pem": other}
    for name, c in files.items():
        (d / name).write_bytes(c.public_bytes(serialization.Encoding.PEM))
    (d / "signer.key").write_bytes(pem_key(signer_key))
    (d / "other.key").write_bytes(pem_key(other_key))
    return Pki(d / "ca.pem", d / "signer.pem", d / "signer.key", d / "other.pem",
               d / "other.key")


def sbsign(key: Path, cert: Path, src: Path, dst: Path) -> Path:
    subprocess.run(["sbsign", "--key", str(key), "--cert", str(cert), "--output", str(dst),
                    str(src)], check=True, capture_output=True)
    return dst


def sbverify(cert: Path, image: Path) -> bool:
    done = subprocess.run(["sbverify", "--cert", str(cert), str(image)], capture_output=True,
                          check=False)
    return done.returncode == 0
