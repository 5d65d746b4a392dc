"""The bytes of a PE image that its Authenticode digest covers, chosen as the kernel's
``verify_pefile.c`` chooses them, and the first certificate table entry as it strips it.

Headers to ``SizeOfHeaders`` without the ``CheckSum`` field and the certificate table's data
directory entry; then every section with raw data, sorted by file offset (then address, name,
sizes); then whatever follows the sections, up to the length of the certificate table from the
end. Gaps between sections are not hashed.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from kimagekit.errors import ParseError
from kimagekit.formats import pe

__all__ = [
    "CHECKSUM_OFFSET", "FMT", "SECURITY_DIRENT", "FirstSignature", "HashLayout", "first_signature",
    "hash_layout", "image_digest",
]

FMT = "pe"
CHECKSUM_OFFSET = 64  # in both optional header forms
SECURITY_DIRENT = pe.IMAGE_DIRECTORY_ENTRY_SECURITY * pe.DATA_DIRECTORY_SIZE


@dataclass(frozen=True)
class HashLayout:
    """What the digest covers: ``ranges`` are (file offset, length) in hashing order."""

    checksum_offset: int
    cert_dirent_offset: int
    header_size: int
    cert_table: tuple[int, int] | None  # (file offset, size) from the data directory
    ranges: tuple[tuple[int, int], ...]


def _err(msg: str, field: str, offset: int | None) -> ParseError:
    return ParseError(msg, fmt=FMT, field=field, offset=offset)


def hash_layout(data: bytes | memoryview) -> HashLayout:
    """The regions ``pefile_digest_pe_contents`` hashes; refused where ``pefile_parse_binary``
    refuses (returns -ELIBBAD), and where the kernel would read past the file."""
    size = len(data)
    if size < pe.DOS_HEADER_SIZE or bytes(data[:2]) != pe.MZ_MAGIC:
        raise _err("not a PE image (no MZ header)", "e_magic", 0)
    (lfanew,) = struct.unpack_from("<I", data, pe.E_LFANEW_OFFSET)
    opt = lfanew + 4 + pe.COFF_FILE_HEADER_SIZE
    if lfanew < pe.DOS_HEADER_SIZE or opt + 2 > size \
            or bytes(data[lfanew:lfanew + 4]) != pe.PE_SIGNATURE:
        raise _err(f"no PE signature at e_lfanew {lfanew:#x}", "e_lfanew", pe.E_LFANEW_OFFSET)
    (nsec,) = struct.unpack_from("<H", data, lfanew + 6)
    (magic,) = struct.unpack_from("<H", data, opt)
    if magic == pe.PE32PLUS_MAGIC:
        fixed = pe.optional_header_pe32plus.sizeof()
    elif magic == pe.PE32_MAGIC:
        fixed = pe.optional_header_pe32.sizeof()
    else:
        raise _err(f"optional header magic {magic:#x} is neither PE32 nor PE32+",
                   "OptionalHeader.Magic", opt)
    if opt + fixed > size:
        raise _err("optional header runs past the end of the file", "OptionalHeader", opt)
    (header_size,) = struct.unpack_from("<I", data, opt + 60)
    (ndirs,) = struct.unpack_from("<I", data, opt + fixed - 4)
    dirs = opt + fixed
    if dirs >= header_size or header_size >= size:
        raise _err(f"SizeOfHeaders {header_size:#x} does not cover the optional header or "
                   f"is not inside the file ({size} bytes)", "OptionalHeader.SizeOfHeaders",
                   opt + 60)
    if ndirs > (header_size - dirs) // pe.DATA_DIRECTORY_SIZE:
        raise _err(f"NumberOfRvaAndSizes {ndirs} does not fit SizeOfHeaders",
                   "OptionalHeader.NumberOfRvaAndSizes", opt + fixed - 4)
    dirent = dirs + SECURITY_DIRENT
    if dirent + pe.DATA_DIRECTORY_SIZE > header_size:
        # the kernel digests around this entry whether or not NumberOfRvaAndSizes covers it
        raise _err(f"SizeOfHeaders {header_size:#x} ends before the certificate table's data "
                   f"directory entry at {dirent:#x}", "OptionalHeader.SizeOfHeaders", opt + 60)
    table: tuple[int, int] | None = None
    if ndirs > pe.IMAGE_DIRECTORY_ENTRY_SECURITY:
        at, length = struct.unpack_from("<II", data, dirent)
        if at and length:
            if at < header_size or length >= size or at > size - length:
                raise _err(f"certificate table ({length} bytes at {at:#x}) is not inside the "
                           f"file after the headers", "DataDirectory[SECURITY]", dirent)
            table = (at, length)
    secs = dirs + ndirs * pe.DATA_DIRECTORY_SIZE
    if nsec > (header_size - secs) // pe.SECTION_HEADER_SIZE:
        raise _err(f"{nsec} section headers do not fit SizeOfHeaders",
                   "FileHeader.NumberOfSections", lfanew + 6)
    ranges = [(0, opt + CHECKSUM_OFFSET), (opt + CHECKSUM_OFFSET + 4,
                                           dirent - opt - CHECKSUM_OFFSET - 4),
              (dirent + 8, header_size - dirent - 8)]
    hashed = header_size
    for key, name, raw_size, raw_at, h in sorted(_sections(data, secs, nsec)):
        del key
        if raw_size == 0:
            continue
        if raw_at > size:
            raise _err(f"section {name!r} ({raw_size} bytes at {raw_at:#x}) starts past the end "
                       f"of the file", f"section[{name}].PointerToRawData", h + 20)
        if raw_size > size - raw_at:
            raise _err(f"section {name!r} ({raw_size} bytes at {raw_at:#x}) runs past the end "
                       f"of the file", f"section[{name}].SizeOfRawData", h + 16)
        ranges.append((raw_at, raw_size))
        hashed += raw_size
    cert_size = table[1] if table else 0
    if size > hashed:
        if hashed + cert_size > size:
            raise _err(f"sections ({hashed:#x} bytes with the headers) and the certificate table "
                       f"({cert_size} bytes) are longer than the file ({size} bytes)",
                       "DataDirectory[SECURITY].Size", dirent + 4)
        ranges.append((hashed, size - hashed - cert_size))
    return HashLayout(opt + CHECKSUM_OFFSET, dirent, header_size, table, tuple(ranges))


def _sections(data: bytes | memoryview, at: int,
              count: int) -> list[tuple[tuple[int, int, bytes, int, int], str, int, int, int]]:
    """(sort key, name, SizeOfRawData, PointerToRawData, header offset) per section."""
    out = []
    for i in range(count):
        h = at + i * pe.SECTION_HEADER_SIZE
        raw_name = bytes(data[h:h + 8])
        vsize, vaddr, raw_size, raw_at = struct.unpack_from("<IIII", data, h + 8)
        # pefile_compare_shdrs: file offset, address, name (as strcmp sees it), sizes
        key = (raw_at, vaddr, raw_name.split(b"\0")[0], vsize, raw_size)
        out.append((key, raw_name.rstrip(b"\0").decode("ascii", "replace"), raw_size, raw_at, h))
    return out


def image_digest(data: bytes | memoryview, layout: HashLayout, algorithm: str) -> bytes:
    h = hashlib.new(algorithm)
    view = memoryview(data)
    for at, length in layout.ranges:
        h.update(view[at:at + length])
    return h.digest()


@dataclass(frozen=True)
class FirstSignature:
    """The PKCS#7 blob of the table's first ``WIN_CERTIFICATE``, as the kernel cuts it."""

    entry_offset: int
    der_offset: int
    der: bytes


def first_signature(data: bytes | memoryview, layout: HashLayout) -> FirstSignature | None:
    """``pefile_strip_sig_wrapper`` as fixed in 2023 (6.3, and 6.1 stable): the first entry
    (revision 2.0, PKCS signed data) must fit the table, so entries after it are ignored; its
    content is a DER SEQUENCE whose length (at most two length bytes) fits the entry, padding
    aside. None when the PE is unsigned."""
    if layout.cert_table is None:
        return None
    at, table_len = layout.cert_table
    if table_len < pe.WIN_CERTIFICATE_SIZE:
        raise _err(f"certificate table is {table_len} bytes, shorter than a WIN_CERTIFICATE",
                   "DataDirectory[SECURITY].Size", layout.cert_dirent_offset + 4)
    length, revision, ctype = struct.unpack_from("<IHH", data, at)
    if length > table_len:
        raise _err(f"certificate length {length} does not fit the table ({table_len} bytes)",
                   "certificate[0].dwLength", at)
    if revision != pe.WIN_CERT_REVISION_2_0:
        raise _err(f"certificate revision {revision:#x} is not 2.0 (0x200)",
                   "certificate[0].wRevision", at + 4)
    if ctype != pe.WIN_CERT_TYPE_PKCS_SIGNED_DATA:
        raise _err(f"certificate type {ctype} is not PKCS signed data (2)",
                   "certificate[0].wCertificateType", at + 6)
    der_at, room = at + pe.WIN_CERTIFICATE_SIZE, length - pe.WIN_CERTIFICATE_SIZE
    if room < 4:
        raise _err(f"certificate holds {max(room, 0)} bytes of signature, too few for PKCS#7",
                   "certificate[0].dwLength", at)
    head = bytes(data[der_at:der_at + 4])
    if head[0] != 0x30:
        raise _err(f"signature starts with tag {head[0]:#04x}, not a DER SEQUENCE (0x30)",
                   "certificate[0].pkcs7", der_at)
    if head[1] < 0x80:
        der_len = head[1] + 2
    elif head[1] == 0x81:
        der_len = head[2] + 3
    elif head[1] == 0x82:
        der_len = (head[2] << 8 | head[3]) + 4
    elif head[1] == 0x80:
        raise _err("signature uses an indefinite length, which kimagekit does not read",
                   "certificate[0].pkcs7", der_at + 1)
    else:
        raise _err(f"signature length form {head[1]:#04x} is too long for the kernel "
                   "(more than 0xffff bytes)", "certificate[0].pkcs7", der_at + 1)
    if der_len > room:
        raise _err(f"PKCS#7 length {der_len} runs past its certificate entry ({room} bytes)",
                   "certificate[0].pkcs7", der_at + 1)
    return FirstSignature(at, der_at, bytes(data[der_at:der_at + der_len]))
