"""The PKCS#7 SignedData of an Authenticode signature, read with asn1crypto into what the
kernel's ``pkcs7_parser.c`` and ``mscode_parser.c`` keep: the signer infos, the certificates
(as ``cryptography`` objects), the signed content and the image digest inside it."""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from asn1crypto import algos, cms, core
from asn1crypto import x509 as x509_asn1
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning

from kimagekit.errors import ParseError, converted

__all__ = [
    "DATA", "DIGESTS", "FMT", "SIGNED_DATA", "SPC_INDIRECT_DATA", "SPC_PE_IMAGE_DATA",
    "AuthenticodeData", "DetachedData", "SignerInfo", "parse_authenticode", "parse_detached",
]

FMT = "pkcs7"
SIGNED_DATA = "1.2.840.113549.1.7.2"
DATA = "1.2.840.113549.1.7.1"
SPC_INDIRECT_DATA = "1.3.6.1.4.1.311.2.1.4"
SPC_PE_IMAGE_DATA = "1.3.6.1.4.1.311.2.1.15"
# The digests the kernel's PKCS#7 parser knows (sm3 and streebog aside), as hashlib names.
DIGESTS = ("sha1", "sha224", "sha256", "sha384", "sha512")


class _SpcAttribute(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[list[Any]] = [("type", core.ObjectIdentifier),
                                    ("value", core.Any, {"optional": True})]


class _SpcIndirectDataContent(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[list[Any]] = [("data", _SpcAttribute), ("message_digest", algos.DigestInfo)]


@dataclass(frozen=True)
class SignerInfo:
    issuer_der: bytes | None  # issuerAndSerialNumber; None with a subjectKeyIdentifier sid
    issuer: str | None
    serial: int | None
    sid_key_id: bytes | None
    digest_algorithm: str
    signature_algorithm: str  # as asn1crypto names the OID
    signature: bytes
    signed_attrs: bytes | None  # DER, with the SET OF tag the signature covers
    message_digest: bytes | None
    signing_time: datetime.datetime | None


@dataclass(frozen=True)
class AuthenticodeData:
    content: bytes  # SpcIndirectDataContent's value: what messageDigest covers
    image_digest_algorithm: str
    image_digest: bytes
    signers: tuple[SignerInfo, ...]
    certificates: tuple[x509.Certificate, ...]


@contextmanager
def _asn1(field: str, offset: int) -> Iterator[None]:
    """asn1crypto parses lazily and raises ValueError, TypeError or KeyError at any access;
    cryptography raises ValueError, InvalidVersion or UnsupportedAlgorithm on certificates."""
    try:
        with converted(FMT, field, offset):
            yield
    except ParseError as err:
        cause = err.__cause__
        if not isinstance(cause, ValueError | KeyError | IndexError):
            raise
        raise _err(_first_line(cause), field, offset) from cause
    except (TypeError, x509.InvalidVersion, UnsupportedAlgorithm) as exc:
        raise _err(_first_line(exc), field, offset) from exc


def _first_line(exc: BaseException) -> str:
    """asn1crypto puts the problem first and its parse path ("while parsing ...") after."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else "malformed DER"


def _err(msg: str, field: str, offset: int) -> ParseError:
    return ParseError(msg, fmt=FMT, field=field, offset=offset)


def _digest(name: object, field: str, offset: int) -> str:
    if name not in DIGESTS:
        raise _err(f"digest algorithm {name} is not one the kernel supports", field, offset)
    return str(name)


def _signed_data(der: bytes, offset: int) -> cms.ContentInfo:
    """The ContentInfo, refused unless it holds signedData (as the kernel's PKCS#7 parser)."""
    with _asn1("ContentInfo", offset):
        info = cms.ContentInfo.load(der, strict=True)
        kind = info["content_type"].dotted
    if kind != SIGNED_DATA:
        raise _err(f"content type {kind} is not signedData ({SIGNED_DATA})",
                   "ContentInfo.contentType", offset)
    return info


def parse_authenticode(der: bytes, offset: int = 0) -> AuthenticodeData:
    """Parse and check the shape the kernel requires (``offset``: where ``der`` starts in the
    file, for errors)."""
    info = _signed_data(der, offset)
    field = "SignedData.encapContentInfo"
    with _asn1(field, offset):
        signed = info["content"]
        encap = signed["encap_content_info"]
        data_type = encap["content_type"].dotted
        raw = encap["content"]
    if data_type != SPC_INDIRECT_DATA:
        raise _err(f"signed content type {data_type} is not SpcIndirectDataContent "
                   f"({SPC_INDIRECT_DATA})", f"{field}.contentType", offset)
    if raw is None or isinstance(raw, core.Void):
        raise _err("signed content is missing", f"{field}.content", offset)
    with _asn1("SpcIndirectDataContent", offset):
        spc = raw.parse(_SpcIndirectDataContent)
        spc_type = spc["data"]["type"].dotted
        algo = spc["message_digest"]["digest_algorithm"]["algorithm"].native
        image_digest = bytes(spc["message_digest"]["digest"].native)
        content = bytes(spc.contents)
    if spc_type != SPC_PE_IMAGE_DATA:
        raise _err(f"indirect data type {spc_type} is not SpcPeImageData "
                   f"({SPC_PE_IMAGE_DATA})", "SpcIndirectDataContent.data.type", offset)
    image_algo = _digest(algo, "SpcIndirectDataContent.messageDigest.digestAlgorithm", offset)
    return AuthenticodeData(content, image_algo, image_digest, _signers(signed, offset),
                            _certificates(signed, offset))


def _signers(signed: cms.SignedData, offset: int) -> tuple[SignerInfo, ...]:
    signers = []
    with _asn1("SignedData.signerInfos", offset):
        for i, si in enumerate(signed["signer_infos"]):
            signers.append(_signer(si, i, offset))
    if not signers:
        raise _err("no signer info", "SignedData.signerInfos", offset)
    if len({si.signed_attrs is None for si in signers}) > 1:
        # pkcs7_check_authattrs: all signers with authenticated attributes, or none
        raise _err("authenticated attributes supplied inconsistently across signers",
                   "SignedData.signerInfos", offset)
    return tuple(signers)


def _certificates(signed: cms.SignedData, offset: int) -> tuple[x509.Certificate, ...]:
    certs = []
    with _asn1("SignedData.certificates", offset):
        for choice in signed["certificates"] or ():
            if choice.name == "certificate":
                with warnings.catch_warnings():  # a non-positive serial: the kernel takes it
                    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                    cert = x509.load_der_x509_certificate(choice.chosen.dump())
                # cryptography decodes lazily: make a bad extension or name fail here
                _ = (cert.extensions, cert.subject.rfc4514_string(),
                     cert.issuer.rfc4514_string(), cert.tbs_certificate_bytes)
                certs.append(cert)
    return tuple(certs)


_SHORT = {"common_name": "CN", "organization_name": "O", "organizational_unit_name": "OU",
          "country_name": "C", "state_or_province_name": "ST", "locality_name": "L",
          "street_address": "STREET", "domain_component": "DC", "user_id": "UID"}


def _rfc4514(name: x509_asn1.Name) -> str:
    """A Name as RFC 4514 writes it (as cryptography's ``rfc4514_string`` does for
    certificates): last RDN first, values escaped."""
    rdns = []
    for rdn in name.chosen:
        parts = []
        for atv in rdn:
            kind = atv["type"].native
            key = _SHORT.get(kind, atv["type"].dotted)
            value = atv["value"].native
            text = value if isinstance(value, str) else "#" + atv["value"].dump().hex()
            for ch in '\\,+"<>;':
                text = text.replace(ch, "\\" + ch)
            parts.append(f"{key}={text}")
        rdns.append("+".join(parts))
    return ",".join(reversed(rdns))


def _signer(si: cms.SignerInfo, index: int, offset: int) -> SignerInfo:
    field = f"SignedData.signerInfos[{index}]"
    sid = si["sid"]
    issuer_der = issuer = serial = key_id = None
    if sid.name == "issuer_and_serial_number":
        issuer_der = bytes(sid.chosen["issuer"].dump())
        issuer = _rfc4514(sid.chosen["issuer"])
        serial = int(sid.chosen["serial_number"].native)
    else:
        key_id = bytes(sid.chosen.native)
    digest = _digest(si["digest_algorithm"]["algorithm"].native, f"{field}.digestAlgorithm",
                     offset)
    attrs = si["signed_attrs"]
    signed_attrs = message_digest = signing_time = None
    if isinstance(attrs, cms.CMSAttributes) and len(attrs):
        # signed as a SET OF, stored as [0] IMPLICIT
        signed_attrs = b"\x31" + bytes(attrs.dump())[1:]
        for attr in attrs:
            kind = attr["type"].native
            if kind == "message_digest":
                message_digest = bytes(attr["values"][0].native)
            elif kind == "signing_time":
                signing_time = attr["values"][0].native
    return SignerInfo(issuer_der, issuer, serial, key_id, digest,
                      str(si["signature_algorithm"]["algorithm"].native),
                      bytes(si["signature"].native), signed_attrs, message_digest, signing_time)


@dataclass(frozen=True)
class DetachedData:
    """A detached PKCS#7 over plain data (a module-style appended signature)."""

    signers: tuple[SignerInfo, ...]
    certificates: tuple[x509.Certificate, ...]


def parse_detached(der: bytes, offset: int = 0) -> DetachedData:
    """``pkcs7_parse_message`` for a module signature: signedData of ``data`` with no content
    (the signed bytes are supplied separately)."""
    info = _signed_data(der, offset)
    with _asn1("SignedData.encapContentInfo", offset):
        signed = info["content"]
        data_type = signed["encap_content_info"]["content_type"].dotted
    if data_type != DATA:
        raise _err(f"signed content type {data_type} is not data ({DATA})",
                   "SignedData.encapContentInfo.contentType", offset)
    return DetachedData(_signers(signed, offset), _certificates(signed, offset))
