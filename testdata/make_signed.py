#!/usr/bin/env python3
"""Authenticode-sign PE files without sbsign, for the fuzzer's seeds and the signature tests
that need what sbsign cannot make (no authenticated attributes, ECDSA keys, chains carried in
the message). The DER is written here byte by byte and the PE digest computed here, apart from
kimagekit's own code, so tests compare two implementations."""

from __future__ import annotations

import datetime
import hashlib
import struct
from dataclasses import dataclass
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_SPC_INDIRECT = "1.3.6.1.4.1.311.2.1.4"
OID_SPC_PE_IMAGE = "1.3.6.1.4.1.311.2.1.15"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_RSA = "1.2.840.113549.1.1.1"
OID_ECDSA = {"sha256": "1.2.840.10045.4.3.2", "sha384": "1.2.840.10045.4.3.3"}
OID_HASH = {"sha1": "1.3.14.3.2.26", "sha256": "2.16.840.1.101.3.4.2.1",
            "sha384": "2.16.840.1.101.3.4.2.2", "sha512": "2.16.840.1.101.3.4.2.3"}
HASH = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
        "sha512": hashes.SHA512}


def tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        head = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + head + body


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def oid(dotted: str) -> bytes:
    nums = [int(x) for x in dotted.split(".")]
    body = bytes([40 * nums[0] + nums[1]])
    for arc in nums[2:]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, body)


def integer(n: int) -> bytes:
    raw = n.to_bytes(n.bit_length() // 8 + 1, "big")
    return tlv(0x02, raw)


def algo(dotted: str, null: bool = True) -> bytes:
    return seq(oid(dotted), b"\x05\x00" if null else b"")


def pe_digest(pe: bytes, name: str) -> bytes:
    """verify_pefile.c's digest of a PE whose certificate table (if any) ends the file."""
    lfanew = struct.unpack_from("<I", pe, 0x3C)[0]
    nsec, opt_size = struct.unpack_from("<H", pe, lfanew + 6)[0], \
        struct.unpack_from("<H", pe, lfanew + 20)[0]
    opt = lfanew + 24
    plus = struct.unpack_from("<H", pe, opt)[0] == 0x20B
    dirs = opt + (112 if plus else 96)
    checksum, dirent = opt + 64, dirs + 4 * 8
    header_size = struct.unpack_from("<I", pe, opt + 60)[0]
    table = struct.unpack_from("<I", pe, dirent + 4)[0]
    h = hashlib.new(name)
    h.update(pe[:checksum])
    h.update(pe[checksum + 4:dirent])
    h.update(pe[dirent + 8:header_size])
    secs = []
    for i in range(nsec):
        s = opt + opt_size + 40 * i
        vsize, vaddr, raw_size, raw_at = struct.unpack_from("<IIII", pe, s + 8)
        secs.append((raw_at, vaddr, pe[s:s + 8].split(b"\0")[0], vsize, raw_size))
    hashed = header_size
    for raw_at, _, _, _, raw_size in sorted(secs):
        if raw_size:
            h.update(pe[raw_at:raw_at + raw_size])
            hashed += raw_size
    if len(pe) > hashed:
        h.update(pe[hashed:len(pe) - table])
    return h.digest()


def sign_pe(pe: bytes, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
            cert: x509.Certificate, *, extra_certs: tuple[x509.Certificate, ...] = (),
            digest: str = "sha256", attributes: bool = True) -> bytes:
    """``pe`` (unsigned) with one Authenticode signature appended as its certificate table."""
    image_digest = pe_digest(pe + bytes(-len(pe) % 8), digest)
    pe = pe + bytes(-len(pe) % 8)
    spc_value = seq(tlv(0x03, b"\x00"), tlv(0xA0, tlv(0xA2, tlv(0x80, b""))))
    spc_body = seq(oid(OID_SPC_PE_IMAGE), spc_value) + seq(algo(OID_HASH[digest]),
                                                          tlv(0x04, image_digest))
    spc = tlv(0x30, spc_body)
    content_digest = hashlib.new(digest, spc_body).digest()
    if attributes:
        attrs = (seq(oid(OID_CONTENT_TYPE), tlv(0x31, oid(OID_SPC_INDIRECT)))
                 + seq(oid(OID_MESSAGE_DIGEST), tlv(0x31, tlv(0x04, content_digest))))
        to_sign = tlv(0x31, attrs)
    else:
        to_sign = spc_body
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(to_sign, padding.PKCS1v15(), HASH[digest]())
        sig_algo = algo(OID_RSA)
    else:
        sig = key.sign(to_sign, ec.ECDSA(HASH[digest]()))
        sig_algo = algo(OID_ECDSA[digest], null=False)
    issuer = cert.issuer.public_bytes()
    signer_info = seq(integer(1), seq(issuer, integer(cert.serial_number)),
                      algo(OID_HASH[digest]),
                      tlv(0xA0, attrs) if attributes else b"", sig_algo, tlv(0x04, sig))
    der_certs = b"".join(c.public_bytes(serialization.Encoding.DER)
                         for c in (cert, *extra_certs))
    signed_data = seq(integer(1), tlv(0x31, algo(OID_HASH[digest])),
                      seq(oid(OID_SPC_INDIRECT), tlv(0xA0, spc)),
                      tlv(0xA0, der_certs), tlv(0x31, signer_info))
    blob = seq(oid(OID_SIGNED_DATA), tlv(0xA0, signed_data))
    entry = struct.pack("<IHH", 8 + len(blob), 0x200, 2) + blob
    entry += bytes(-len(entry) % 8)
    out = bytearray(pe + entry)
    lfanew = struct.unpack_from("<I", out, 0x3C)[0]
    opt = lfanew + 24
    plus = struct.unpack_from("<H", out, opt)[0] == 0x20B
    dirent = opt + (112 if plus else 96) + 4 * 8
    struct.pack_into("<II", out, dirent, len(pe), len(entry))
    return bytes(out)


@dataclass(frozen=True)
class TestKeys:
    ca_key: rsa.RSAPrivateKey
    ca_cert: x509.Certificate
    rsa_key: rsa.RSAPrivateKey
    rsa_cert: x509.Certificate  # issued by the CA
    ec_key: ec.EllipticCurvePrivateKey
    ec_cert: x509.Certificate  # issued by the CA


def make_cert(cn: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
              issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None, serial: int, *,
              ca: bool = False, key_ids: bool = True) -> x509.Certificate:
    """A certificate with the key identifiers the kernel chains by (unless ``key_ids``)."""
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cn)])
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    pub = key.public_key()
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer[0].subject if issuer else name).public_key(pub)
         .serial_number(serial).not_valid_before(start)
         .not_valid_after(start + datetime.timedelta(days=3650))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    signing_key = key if issuer is None else issuer[1]
    if key_ids:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            signing_key.public_key()), critical=False)
    return b.sign(signing_key, hashes.SHA256())


@cache
def test_keys() -> TestKeys:
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = make_cert("make_signed CA", ca_key, None, 1, ca=True)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    return TestKeys(ca_key, ca, rsa_key, make_cert("make_signed RSA", rsa_key, (ca, ca_key), 2),
                    ec_key, make_cert("make_signed EC", ec_key, (ca, ca_key), 3))
