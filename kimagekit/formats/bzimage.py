"""x86 boot protocol layouts: the setup header (field names as in ``struct setup_header``, every
field up to protocol 2.15), ``struct boot_params`` (the 4096-byte "zero page"), ``struct
setup_data``, ``struct boot_e820_entry`` and the IMA setup_data payload. Little endian throughout.
"""

from __future__ import annotations

from construct import (
    Array,
    Bytes,
    Const,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    Padding,
    Struct,
)

SETUP_HEADER_OFFSET = 0x1F1  # offsetof(struct boot_params, hdr); also where it sits in a bzImage
HDRS_MAGIC = b"HdrS"
HDRS_OFFSET = 0x202
BOOT_FLAG = 0xAA55
BOOT_PARAMS_SIZE = 4096
SECTOR = 512
DEFAULT_SETUP_SECTS = 4  # setup_sects 0 means 4 (boot.rst)
KERNEL_ENTRY64_OFFSET = 0x200  # the 64-bit entry, from the protected-mode kernel's start

# loadflags / xloadflags bits
LOADED_HIGH = 1 << 0
XLF_KERNEL_64 = 1 << 0
XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1
XLF_EFI_HANDOVER_32 = 1 << 2
XLF_EFI_HANDOVER_64 = 1 << 3
XLF_EFI_KEXEC = 1 << 4
XLF_5LEVEL = 1 << 5
XLF_5LEVEL_ENABLED = 1 << 6

# setup_data types
SETUP_NONE, SETUP_E820_EXT, SETUP_DTB, SETUP_PCI, SETUP_EFI = 0, 1, 2, 3, 4
SETUP_APPLE_PROPERTIES, SETUP_JAILHOUSE, SETUP_CC_BLOB, SETUP_IMA, SETUP_RNG_SEED = 5, 6, 7, 8, 9
SETUP_KEXEC_KHO = 10

E820_TYPE_RAM, E820_TYPE_RESERVED = 1, 2
E820_MAX_ENTRIES_ZEROPAGE = 128

# (name, offset in the file/boot_params, size, first protocol version that defines it)
SETUP_HEADER_FIELDS: tuple[tuple[str, int, int, int], ...] = (
    ("setup_sects", 0x1F1, 1, 0x0000),
    ("root_flags", 0x1F2, 2, 0x0000),
    ("syssize", 0x1F4, 4, 0x0000),
    ("ram_size", 0x1F8, 2, 0x0000),
    ("vid_mode", 0x1FA, 2, 0x0000),
    ("root_dev", 0x1FC, 2, 0x0000),
    ("boot_flag", 0x1FE, 2, 0x0000),
    ("jump", 0x200, 2, 0x0200),
    ("header", 0x202, 4, 0x0200),
    ("version", 0x206, 2, 0x0200),
    ("realmode_swtch", 0x208, 4, 0x0200),
    ("start_sys_seg", 0x20C, 2, 0x0200),
    ("kernel_version", 0x20E, 2, 0x0200),
    ("type_of_loader", 0x210, 1, 0x0200),
    ("loadflags", 0x211, 1, 0x0200),
    ("setup_move_size", 0x212, 2, 0x0200),
    ("code32_start", 0x214, 4, 0x0200),
    ("ramdisk_image", 0x218, 4, 0x0200),
    ("ramdisk_size", 0x21C, 4, 0x0200),
    ("bootsect_kludge", 0x220, 4, 0x0200),
    ("heap_end_ptr", 0x224, 2, 0x0201),
    ("ext_loader_ver", 0x226, 1, 0x0202),
    ("ext_loader_type", 0x227, 1, 0x0202),
    ("cmd_line_ptr", 0x228, 4, 0x0202),
    ("initrd_addr_max", 0x22C, 4, 0x0203),
    ("kernel_alignment", 0x230, 4, 0x0205),
    ("relocatable_kernel", 0x234, 1, 0x0205),
    ("min_alignment", 0x235, 1, 0x020A),
    ("xloadflags", 0x236, 2, 0x020C),
    ("cmdline_size", 0x238, 4, 0x0206),
    ("hardware_subarch", 0x23C, 4, 0x0207),
    ("hardware_subarch_data", 0x240, 8, 0x0207),
    ("payload_offset", 0x248, 4, 0x0208),
    ("payload_length", 0x24C, 4, 0x0208),
    ("setup_data", 0x250, 8, 0x0209),
    ("pref_address", 0x258, 8, 0x020A),
    ("init_size", 0x260, 4, 0x020A),
    ("handover_offset", 0x264, 4, 0x020B),
    ("kernel_info_offset", 0x268, 4, 0x020F),
)
SETUP_HEADER_END = 0x26C  # one past kernel_info_offset: the 2.15 header
SETUP_HEADER_SIZE = SETUP_HEADER_END - SETUP_HEADER_OFFSET

_INT = {1: Int8ul, 2: Int16ul, 4: Int32ul, 8: Int64ul}

setup_header = Struct(*[
    name / (Bytes(4) if name == "header" else _INT[size])
    for name, _off, size, _ver in SETUP_HEADER_FIELDS
])

boot_e820_entry = Struct("addr" / Int64ul, "size" / Int64ul, "type" / Int32ul)
E820_ENTRY_SIZE = 20

setup_data = Struct("next" / Int64ul, "type" / Int32ul, "len" / Int32ul)
SETUP_DATA_SIZE = 16
ima_setup_data = Struct("addr" / Int64ul, "size" / Int64ul)
IMA_SETUP_DATA_SIZE = 16
KHO_DATA_SIZE = 32  # struct kho_data: fdt_addr, fdt_size, scratch_addr, scratch_size (6.16+)
# struct efi_setup_data: fw_vendor, __unused, tables, smbios, reserved[8]
EFI_SETUP_DATA_SIZE = 96
RNG_SEED_LENGTH = 32

efi_info = Struct(
    "efi_loader_signature" / Int32ul, "efi_systab" / Int32ul, "efi_memdesc_size" / Int32ul,
    "efi_memdesc_version" / Int32ul, "efi_memmap" / Int32ul, "efi_memmap_size" / Int32ul,
    "efi_systab_hi" / Int32ul, "efi_memmap_hi" / Int32ul,
)

# The zero page; offsets in the comments are the kernel's.
boot_params = Struct(
    "screen_info" / Bytes(0x40),  # 0x000
    "apm_bios_info" / Bytes(0x14),  # 0x040
    Padding(4),
    "tboot_addr" / Int64ul,  # 0x058
    "ist_info" / Bytes(0x10),  # 0x060
    "acpi_rsdp_addr" / Int64ul,  # 0x070
    Padding(8),
    "hd0_info" / Bytes(16),  # 0x080
    "hd1_info" / Bytes(16),  # 0x090
    "sys_desc_table" / Bytes(16),  # 0x0a0
    "olpc_ofw_header" / Bytes(16),  # 0x0b0
    "ext_ramdisk_image" / Int32ul,  # 0x0c0
    "ext_ramdisk_size" / Int32ul,  # 0x0c4
    "ext_cmd_line_ptr" / Int32ul,  # 0x0c8
    Padding(112),
    "cc_blob_address" / Int32ul,  # 0x13c
    "edid_info" / Bytes(0x80),  # 0x140
    "efi_info" / efi_info,  # 0x1c0
    "alt_mem_k" / Int32ul,  # 0x1e0
    "scratch" / Int32ul,  # 0x1e4
    "e820_entries" / Int8ul,  # 0x1e8
    "eddbuf_entries" / Int8ul,  # 0x1e9
    "edd_mbr_sig_buf_entries" / Int8ul,  # 0x1ea
    "kbd_status" / Int8ul,  # 0x1eb
    "secure_boot" / Int8ul,  # 0x1ec
    Padding(2),
    "sentinel" / Int8ul,  # 0x1ef
    Padding(1),
    "hdr" / setup_header,  # 0x1f1
    Padding(0x290 - SETUP_HEADER_END),
    "edd_mbr_sig_buffer" / Array(16, Int32ul),  # 0x290
    "e820_table" / Array(E820_MAX_ENTRIES_ZEROPAGE, boot_e820_entry),  # 0x2d0
    Padding(48),
    "eddbuf" / Bytes(6 * 82),  # 0xd00
    Padding(276),  # 0xeec
)

# offsets used when the loader edits a copy in place
OFF_EXT_RAMDISK_IMAGE = 0x0C0
OFF_EXT_RAMDISK_SIZE = 0x0C4
OFF_EXT_CMD_LINE_PTR = 0x0C8
OFF_ALT_MEM_K = 0x1E0
OFF_E820_ENTRIES = 0x1E8
OFF_SCREEN_EXT_MEM_K = 0x002  # screen_info.ext_mem_k (u16)
OFF_E820_TABLE = 0x2D0
FIELD_OFFSET = {name: off for name, off, _s, _v in SETUP_HEADER_FIELDS}
FIELD_SIZE = {name: size for name, _o, size, _v in SETUP_HEADER_FIELDS}

hdrs_magic = Const(HDRS_MAGIC)
