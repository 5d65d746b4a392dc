"""IMA file signatures in measurement list entries (the ``sig`` field of ``ima-sig``,
``ima-sigv2`` and ``ima-modsig``), checked as ``evmctl ima_measurement --verify-sig --key``
checks them against X.509 certificates.

The field holds the security.ima xattr: type (0x03 ``EVM_IMA_XATTR_DIGSIG``, 0x06
``IMA_VERITY_DIGSIG``), version, the kernel's hash algorithm number, a 4-byte key id, the
big-endian signature size and the signature. Version 2 signs the file digest the entry records;
version 3 signs the digest of ``ima_file_id`` (the type byte, the algorithm number, the file
digest). A key id is the last 4 bytes of the SHA-1 of the certificate's public key, as evmctl
computes it. An ``evm-sig`` entry's ``evmsig`` field (security.evm) is checked the same way when
it is a portable signature (type 0x05), over the digest :mod:`kimagekit.sig.evm_sig` rebuilds."""

from __future__ import annotations

import enum
import hashlib
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography import x509

from kimagekit import ima_log
from kimagekit.errors import KimageError, input_named
from kimagekit.ima_log import ImaEntry
from kimagekit.sig import keys
from kimagekit.sig.authenticode import chain_in_message, signer_cert, trust
from kimagekit.sig.evm_sig import XATTR_NAME_IMA, evm_input, portable_digest
from kimagekit.sig.keys import TrustedCert, load_certs
from kimagekit.sig.keys import verify as verify_with
from kimagekit.sig.pkcs7 import parse_detached

__all__ = [
    "EVM_NOT_CHECKED", "HASH_ALGO", "SIGNED_TEMPLATES", "SIG_HEADER", "EntrySignature", "Pathish",
    "Status", "check_entry", "check_file", "check_signatures", "key_id", "keyring",
]

Pathish = str | os.PathLike[str]
EVM_IMA_XATTR_DIGSIG, EVM_XATTR_PORTABLE_DIGSIG, IMA_VERITY_DIGSIG = 0x03, 0x05, 0x06
SIG_HEADER = struct.Struct(">BBBIH")  # type, version, hash_algo, keyid, sig_size
# include/uapi/linux/hash_info.h, the ones cryptography can check
HASH_ALGO = {2: "sha1", 4: "sha256", 5: "sha384", 6: "sha512", 7: "sha224"}
SIGNED_TEMPLATES = {"ima-sig", "ima-sigv2", "ima-modsig", "evm-sig"}
# security.evm types an evm-sig entry cannot check: they cover what the list does not record
EVM_NOT_CHECKED = {
    0x02: "an EVM HMAC (type 0x02), keyed with the machine's EVM key",
    0x03: "an immutable EVM signature (type 0x03), over the inode number and generation, "
          "which the list does not record",
}


class Status(enum.Enum):
    VALID = "valid"
    INVALID = "invalid"
    UNKNOWN_KEY = "unknown key"
    NO_SIGNATURE = "no signature"
    NOT_CHECKED = "not checked"  # covers what the entry does not record (EVM HMAC, immutable)


@dataclass(frozen=True)
class EntrySignature:
    index: int
    offset: int
    template_name: str
    file_name: str
    status: Status
    key_id: str | None  # hex, as the signature names it
    key: str | None  # the certificate that verified it (file path)
    hash_algo: str | None
    version: int | None
    reason: str | None


def key_id(cert: x509.Certificate) -> int:
    """evmctl's key id: SHA-1 over the public key (PKCS#1 for RSA, the point for EC) as the
    X.509 subjectPublicKey holds it, last 4 bytes."""
    digest = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    return int.from_bytes(digest[-4:], "big")


def keyring(certs: Iterable[TrustedCert]) -> dict[int, TrustedCert]:
    out: dict[int, TrustedCert] = {}
    for c in certs:
        out.setdefault(key_id(c.cert), c)
    return out


def _fields(e: ImaEntry) -> dict[str, tuple[bytes, int]]:
    """Field id -> (data, offset of the data in the list)."""
    out: dict[str, tuple[bytes, int]] = {}
    at = e.data_offset
    for f in e.fields:
        at += 4
        out.setdefault(f.id, (f.data, at))
        at += len(f.data)
    return out


def check_entry(e: ImaEntry, keys: dict[int, TrustedCert],
                certs: tuple[TrustedCert, ...] = ()) -> EntrySignature | None:
    """The entry's signature checked; None for a template that carries none (or a violation).
    ``keys`` by evmctl key id (for ``sig``), ``certs`` as given (for an appended ``modsig``)."""
    if e.template_name not in SIGNED_TEMPLATES or e.is_violation:
        return None
    fields = _fields(e)
    name = next((f.shown for f in e.fields if f.id == "n-ng"), "")
    digest_field = next((f for f in e.fields if f.id in ("d-ng", "d-ngv2")), None)

    def result(status: Status, reason: str | None = None, kid: int | None = None,
               key: str | None = None, algo: str | None = None,
               version: int | None = None) -> EntrySignature:
        return EntrySignature(e.index, e.offset, e.template_name, name, status,
                              None if kid is None else f"{kid:08x}", key, algo, version, reason)

    sig_id = "evmsig" if e.template_name == "evm-sig" else "sig"
    sig, sig_at = fields.get(sig_id, (b"", e.offset))
    if not sig:
        modsig, modsig_at = fields.get("modsig", (b"", e.offset))
        if e.template_name == "ima-modsig" and modsig:
            status, reason, key = _check_modsig(modsig, modsig_at, e, certs)
            algo = next((f.algo for f in e.fields if f.id == "d-modsig"), None)
            return result(status, reason, key=key, algo=algo)
        return result(Status.NO_SIGNATURE)
    is_evm = e.template_name == "evm-sig"
    if is_evm and sig[0] in EVM_NOT_CHECKED:
        return result(Status.NOT_CHECKED, EVM_NOT_CHECKED[sig[0]])
    if len(sig) < SIG_HEADER.size:
        return result(Status.INVALID, f"signature at offset {sig_at:#x} is {len(sig)} bytes, "
                      f"shorter than its {SIG_HEADER.size}-byte header")
    kind, version, algo_id, kid, size = SIG_HEADER.unpack_from(sig)
    if is_evm and (kind != EVM_XATTR_PORTABLE_DIGSIG or version not in (2, 3)):
        return result(Status.INVALID, f"signature at offset {sig_at:#x}: type {kind:#04x} "
                      f"version {version} is not an EVM signature (type 0x05, 0x03 or 0x02; "
                      "version 2 or 3)", kid)
    if not is_evm and kind == EVM_XATTR_PORTABLE_DIGSIG:
        return result(Status.NOT_CHECKED, "an EVM portable signature (over the inode's xattrs "
                      f"and metadata), which an {e.template_name} entry does not record", kid,
                      version=version)
    if not is_evm and (kind not in (EVM_IMA_XATTR_DIGSIG, IMA_VERITY_DIGSIG)
                       or version not in (2, 3)):
        return result(Status.INVALID, f"signature at offset {sig_at:#x}: type {kind:#04x} "
                      f"version {version} is not an IMA digital signature (type 0x03 or 0x06, "
                      "version 2 or 3)", kid)
    algo = HASH_ALGO.get(algo_id)
    # evmctl looks the key up before it checks the size (the kernel the other way round)
    trusted = keys.get(kid)
    if trusted is None:
        return result(Status.UNKNOWN_KEY, None, kid, algo=algo, version=version)
    if len(sig) - SIG_HEADER.size != size:
        return result(Status.INVALID, f"signature at offset {sig_at:#x}: sig_size {size} but "
                      f"{len(sig) - SIG_HEADER.size} bytes follow the header", kid, algo=algo,
                      version=version)
    if algo is None:
        return result(Status.INVALID, f"hash algorithm {algo_id} is not one kimagekit checks",
                      kid, version=version)
    over = ""
    if is_evm:
        hashed = evm_input(e.fields, e.endian)
        if isinstance(hashed, str):
            return result(Status.INVALID, hashed, kid, algo=algo, version=version)
        if XATTR_NAME_IMA not in (name for name, _ in hashed.xattrs):
            return result(Status.INVALID, "a portable EVM signature without security.ima in "
                          "the xattrs (the kernel refuses it)", kid, algo=algo, version=version)
        # the kernel verifies the EVM digest itself whatever the version (2 or 3)
        digest = portable_digest(hashed, algo, e.endian)
        over = f" over {hashed.describe()}"
    elif digest_field is None or digest_field.digest is None:
        return result(Status.INVALID, "the entry records no file digest", kid, algo=algo,
                      version=version)
    else:
        digest = digest_field.digest
        if version == 3:
            file_id = bytes([kind, algo_id]) + digest
            digest = hashlib.new(algo, file_id).digest()
    ok = verify_with(trusted.cert, sig[SIG_HEADER.size:], digest, algo, prehashed=True) is True
    if ok:
        return result(Status.VALID, None, kid, trusted.path, algo, version)
    return result(Status.INVALID, f"the signature does not verify with {trusted.path}{over}",
                  kid, trusted.path, algo, version)


def _check_modsig(modsig: bytes, at: int, e: ImaEntry,
                  certs: tuple[TrustedCert, ...]) -> tuple[Status, str | None, str | None]:
    """An appended module-style signature as ``ima_modsig_verify`` checks it against the IMA
    keyring: a detached PKCS#7 of ``data`` without authenticated attributes, whose signer
    signs the digest the ``d-modsig`` field records (the file without the signature)."""
    digest_field = next((f for f in e.fields if f.id == "d-modsig"), None)
    try:
        msg = parse_detached(modsig, at)
    except KimageError as err:
        return Status.INVALID, str(err), None
    if any(si.signed_attrs is not None for si in msg.signers):
        return Status.INVALID, "a module signature with authenticated attributes (the kernel " \
            "refuses it)", None
    if digest_field is None or digest_field.digest is None:
        return Status.INVALID, "the entry records no d-modsig digest", None
    trusted_by = None
    for si in msg.signers:
        if si.digest_algorithm != digest_field.algo:
            return Status.INVALID, (f"the signer uses {si.digest_algorithm}, d-modsig holds "
                                    f"{digest_field.algo}"), None
        cert = signer_cert(msg.certificates, si)
        chain: list[x509.Certificate] = []
        if cert is not None:
            if keys.verify(cert, si.signature, digest_field.digest, si.digest_algorithm,
                           prehashed=True) is not True:
                return Status.INVALID, "the signature does not verify with the signer's " \
                    "certificate", None
            chain, problem = chain_in_message(msg.certificates, cert)
            if problem is not None:
                return Status.INVALID, problem, None
        found = trust(si, chain, digest_field.digest, certs, prehashed=True)
        if found.rejected:
            return Status.INVALID, found.reason, None
        if found.key is not None and trusted_by is None:
            trusted_by = found.key
    if trusted_by is None:
        si = msg.signers[0]
        who = (f"serial {si.serial:x} issued by {si.issuer}" if si.issuer is not None
               else f"key id {(si.sid_key_id or b'').hex()}")
        return Status.UNKNOWN_KEY, f"no given certificate is the modsig's signer ({who}) or " \
            "its issuer", None
    return Status.VALID, None, trusted_by.path


def check_signatures(entries: Iterable[ImaEntry],
                     certs: tuple[TrustedCert, ...]) -> Iterator[EntrySignature]:
    keys = keyring(certs)
    for e in entries:
        found = check_entry(e, keys, certs)
        if found is not None:
            yield found


def check_file(path: Pathish, cert_files: list[Pathish]) -> tuple[EntrySignature, ...]:
    """Every signed entry of a list file checked against the certificates (``--key``)."""
    certs = load_certs(cert_files) if cert_files else ()
    with input_named(path), ima_log.open_list(path) as (fmt, view):
        return tuple(check_signatures(ima_log.iter_entries(view, fmt), certs))
