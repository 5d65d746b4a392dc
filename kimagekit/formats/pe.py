"""PE/COFF layouts as a signed EFI-stub kernel carries them: the MS-DOS header (only ``e_magic`` and
``e_lfanew`` matter), the PE signature, the COFF file header, the optional header (PE32 and PE32+)
with its data directories, section headers, and the certificate table's ``WIN_CERTIFICATE``.
Field names follow the PE/COFF specification. Little endian.
"""

from __future__ import annotations

from construct import Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Struct

__all__ = [
    "COFF_FILE_HEADER_SIZE", "DATA_DIRECTORY_SIZE", "DOS_HEADER_SIZE", "E_LFANEW_OFFSET",
    "IMAGE_DIRECTORY_ENTRY_SECURITY", "MAX_DATA_DIRECTORIES", "MZ_MAGIC", "PE_SIGNATURE",
    "SECTION_HEADER_SIZE", "WIN_CERTIFICATE_SIZE", "WIN_CERT_REVISION_2_0",
    "WIN_CERT_TYPE_PKCS_SIGNED_DATA", "coff_file_header", "data_directory", "dos_header",
    "optional_header_pe32", "optional_header_pe32plus", "section_header", "win_certificate",
]

MZ_MAGIC = b"MZ"
PE_SIGNATURE = b"PE\0\0"
E_LFANEW_OFFSET = 0x3C
PE32_MAGIC, PE32PLUS_MAGIC = 0x10B, 0x20B
IMAGE_FILE_MACHINE_AMD64, IMAGE_FILE_MACHINE_ARM64 = 0x8664, 0xAA64
IMAGE_FILE_MACHINE_I386, IMAGE_FILE_MACHINE_RISCV64 = 0x14C, 0x5064
IMAGE_DIRECTORY_ENTRY_SECURITY = 4  # the certificate table: VirtualAddress is a file offset
WIN_CERT_REVISION_2_0 = 0x0200
WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002
MAX_DATA_DIRECTORIES = 16

dos_header = Struct("e_magic" / Bytes(2), "e_unused" / Bytes(0x3A), "e_lfanew" / Int32ul)
DOS_HEADER_SIZE = 0x40

coff_file_header = Struct(
    "Machine" / Int16ul,
    "NumberOfSections" / Int16ul,
    "TimeDateStamp" / Int32ul,
    "PointerToSymbolTable" / Int32ul,
    "NumberOfSymbols" / Int32ul,
    "SizeOfOptionalHeader" / Int16ul,
    "Characteristics" / Int16ul,
)
COFF_FILE_HEADER_SIZE = 20


def _optional_header(plus: bool) -> Struct:
    word = Int64ul if plus else Int32ul
    fields = [
        "Magic" / Int16ul,
        "MajorLinkerVersion" / Int8ul,
        "MinorLinkerVersion" / Int8ul,
        "SizeOfCode" / Int32ul,
        "SizeOfInitializedData" / Int32ul,
        "SizeOfUninitializedData" / Int32ul,
        "AddressOfEntryPoint" / Int32ul,
        "BaseOfCode" / Int32ul,
    ]
    if not plus:
        fields.append("BaseOfData" / Int32ul)
    fields += [
        "ImageBase" / word,
        "SectionAlignment" / Int32ul,
        "FileAlignment" / Int32ul,
        "MajorOperatingSystemVersion" / Int16ul,
        "MinorOperatingSystemVersion" / Int16ul,
        "MajorImageVersion" / Int16ul,
        "MinorImageVersion" / Int16ul,
        "MajorSubsystemVersion" / Int16ul,
        "MinorSubsystemVersion" / Int16ul,
        "Win32VersionValue" / Int32ul,
        "SizeOfImage" / Int32ul,
        "SizeOfHeaders" / Int32ul,
        "CheckSum" / Int32ul,
        "Subsystem" / Int16ul,
        "DllCharacteristics" / Int16ul,
        "SizeOfStackReserve" / word,
        "SizeOfStackCommit" / word,
        "SizeOfHeapReserve" / word,
        "SizeOfHeapCommit" / word,
        "LoaderFlags" / Int32ul,
        "NumberOfRvaAndSizes" / Int32ul,
    ]
    return Struct(*fields)


optional_header_pe32 = _optional_header(False)
optional_header_pe32plus = _optional_header(True)
data_directory = Struct("VirtualAddress" / Int32ul, "Size" / Int32ul)
DATA_DIRECTORY_SIZE = 8

section_header = Struct(
    "Name" / Bytes(8),
    "VirtualSize" / Int32ul,
    "VirtualAddress" / Int32ul,
    "SizeOfRawData" / Int32ul,
    "PointerToRawData" / Int32ul,
    "PointerToRelocations" / Int32ul,
    "PointerToLinenumbers" / Int32ul,
    "NumberOfRelocations" / Int16ul,
    "NumberOfLinenumbers" / Int16ul,
    "Characteristics" / Int32ul,
)
SECTION_HEADER_SIZE = 40

win_certificate = Struct("dwLength" / Int32ul, "wRevision" / Int16ul,
                         "wCertificateType" / Int16ul)
WIN_CERTIFICATE_SIZE = 8
