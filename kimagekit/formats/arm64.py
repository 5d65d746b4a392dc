"""arm64 kernel layouts: the 64-byte ``Image`` header (``Documentation/arch/arm64/booting.rst``)
and the EFI zboot header that wraps a compressed ``Image`` in a PE file
(``drivers/firmware/efi/libstub/zboot-header.S``). Little endian.
"""

from __future__ import annotations

from construct import Bytes, Int32ul, Int64ul, PaddedString, Struct

__all__ = [
    "ARM64_HEADER_SIZE", "ARM64_IMAGE_MAGIC", "ARM64_MAGIC_OFFSET", "FLAG_BE", "FLAG_BE_SHIFT",
    "FLAG_PAGE_SIZE_MASK", "FLAG_PAGE_SIZE_SHIFT", "FLAG_PHYS_ANYWHERE", "GRANULES",
    "LINUX_PE_MAGIC", "PAGE_SIZES", "ZBOOT_HEADER_SIZE", "ZBOOT_MAGIC",
    "ZBOOT_MAGIC_OFFSET", "image_header", "zboot_header",
]

ARM64_IMAGE_MAGIC = b"ARM\x64"
ARM64_MAGIC_OFFSET = 0x38
ARM64_HEADER_SIZE = 64

image_header = Struct(
    "code0" / Int32ul,
    "code1" / Int32ul,
    "text_offset" / Int64ul,
    "image_size" / Int64ul,
    "flags" / Int64ul,
    "res2" / Int64ul,
    "res3" / Int64ul,
    "res4" / Int64ul,
    "magic" / Bytes(4),
    "res5" / Int32ul,  # offset of the PE header when the Image is also an EFI application
)

# flags bits (arch/arm64/include/asm/image.h)
FLAG_BE_SHIFT = 0
FLAG_BE = 1 << FLAG_BE_SHIFT
FLAG_PAGE_SIZE_SHIFT, FLAG_PAGE_SIZE_MASK = 1, 3
FLAG_PHYS_ANYWHERE = 1 << 3
PAGE_SIZES = {0: None, 1: 4096, 2: 16384, 3: 65536}
GRANULES = (4096, 16384, 65536)

ZBOOT_MAGIC = b"zimg"
ZBOOT_MAGIC_OFFSET = 4
LINUX_PE_MAGIC = 0x818223CD

zboot_header = Struct(
    "mz_magic" / Bytes(4),
    "image_type" / Bytes(4),
    "payload_offset" / Int32ul,
    "payload_size" / Int32ul,
    "reserved" / Bytes(8),
    "comp_type" / PaddedString(32, "ascii"),
    "linux_pe_magic" / Int32ul,
    "pe_header_offset" / Int32ul,
)
ZBOOT_HEADER_SIZE = 64
