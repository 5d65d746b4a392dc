"""The kernels kimagekit is fed: recognised from their content and described as frozen
dataclasses. x86 bzImage (setup header, version string, PE wrapper and signature, compressed
payload decompressed to the vmlinux inside), ELF vmlinux (see :mod:`kimagekit.vmlinux`), arm64
``Image`` and EFI zboot; and the purgatory object embedded in a kernel built with kexec_file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kimagekit import decompress as dz
from kimagekit import pe_file
from kimagekit import vmlinux as vm
from kimagekit.errors import KimageError, ParseError, RuleError, converted
from kimagekit.formats import arm64 as a64
from kimagekit.formats import bzimage as bz
from kimagekit.formats import elf
from kimagekit.purgatory import DIGEST_SYMBOLS, PurgatoryObject, parse_purgatory, symbols

__all__ = [
    "BZ", "MAX_VERSION_STRING", "PURGATORY_MAX", "SIZE_TRAILER", "ZBOOT_COMP_TYPE_OFFSET",
    "Arm64Image", "BzImage", "FoundPurgatory", "HeaderField", "Payload", "SetupHeader", "Zboot",
    "bzimage_payload", "find_purgatory", "has_kimagekit_note", "kernel_kind", "probe_bzimage64",
    "purgatory_object", "purgatory_while_decompressing", "read_arm64_image", "read_bzimage",
    "read_setup_header", "read_zboot",
]

BZ = "bzImage"
MAX_VERSION_STRING = 256
SIZE_TRAILER = 4  # the build appends the decompressed size (le32) to every compressed payload


@dataclass(frozen=True)
class HeaderField:
    name: str
    offset: int
    size: int
    value: int | str


@dataclass(frozen=True)
class SetupHeader:
    version: int
    end: int  # one past the header's last byte: 0x202 + the jump's displacement byte
    fields: tuple[HeaderField, ...]

    def __getitem__(self, name: str) -> int:
        """A field the caller needs; its absence is the file's fault, so a ParseError."""
        for f in self.fields:
            if f.name == name and isinstance(f.value, int):
                return f.value
        off = next((o for n, o, _, _ in bz.SETUP_HEADER_FIELDS if n == name), None)
        raise _err(f"the setup header (protocol {self.protocol}, ending at {self.end:#x} as its "
                   f"jump says) has no {name}", f"setup_header.{name}", off)

    def get(self, name: str, default: int = 0) -> int:
        return next((f.value for f in self.fields if f.name == name
                     and isinstance(f.value, int)), default)

    @property
    def protocol(self) -> str:
        return f"{self.version >> 8}.{self.version & 0xFF:02d}"


@dataclass(frozen=True)
class Payload:
    offset: int  # in the file
    length: int
    compression: str | None
    claimed_size: int | None  # the le32 size trailer
    decompressed_size: int | None  # None when not decompressed
    vmlinux: vm.ElfKernel | None


@dataclass(frozen=True)
class BzImage:
    size: int
    header: SetupHeader
    setup_sects: int  # as used: 0 means 4
    kernel_offset: int  # (setup_sects + 1) * 512: where the protected-mode kernel starts
    version_string: str | None
    pe: pe_file.PeInfo | None
    payload: Payload | None


@dataclass(frozen=True)
class Arm64Image:
    size: int
    text_offset: int
    image_size: int
    flags: int
    big_endian: bool
    page_size: int | None
    phys_anywhere: bool
    pe: pe_file.PeInfo | None
    banner: str | None


@dataclass(frozen=True)
class Zboot:
    size: int
    comp_type: str
    payload_offset: int
    payload_size: int
    compression: str | None
    decompressed_size: int | None
    image: Arm64Image | None
    pe: pe_file.PeInfo | None


def _err(msg: str, field: str, offset: int | None, fmt: str = BZ) -> ParseError:
    return ParseError(msg, fmt=fmt, field=field, offset=offset)


# --- detection -----------------------------------------------------------------------------------

def kernel_kind(head: bytes) -> str | None:
    """"bzImage", "zboot", "arm64-image", "vmlinux" or None, from the first bytes."""
    if len(head) >= bz.HDRS_OFFSET + 4 and head[bz.HDRS_OFFSET:bz.HDRS_OFFSET + 4] \
            == bz.HDRS_MAGIC:
        return "bzImage"
    if len(head) >= 8 and head[:2] == b"MZ" and head[4:8] == a64.ZBOOT_MAGIC:
        return "zboot"
    if len(head) >= a64.ARM64_HEADER_SIZE and head[0x38:0x3C] == a64.ARM64_IMAGE_MAGIC:
        return "arm64-image"
    if vm.is_elf_kernel(head):
        return "vmlinux"
    return None


# --- bzImage -------------------------------------------------------------------------------------

def read_setup_header(data: bytes | memoryview) -> SetupHeader:
    """The setup header as far as the file's protocol version and its jump say it goes."""
    size = len(data)
    if size < bz.HDRS_OFFSET + 6:
        raise _err(f"file is {size} bytes: the setup header is truncated before its magic "
                   "and version (0x208)", "setup_header.header", bz.HDRS_OFFSET)
    if bytes(data[bz.HDRS_OFFSET:bz.HDRS_OFFSET + 4]) != bz.HDRS_MAGIC:
        raise _err("no \"HdrS\" magic: not a bzImage", "setup_header.header", bz.HDRS_OFFSET)
    (version,) = struct.unpack_from("<H", data, 0x206)
    end = 0x202 + data[0x201]
    fields = []
    for name, off, fsize, since in bz.SETUP_HEADER_FIELDS:
        if version < since or off + fsize > end:
            continue
        if off + fsize > size:
            raise _err(f"setup header is truncated: {name} ({fsize} bytes at {off:#x}) is past "
                       f"the end of the file ({size} bytes)", f"setup_header.{name}", off)
        raw = bytes(data[off:off + fsize])
        value: int | str = raw.decode("ascii", "replace") if name == "header" \
            else int.from_bytes(raw, "little")
        fields.append(HeaderField(name, off, fsize, value))
    return SetupHeader(version, end, tuple(fields))


def read_bzimage(data: bytes | memoryview, *, decompress: bool = False,
                 limit: int = dz.DEFAULT_LIMIT) -> BzImage:
    """Describe a bzImage; with ``decompress`` the payload is decompressed (bounded by
    ``limit``) and the vmlinux inside described."""
    hdr = read_setup_header(data)
    size = len(data)
    sects = hdr["setup_sects"] or bz.DEFAULT_SETUP_SECTS
    kernel_offset = (sects + 1) * bz.SECTOR
    if kernel_offset > size:
        raise _err(f"setup code ({sects} + 1 sectors = {kernel_offset:#x} bytes) runs past the "
                   f"end of the file ({size} bytes)", "setup_header.setup_sects", 0x1F1)
    return BzImage(size, hdr, sects, kernel_offset, _version_string(data, hdr),
                   pe_file.parse_pe(data) if pe_file.has_pe(data) else None,
                   _payload(data, hdr, kernel_offset, decompress, limit))


def _version_string(data: bytes | memoryview, hdr: SetupHeader) -> str | None:
    ptr = hdr.get("kernel_version")
    if not ptr:
        return None
    at = 0x200 + ptr
    if at >= len(data):
        raise _err(f"kernel_version points at {at:#x}, past the end of the file "
                   f"({len(data)} bytes)", "setup_header.kernel_version", 0x20E)
    raw = bytes(data[at:at + MAX_VERSION_STRING])
    return raw.split(b"\0")[0].decode("ascii", "replace")


def _payload(data: bytes | memoryview, hdr: SetupHeader, kernel_offset: int, decompress: bool,
             limit: int) -> Payload | None:
    if hdr.version < 0x0208:
        return None
    off, length = hdr["payload_offset"], hdr["payload_length"]
    room = len(data) - kernel_offset
    if off > room:
        raise _err(f"payload_offset {off:#x} is past the end of the file (the protected-mode "
                   f"kernel has {room:#x} bytes)", "setup_header.payload_offset", 0x248)
    if off + length > room:
        raise _err(f"payload ({length:#x} bytes at {off:#x}) runs past the end of the file (the "
                   f"protected-mode kernel has {room:#x} bytes)", "setup_header.payload_length",
                   0x24C)
    at = kernel_offset + off
    raw = memoryview(data)[at:at + length]
    kind = dz.detect(raw)
    claimed = None
    if length >= SIZE_TRAILER + 4:
        (claimed,) = struct.unpack_from("<I", raw, length - SIZE_TRAILER)
    if not decompress:
        return Payload(at, length, kind, claimed, None, None)
    if claimed is not None and claimed > limit:
        raise _err(f"the size trailer claims {claimed} decompressed bytes, beyond the "
                   f"{limit}-byte limit (decompression bomb?)", "payload.size_trailer",
                   at + length - SIZE_TRAILER)
    out = dz.decompress(raw, fmt=BZ, field="payload", offset=at, limit=limit)
    if claimed is not None and claimed != len(out.data):
        raise _err(f"decompressed to {len(out.data)} bytes but the size trailer says "
                   f"{claimed}", "payload.size_trailer", at + length - SIZE_TRAILER)
    inner = vm.read_elf_kernel(out.data) if vm.is_elf_kernel(out.data[:64]) else None
    return Payload(at, length, out.compression, claimed, len(out.data), inner)


def bzimage_payload(data: bytes | memoryview, *, limit: int = dz.DEFAULT_LIMIT) -> bytes:
    """The decompressed payload (the vmlinux) of a bzImage."""
    img = read_bzimage(data)
    if img.payload is None:
        raise _err(f"boot protocol {img.header.protocol} has no payload fields (2.08+)",
                   "setup_header.version", 0x206)
    p = img.payload
    if p.claimed_size is not None and p.claimed_size > limit:
        raise _err(f"the size trailer claims {p.claimed_size} decompressed bytes, beyond the "
                   f"{limit}-byte limit (decompression bomb?)", "payload.size_trailer",
                   p.offset + p.length - SIZE_TRAILER)
    raw = memoryview(data)[p.offset:p.offset + p.length]
    return dz.decompress(raw, fmt=BZ, field="payload", offset=p.offset, limit=limit).data


def probe_bzimage64(data: bytes | memoryview, img: BzImage, *, five_level: bool = False) -> None:
    """``bzImage64_probe``: the conditions for the kexec_file 64-bit loader to take the file.
    ``five_level``: the loading kernel runs with 5-level paging (``pgtable_l5_enabled()``)."""
    h = img.header

    def no(msg: str, field: str, offset: int) -> RuleError:
        return RuleError(msg, fmt=BZ, field=f"setup_header.{field}", offset=offset)

    if img.size < 2 * bz.SECTOR:
        raise no(f"file is {img.size} bytes, shorter than two sectors", "setup_sects", 0x1F1)
    if h.get("boot_flag") != bz.BOOT_FLAG:
        raise no(f"boot_flag {h.get('boot_flag'):#x} is not 0xaa55", "boot_flag", 0x1FE)
    if h.version < 0x020C:
        raise no(f"boot protocol {h.protocol} is older than 2.12", "version", 0x206)
    if not h.get("loadflags") & bz.LOADED_HIGH:
        raise no("loadflags lacks LOADED_HIGH (a zImage, not a bzImage)", "loadflags", 0x211)
    xlf = h.get("xloadflags")
    if not xlf & bz.XLF_KERNEL_64:
        raise no("xloadflags lacks XLF_KERNEL_64", "xloadflags", 0x236)
    if not xlf & bz.XLF_CAN_BE_LOADED_ABOVE_4G:
        raise no("xloadflags lacks XLF_CAN_BE_LOADED_ABOVE_4G", "xloadflags", 0x236)
    if five_level and not xlf & bz.XLF_5LEVEL:
        raise no("xloadflags lacks XLF_5LEVEL: the kernel cannot handle the 5-level paging the "
                 "loading kernel runs with", "xloadflags", 0x236)


# --- arm64 ---------------------------------------------------------------------------------------

def read_arm64_image(data: bytes | memoryview) -> Arm64Image:
    if len(data) < a64.ARM64_HEADER_SIZE:
        raise _err(f"file is {len(data)} bytes, shorter than the arm64 Image header (64)",
                   "magic", 0, "arm64-image")
    h = a64.image_header.parse(bytes(data[:a64.ARM64_HEADER_SIZE]))
    if h.magic != a64.ARM64_IMAGE_MAGIC:
        raise _err("no ARM\\x64 magic at 0x38", "magic", 0x38, "arm64-image")
    flags = h.flags
    page = a64.PAGE_SIZES[(flags >> a64.FLAG_PAGE_SIZE_SHIFT) & a64.FLAG_PAGE_SIZE_MASK]
    return Arm64Image(len(data), h.text_offset, h.image_size, flags, bool(flags & a64.FLAG_BE),
                      page, bool(flags & a64.FLAG_PHYS_ANYWHERE),
                      pe_file.parse_pe(data) if pe_file.has_pe(data) else None,
                      vm.find_banner(bytes(data)))


ZBOOT_COMP_TYPE_OFFSET = 24


def read_zboot(data: bytes | memoryview, *, decompress: bool = False,
               limit: int = dz.DEFAULT_LIMIT) -> Zboot:
    f = "zboot"
    if len(data) < a64.ZBOOT_HEADER_SIZE:
        raise _err(f"file is {len(data)} bytes, shorter than the zboot header (64)",
                   "image_type", 4, f)
    # The length is checked above, so only comp_type (ASCII text) can fail to parse.
    with converted(f, "comp_type", ZBOOT_COMP_TYPE_OFFSET):
        h = a64.zboot_header.parse(bytes(data[:a64.ZBOOT_HEADER_SIZE]))
    if h.image_type != a64.ZBOOT_MAGIC:
        raise _err("no \"zimg\" image type", "image_type", 4, f)
    if h.payload_offset > len(data):
        raise _err(f"payload_offset {h.payload_offset:#x} is past the end of the file "
                   f"({len(data)} bytes)", "payload_offset", 8, f)
    if h.payload_offset + h.payload_size > len(data):
        raise _err(f"payload ({h.payload_size:#x} bytes at {h.payload_offset:#x}) runs past the "
                   f"end of the file ({len(data)} bytes)", "payload_size", 12, f)
    raw = memoryview(data)[h.payload_offset:h.payload_offset + h.payload_size]
    kind = dz.detect(raw)
    size = image = None
    if decompress:
        out = dz.decompress(raw, fmt=f, field="payload", offset=h.payload_offset, limit=limit)
        size = len(out.data)
        if kernel_kind(out.data[:a64.ARM64_HEADER_SIZE]) == "arm64-image":
            image = read_arm64_image(out.data)
    return Zboot(len(data), h.comp_type, h.payload_offset, h.payload_size, kind, size, image,
                 pe_file.parse_pe(data) if pe_file.has_pe(data) else None)


# --- purgatory extraction ------------------------------------------------------------------------

@dataclass(frozen=True)
class FoundPurgatory:
    data: bytes
    offset: int  # in the vmlinux
    how: str  # "symbol kexec_purgatory" or "scan"
    vmlinux_from: str  # "bzImage payload" or "vmlinux"


PURGATORY_MAX = 16 << 20


def find_purgatory(data: bytes | memoryview, *, limit: int = dz.DEFAULT_LIMIT) -> FoundPurgatory:
    """The purgatory object a kexec_file kernel embeds (``kexec_purgatory``), from a bzImage
    (after decompressing its payload) or an ELF vmlinux."""
    kind = kernel_kind(bytes(data[:a64.ARM64_HEADER_SIZE + 0x200]))
    if kind == "bzImage":
        inner: bytes = bzimage_payload(data, limit=limit)
        source = "bzImage payload"
    elif kind == "vmlinux":
        inner = data if isinstance(data, bytes) else bytes(data)
        source = "vmlinux"
    else:
        raise ParseError("not a bzImage or ELF vmlinux (the kernels that embed a purgatory)",
                         fmt="kernel", field="magic", offset=0)
    if not vm.is_elf_kernel(inner[:64]):
        raise ParseError("the bzImage payload is not an ELF vmlinux", fmt=BZ, field="payload")
    k = vm.read_elf_kernel(inner)
    by_symbol = _by_symbol(inner, k)
    if by_symbol is not None:
        return FoundPurgatory(by_symbol[1], by_symbol[0], "symbol kexec_purgatory", source)
    found = _scan(inner, k.machine)
    if found is None:
        raise RuleError("this kernel embeds no purgatory: no kexec_purgatory symbol and no "
                        "relocatable ELF object for its machine inside (built without "
                        "CONFIG_KEXEC_FILE?)", fmt="kernel", field="kexec_purgatory")
    return FoundPurgatory(found[1], found[0], "scan", source)


def _by_symbol(data: bytes, k: vm.ElfKernel) -> tuple[int, bytes] | None:
    sym = vm.find_symbol(data, k, "kexec_purgatory")
    size_sym = vm.find_symbol(data, k, "kexec_purgatory_size")
    if sym is None or size_sym is None:
        return None
    if sym.file_offset is None or size_sym.file_offset is None or size_sym.size not in (4, 8):
        raise RuleError("kexec_purgatory or kexec_purgatory_size has no content in the file",
                        fmt=vm.FMT, field="kexec_purgatory")
    raw = data[size_sym.file_offset:size_sym.file_offset + size_sym.size]
    n = int.from_bytes(raw, "little" if k.little else "big")
    if n > PURGATORY_MAX or sym.file_offset + n > len(data):
        raise ParseError(f"kexec_purgatory_size {n} does not fit the file", fmt=vm.FMT,
                         field="kexec_purgatory_size", offset=size_sym.file_offset)
    blob = data[sym.file_offset:sym.file_offset + n]
    parse_purgatory(blob)
    return sym.file_offset, blob


def _scan(data: bytes, machine: int) -> tuple[int, bytes] | None:
    """The first ET_REL ELF64 object for ``machine`` after the file's own header that parses
    completely (headers, sections, symbols) and has the digest symbols."""
    at = data.find(elf.ELFMAG + b"\x02", 1)
    while at >= 0:
        blob = _candidate(data, at, machine)
        if blob is not None:
            return at, blob
        at = data.find(elf.ELFMAG + b"\x02", at + 1)
    return None


def _candidate(data: bytes, at: int, machine: int) -> bytes | None:
    end = _rel_extent(data, at, machine)
    if end is None or end == _MORE or at + end > len(data):
        return None
    blob = data[at:at + end]
    try:
        obj = parse_purgatory(blob)
        names = {s.name for s in symbols(obj)}
    except KimageError:
        return None
    if not any(pair[0] in names for pair in DIGEST_SYMBOLS):
        return None
    return blob


_WAIT = "wait"


def purgatory_while_decompressing(data: bytes | memoryview, *,
                                  limit: int = dz.DEFAULT_LIMIT) -> bytes:
    """The purgatory a bzImage embeds, for ``build --purgatory-from``: its payload decompressed
    only until the first embedded object :func:`_scan` would take is complete (the purgatory
    sits in .rodata, well before the payload's end). Anything else, and anything that goes
    wrong on the way (no ELF vmlinux inside, a damaged stream, no object found), is left to
    :func:`find_purgatory`, so its errors are unchanged. Unlike it, the ``kexec_purgatory``
    symbol (in the section headers at the payload's end) is not looked up: in a kernel's
    build the symbol names that same object."""
    try:
        found = _purgatory_early(data, limit)
    except KimageError:
        found = None
    return find_purgatory(data, limit=limit).data if found is None else found


def _purgatory_early(data: bytes | memoryview, limit: int) -> bytes | None:
    if kernel_kind(bytes(data[:a64.ARM64_HEADER_SIZE + 0x200])) != "bzImage":
        return None
    p = read_bzimage(data).payload
    if p is None or (p.claimed_size is not None and p.claimed_size > limit):
        return None
    raw = memoryview(data)[p.offset:p.offset + p.length]
    buf = bytearray()
    machine: int | None = None
    at = 1
    for piece in dz.stream(raw, fmt=BZ, field="payload", offset=p.offset, limit=limit):
        buf += piece
        if machine is None:
            if len(buf) < 64:
                continue
            if not vm.is_elf_kernel(bytes(buf[:64])):
                return None
            machine = struct.unpack_from("<H" if buf[5] == 1 else ">H", buf, 18)[0]
        while True:
            at = buf.find(elf.ELFMAG + b"\x02", at)
            if at < 0:
                at = max(1, len(buf) - 4)  # a magic split across pieces is found next time
                break
            got = _early_candidate(buf, at, machine)
            if got == _WAIT:
                break  # the first candidate decides: wait for the rest of it
            if isinstance(got, bytes):
                return got
            at += 1
    return None


def _early_candidate(buf: bytearray, at: int, machine: int) -> bytes | str | None:
    """:func:`_candidate` at ``at`` once all of it has been decompressed (``_WAIT`` before)."""
    end = _rel_extent(buf, at, machine)
    if end is None:
        return None
    if end == _MORE or at + end > len(buf):
        return _WAIT
    return _candidate(bytes(buf[at:at + end]), 0, machine)


_MORE = -1


def _rel_extent(buf: bytes | bytearray, at: int, machine: int) -> int | None:
    """How many bytes from ``at`` an ELF64 ET_REL object for ``machine`` spans (headers, section
    table, section contents); None when there is none there or it would pass PURGATORY_MAX;
    ``_MORE`` while ``buf`` ends before that can be told."""
    if at + 64 > len(buf):
        return _MORE
    if buf[at + 5] not in (1, 2):
        return None
    order = "<" if buf[at + 5] == 1 else ">"
    e_type, e_machine = struct.unpack_from(order + "HH", buf, at + 16)
    (shoff,) = struct.unpack_from(order + "Q", buf, at + 40)
    shentsize, shnum = struct.unpack_from(order + "HH", buf, at + 58)
    end = shoff + shnum * 64
    if (e_type != elf.ET_REL or e_machine != machine or shentsize != 64 or shnum == 0
            or end > PURGATORY_MAX):
        return None
    if at + end > len(buf):
        return _MORE
    for i in range(shnum):
        sh = at + shoff + i * 64
        (sh_type,) = struct.unpack_from(order + "I", buf, sh + 4)
        sh_offset, sh_size = struct.unpack_from(order + "QQ", buf, sh + 24)
        if sh_type != elf.SHT_NOBITS:
            end = max(end, sh_offset + sh_size)
    return None if end > PURGATORY_MAX else end


def purgatory_object(data: bytes | memoryview) -> PurgatoryObject:
    """The purgatory inside a kernel, parsed and ready to load."""
    return parse_purgatory(find_purgatory(data).data)


def has_kimagekit_note(head: bytes) -> bool:
    """Whether an ELF64 file's PT_NOTEs (those inside ``head``) hold a note owned by kimagekit:
    what tells a kexec image from an ELF kernel."""
    from kimagekit.formats.kexec import NOTE_OWNER

    if len(head) < 64 or head[:4] != elf.ELFMAG or head[4] != elf.ELFCLASS64:
        return False
    order = "<" if head[5] == elf.ELFDATA2LSB else ">"
    (phoff,) = struct.unpack_from(order + "Q", head, 32)
    phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
    name = NOTE_OWNER.encode() + b"\0"
    for i in range(phnum if phentsize == 56 else 0):
        at = phoff + i * 56
        if at + 56 > len(head):
            break
        p_type, _flags, p_offset = struct.unpack_from(order + "IIQ", head, at)
        (p_filesz,) = struct.unpack_from(order + "Q", head, at + 32)
        if p_type != elf.PT_NOTE:
            continue
        n, end = p_offset, min(p_offset + p_filesz, len(head))
        while n + 12 <= end:
            namesz, descsz, _t = struct.unpack_from(order + "III", head, n)
            if head[n + 12:n + 12 + namesz] == name:
                return True
            n += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False
