"""The PE/COFF wrapper of an EFI-stub kernel: headers, sections, and the certificate table that
holds its Authenticode signatures. Read only as far as describing and bounds-checking go."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kimagekit.errors import ParseError, converted
from kimagekit.formats import pe

__all__ = ["FMT", "Certificate", "PeInfo", "has_pe", "parse_pe"]

FMT = "pe"


@dataclass(frozen=True)
class Certificate:
    offset: int
    length: int
    revision: int
    certificate_type: int


@dataclass(frozen=True)
class PeInfo:
    pe_offset: int  # e_lfanew
    machine: int
    optional_magic: str  # "PE32" or "PE32+"
    entry_point: int  # AddressOfEntryPoint (an RVA)
    size_of_image: int
    sections: tuple[str, ...]
    certificate_table: tuple[int, int] | None  # (file offset, size)
    certificates: tuple[Certificate, ...]

    @property
    def signed(self) -> bool:
        """Carries at least one Authenticode (PKCS#7 signed data) certificate."""
        return any(c.certificate_type == pe.WIN_CERT_TYPE_PKCS_SIGNED_DATA
                   for c in self.certificates)


def _err(msg: str, field: str, offset: int | None) -> ParseError:
    return ParseError(msg, fmt=FMT, field=field, offset=offset)


def has_pe(data: bytes | memoryview) -> bool:
    if len(data) < pe.DOS_HEADER_SIZE or bytes(data[:2]) != pe.MZ_MAGIC:
        return False
    (lfanew,) = struct.unpack_from("<I", data, pe.E_LFANEW_OFFSET)
    return lfanew + 4 <= len(data) and bytes(data[lfanew:lfanew + 4]) == pe.PE_SIGNATURE


def parse_pe(data: bytes | memoryview) -> PeInfo:
    size = len(data)
    if size < pe.DOS_HEADER_SIZE:
        raise _err(f"file is {size} bytes, shorter than an MS-DOS header (64)", "e_magic", 0)
    (lfanew,) = struct.unpack_from("<I", data, pe.E_LFANEW_OFFSET)
    coff_at = lfanew + 4
    if coff_at + pe.COFF_FILE_HEADER_SIZE > size:
        raise _err(f"e_lfanew {lfanew:#x} points past the end of the file ({size} bytes)",
                   "e_lfanew", pe.E_LFANEW_OFFSET)
    if bytes(data[lfanew:coff_at]) != pe.PE_SIGNATURE:
        raise _err("no PE signature at e_lfanew", "Signature", lfanew)
    with converted(FMT, "FileHeader", coff_at):
        coff = pe.coff_file_header.parse(bytes(data[coff_at:coff_at + 20]))
    opt_at = coff_at + pe.COFF_FILE_HEADER_SIZE
    opt_end = opt_at + coff.SizeOfOptionalHeader
    if opt_end > size or coff.SizeOfOptionalHeader < 2:
        raise _err(f"optional header ({coff.SizeOfOptionalHeader} bytes at {opt_at:#x}) does "
                   f"not fit the file ({size} bytes)", "FileHeader.SizeOfOptionalHeader",
                   coff_at + 16)
    (magic,) = struct.unpack_from("<H", data, opt_at)
    if magic not in (pe.PE32_MAGIC, pe.PE32PLUS_MAGIC):
        raise _err(f"optional header magic {magic:#x} is neither PE32 nor PE32+",
                   "OptionalHeader.Magic", opt_at)
    schema = pe.optional_header_pe32plus if magic == pe.PE32PLUS_MAGIC \
        else pe.optional_header_pe32
    fixed = schema.sizeof()
    if opt_at + fixed > opt_end:
        raise _err(f"optional header is {coff.SizeOfOptionalHeader} bytes, shorter than its "
                   f"fixed part ({fixed})", "FileHeader.SizeOfOptionalHeader", coff_at + 16)
    with converted(FMT, "OptionalHeader", opt_at):
        opt = schema.parse(bytes(data[opt_at:opt_at + fixed]))
    ndirs = opt.NumberOfRvaAndSizes
    dirs_at = opt_at + fixed
    if ndirs > pe.MAX_DATA_DIRECTORIES or dirs_at + ndirs * 8 > opt_end:
        raise _err(f"NumberOfRvaAndSizes {ndirs} does not fit the optional header",
                   "OptionalHeader.NumberOfRvaAndSizes", opt_at + fixed - 4)
    dirs = [struct.unpack_from("<II", data, dirs_at + 8 * i) for i in range(ndirs)]
    sections = _sections(data, opt_end, coff.NumberOfSections, size)
    table: tuple[int, int] | None = None
    certs: tuple[Certificate, ...] = ()
    if ndirs > pe.IMAGE_DIRECTORY_ENTRY_SECURITY:
        at, length = dirs[pe.IMAGE_DIRECTORY_ENTRY_SECURITY]
        if length:
            table = (at, length)
            certs = _certificates(data, at, length, dirs_at + 8 * 4)
    return PeInfo(lfanew, coff.Machine, "PE32+" if magic == pe.PE32PLUS_MAGIC else "PE32",
                  opt.AddressOfEntryPoint, opt.SizeOfImage, sections, table, certs)


def _sections(data: bytes | memoryview, at: int, count: int, size: int) -> tuple[str, ...]:
    if at + count * pe.SECTION_HEADER_SIZE > size:
        raise _err(f"{count} section headers at {at:#x} run past the end of the file",
                   "FileHeader.NumberOfSections", None)
    names = []
    for i in range(count):
        raw = bytes(data[at + 40 * i:at + 40 * i + 8])
        names.append(raw.rstrip(b"\0").decode("ascii", "replace"))
    return tuple(names)


def _certificates(data: bytes | memoryview, at: int, length: int,
                  dir_at: int) -> tuple[Certificate, ...]:
    end = at + length
    out: list[Certificate] = []
    if end > len(data):
        raise _err(f"certificate table ({length} bytes at {at:#x}) runs past the end of the file "
                   f"({len(data)} bytes)", "DataDirectory[SECURITY].Size", dir_at + 4)
    out = []
    while at + pe.WIN_CERTIFICATE_SIZE <= end:
        dw, rev, ctype = struct.unpack_from("<IHH", data, at)
        if dw < pe.WIN_CERTIFICATE_SIZE or at + dw > end:
            raise _err(f"certificate length {dw} does not fit the table ({end - at} bytes "
                       "left)", f"certificate[{len(out)}].dwLength", at)
        out.append(Certificate(at, dw, rev, ctype))
        at += (dw + 7) // 8 * 8
    return tuple(out)
