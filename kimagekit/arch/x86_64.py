"""The x86-64 kexec_file bzImage loader (``arch/x86/kernel/kexec-bzimage64.c`` as of 6.1), offline.

Segment order as the kernel adds them: the IMA hand-over first (``ima_add_kexec_buffer`` runs
before the image loader), then the purgatory, the boot parameters (boot_params + command line +
room for the setup_data entries), the protected-mode kernel, the initrd. Every buffer is placed
top-down. What the running kernel would copy from its own state (screen_info, EDD, EFI memory
map, ACPI RSDP) is absent offline: those fields stay zero, as when the running kernel has none.
Where the rules differ between loading kernels (hole search, the kernel's ``buf_min``, room for
SETUP_IMA, SETUP_KEXEC_KHO and SETUP_DTB, the purgatory's entry) the :class:`LoaderProfile`
says which; SETUP_DTB only with KEXEC_FILE_FORCE_DTB (``force_dtb``: the running tree, an input).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kimagekit.arch.common import add_ima_buffer
from kimagekit.errors import RuleError, UsageError
from kimagekit.formats import bzimage as bz
from kimagekit.formats.kexec import entry64_regs
from kimagekit.image import HandoverStyle, KexecImage, seal
from kimagekit.kernels import BzImage, probe_bzimage64, read_bzimage
from kimagekit.kho_load import KhoLoad, add_scratch, check_kho, kho_data, kho_target
from kimagekit.loader_profile import LoaderProfile, resolve
from kimagekit.purgatory import (
    DigestPolicy,
    PurgatoryObject,
    add_purgatory,
    get_symbol,
    set_symbol,
    symbol_address,
)
from kimagekit.segments import U64_MAX, KexecBuf, MemRange, Role, SegmentList, Target, add_buffer

__all__ = [
    "ENTRY64_REGS_SIZE", "FMT", "LOADER_TYPE_KEXEC", "MAX_ELFCOREHDR_STR_LEN",
    "MIN_BOOTPARAM_ADDR", "MIN_INITRD_LOAD_ADDR", "MIN_KERNEL_LOAD_ADDR", "MIN_PURGATORY_ADDR",
    "BootParamsLayout", "SetupDataEntry", "announced_ima", "boot_params_layout", "build",
    "build_boot_params", "e820_entries", "setup_data_chain",
]

FMT = "bzImage"
MIN_PURGATORY_ADDR = 0x3000
MIN_BOOTPARAM_ADDR = 0x3000
MIN_KERNEL_LOAD_ADDR = 0x100000
MIN_INITRD_LOAD_ADDR = 0x1000000
MAX_ELFCOREHDR_STR_LEN = 30  # room kept for "elfcorehdr=0x<addr> " (crash kernels)
LOADER_TYPE_KEXEC = 0x0D << 4
ENTRY64_REGS_SIZE = 136


@dataclass(frozen=True)
class BootParamsLayout:
    """Offsets inside the boot-parameters segment, as ``bzImage64_load`` lays it out (no EFI
    runtime map offline, so ``efi_map_sz`` is 0)."""

    cmdline_len: int  # with its NUL
    params_cmdline_sz: int
    efi_setup_data_offset: int
    ima_setup_data_offset: int | None
    rng_setup_data_offset: int
    bufsz: int
    kho_setup_data_offset: int | None = None
    dtb_setup_data_offset: int | None = None


def boot_params_layout(cmdline_len: int, *, ima_kexec: bool,
                       kho: bool = False, dtb_size: int | None = None,
                       efi: bool = True) -> BootParamsLayout:
    """Setup_data room in the kernel's order: EFI, the carried tree (KEXEC_FILE_FORCE_DTB,
    6.18+: ``dtb_size`` = its ``totalsize``, not aligned), IMA (CONFIG_IMA_KEXEC), KHO
    (CONFIG_KEXEC_HANDOVER, 6.16+), the RNG seed. Without CONFIG_EFI the EFI entry's room is
    still counted in bufsz but the entries after it start where it would have (``#ifdef
    CONFIG_EFI`` around the offset's advance only), so the room lies unused at the end."""
    pc = _align(bz.BOOT_PARAMS_SIZE + cmdline_len + MAX_ELFCOREHDR_STR_LEN, 16)
    efi_sd = pc  # + ALIGN(efi_map_sz, 16) with efi_map_sz = 0
    efi_room = bz.SETUP_DATA_SIZE + bz.EFI_SETUP_DATA_SIZE
    at = efi_sd + (efi_room if efi else 0)
    dtb_sd = at if dtb_size is not None else None
    at += bz.SETUP_DATA_SIZE + dtb_size if dtb_size is not None else 0
    ima_sd = at if ima_kexec else None
    at += bz.SETUP_DATA_SIZE + bz.IMA_SETUP_DATA_SIZE if ima_kexec else 0
    kho_sd = at if kho else None
    at += bz.SETUP_DATA_SIZE + bz.KHO_DATA_SIZE if kho else 0
    end = at + bz.SETUP_DATA_SIZE + bz.RNG_SEED_LENGTH + (0 if efi else efi_room)
    return BootParamsLayout(cmdline_len, pc, efi_sd, ima_sd, at, end, kho_sd, dtb_sd)


def _align(v: int, a: int) -> int:
    return -(-v // a) * a


def e820_entries(ram: tuple[MemRange, ...], reserved: tuple[MemRange, ...]) -> list[
        tuple[int, int, int]]:
    """(addr, size, type) sorted by address: RAM ranges, then reserved ones, at most 128 (the
    zero page's table; the kernel drops the rest too)."""
    out = [(r.start, r.size, bz.E820_TYPE_RAM) for r in ram]
    out += [(r.start, r.size, bz.E820_TYPE_RESERVED) for r in reserved]
    return sorted(out)[:bz.E820_MAX_ENTRIES_ZEROPAGE]


def build_boot_params(kernel: bytes | memoryview, img: BzImage, lay: BootParamsLayout,
                      load_addr: int, cmdline: bytes, target: Target, *,
                      initrd: tuple[int, int] | None, ima: tuple[int, int] | None,
                      rng_seed: bytes | None, dtb: bytes | None = None,
                      kho: tuple[int, int, int, int] | None = None) -> bytes:
    """The boot-parameters segment's content (``lay.bufsz`` bytes). ``kho``: the
    ``struct kho_data`` of an active KHO (tree address and size, scratch address and size)."""
    buf = bytearray(lay.bufsz)
    # the setup header as the file has it, up to the end its jump announces (0x202 + the jump's
    # displacement byte, as the kernel copies it: at most 0x301, inside the zero page)
    end = min(img.header.end, len(kernel))
    buf[bz.SETUP_HEADER_OFFSET:end] = bytes(kernel[bz.SETUP_HEADER_OFFSET:end])

    def put(off: int, fmt: str, value: int) -> None:
        struct.pack_into("<" + fmt, buf, off, value)

    def hdr(name: str, value: int) -> None:
        put(bz.FIELD_OFFSET[name], {1: "B", 2: "H", 4: "I", 8: "Q"}[bz.FIELD_SIZE[name]], value)

    if initrd is not None:  # setup_initrd
        hdr("ramdisk_image", initrd[0] & 0xFFFFFFFF)
        hdr("ramdisk_size", initrd[1] & 0xFFFFFFFF)
        put(bz.OFF_EXT_RAMDISK_IMAGE, "I", initrd[0] >> 32)
        put(bz.OFF_EXT_RAMDISK_SIZE, "I", initrd[1] >> 32)
    # setup_cmdline: the bytes then a NUL on the last one, right after the zero page
    at = bz.BOOT_PARAMS_SIZE
    buf[at:at + len(cmdline)] = cmdline
    buf[at + lay.cmdline_len - 1] = 0
    cmd_phys = load_addr + at
    hdr("cmd_line_ptr", cmd_phys & 0xFFFFFFFF)
    if cmd_phys >> 32:
        put(bz.OFF_EXT_CMD_LINE_PTR, "I", cmd_phys >> 32)
    hdr("type_of_loader", LOADER_TYPE_KEXEC)
    hdr("loadflags", 0)
    # setup_boot_parameters: subarch from the running kernel (PC offline), e820, memory sizes
    hdr("hardware_subarch", 0)
    entries = e820_entries(target.ram, target.reserved)
    put(bz.OFF_E820_ENTRIES, "B", len(entries))
    for i, (addr, size, kind) in enumerate(entries):
        struct.pack_into("<QQI", buf, bz.OFF_E820_TABLE + i * bz.E820_ENTRY_SIZE, addr, size,
                         kind)
    for addr, size, kind in entries:
        last = addr + size - 1
        if kind == bz.E820_TYPE_RAM and addr <= 0x100000 < last:
            mem_k = (last >> 10) - (0x100000 >> 10)
            put(bz.OFF_SCREEN_EXT_MEM_K, "H", min(mem_k, 0xFC00))
            put(bz.OFF_ALT_MEM_K, "I", min(mem_k, 0xFFFFFFFF))
    if dtb is not None and lay.dtb_setup_data_offset is not None:  # setup_dtb
        _chain(buf, load_addr, lay.dtb_setup_data_offset, bz.SETUP_DTB, dtb)
    if ima is not None and lay.ima_setup_data_offset is not None:  # setup_ima_state
        _chain(buf, load_addr, lay.ima_setup_data_offset, bz.SETUP_IMA,
               struct.pack("<QQ", *ima))
    if lay.kho_setup_data_offset is not None:
        # setup_kho: type and length always (hashed with the segment); the data and the link
        # only when KHO is active (the tree and the scratch segment in place)
        if kho is not None:
            _chain(buf, load_addr, lay.kho_setup_data_offset, bz.SETUP_KEXEC_KHO,
                   struct.pack("<QQQQ", *kho))
        else:
            struct.pack_into("<QII", buf, lay.kho_setup_data_offset, 0, bz.SETUP_KEXEC_KHO,
                             bz.KHO_DATA_SIZE)
    if rng_seed is not None:  # setup_rng_seed: random bytes are an input, never invented
        _chain(buf, load_addr, lay.rng_setup_data_offset, bz.SETUP_RNG_SEED, rng_seed)
    return bytes(buf)


def _chain(buf: bytearray, load_addr: int, off: int, kind: int, data: bytes) -> None:
    """Push a setup_data entry at ``off`` onto the head of the hdr.setup_data list."""
    head_off = bz.FIELD_OFFSET["setup_data"]
    (head,) = struct.unpack_from("<Q", buf, head_off)
    struct.pack_into("<QII", buf, off, head, kind, len(data))
    buf[off + bz.SETUP_DATA_SIZE:off + bz.SETUP_DATA_SIZE + len(data)] = data
    struct.pack_into("<Q", buf, head_off, load_addr + off)


def build(target: Target, kernel: bytes | memoryview, purgatory: PurgatoryObject, *,
          initrd: bytes | memoryview | None = None, cmdline: str = "",
          handover: bytes | None = None, handover_size: int | None = None,
          policy: DigestPolicy = DigestPolicy.SEED, ima_kexec: bool | None = None,
          rng_seed: bytes | None = None, profile: LoaderProfile | None = None,
          force_dtb: bytes | None = None, five_level: bool = False,
          kho: KhoLoad | None = None) -> KexecImage:
    """Compose and seal an x86-64 image from a bzImage, as ``bzImage64_load`` does.

    ``profile``: the loading kernel (default: the newest rules); the hole search is the
    target's. ``ima_kexec`` overrides its CONFIG_IMA_KEXEC (room for the SETUP_IMA entry).
    ``handover`` is the IMA kexec buffer, ``handover_size`` its segment's memsz.
    ``force_dtb``: the running system's tree, carried in SETUP_DTB as KEXEC_FILE_FORCE_DTB
    does (6.18+). ``five_level``: the loading kernel runs with 5-level paging. ``kho``: KHO is
    active in the loading kernel (its scratch segment, every segment inside its scratch areas,
    SETUP_KEXEC_KHO chained)."""
    prof = profile if profile is not None else resolve()
    if ima_kexec is None:
        ima_kexec = prof.ima_kexec
    if target.arch != "x86_64":
        raise UsageError(f"target arch {target.arch!r} is not x86_64", fmt=FMT, field="arch")
    img = read_bzimage(kernel)
    probe_bzimage64(kernel, img, five_level=five_level)
    if force_dtb is not None and not prof.force_dtb:
        raise UsageError(f"KEXEC_FILE_FORCE_DTB came in 6.18: the loader profile {prof.name} "
                         "carries no device tree", fmt=FMT, field="force_dtb")
    if rng_seed is not None and len(rng_seed) != bz.RNG_SEED_LENGTH:
        raise UsageError(f"an RNG seed is {bz.RNG_SEED_LENGTH} bytes, not {len(rng_seed)}",
                         fmt=FMT, field="rng_seed")
    if kho is not None:
        if not prof.kho_room:
            raise UsageError(f"KHO needs a loading kernel with CONFIG_KEXEC_HANDOVER (6.16+): "
                             f"the loader profile {prof.name} has none", fmt=FMT,
                             field="kexec_handover")
        check_kho(kho, target)
        target = kho_target(target, kho)
    if handover is not None and not ima_kexec:
        raise UsageError("an IMA hand-over needs a loading kernel with CONFIG_IMA_KEXEC",
                         fmt=FMT, field="ima_kexec")
    cmd = cmdline.encode() + b"\0"
    limit = img.header.get("cmdline_size")
    if len(cmd) > limit:
        raise RuleError(f"command line is {len(cmd)} bytes with its NUL, more than the kernel's "
                        f"cmdline_size {limit}", fmt=FMT, field="setup_header.cmdline_size",
                        offset=0x238)
    if len(cmd) + MAX_ELFCOREHDR_STR_LEN > limit:
        raise RuleError(f"command line is {len(cmd)} bytes with its NUL: with the "
                        f"{MAX_ELFCOREHDR_STR_LEN} kept for elfcorehdr= it exceeds cmdline_size "
                        f"{limit}", fmt=FMT, field="setup_header.cmdline_size", offset=0x238)
    sl = SegmentList(target)
    sl, ima = add_ima_buffer(sl, handover, handover_size, policy)
    sl, scratch = add_scratch(sl, kho)  # kho_fill_kimage: after IMA, before the image loader
    sl, lp = add_purgatory(sl, purgatory, buf_min=MIN_PURGATORY_ADDR, buf_max=U64_MAX,
                           top_down=True, entry_rule=prof.entry_rule)
    lay = boot_params_layout(len(cmd), ima_kexec=ima_kexec, kho=prof.kho_room,
                             dtb_size=None if force_dtb is None else len(force_dtb),
                             efi=prof.efi)
    sl, bp_seg = add_buffer(sl, KexecBuf(bytes(lay.bufsz), lay.bufsz, Role.BOOT_PARAMS,
                                         buf_align=16, buf_min=MIN_BOOTPARAM_ADDR,
                                         top_down=True))
    body = memoryview(kernel)[img.kernel_offset:]
    init_size = img.header.get("init_size")
    align = img.header.get("kernel_alignment")
    # since 6.9 the kernel stays at or above its pref_address (it would move there anyway)
    pref = img.header.get("pref_address") if prof.kernel_above_pref_address else 0
    sl, kseg = add_buffer(sl, KexecBuf(body, _align(max(init_size, 1), target.page_size),
                                       Role.KERNEL, buf_align=align,
                                       buf_min=max(MIN_KERNEL_LOAD_ADDR, pref), top_down=True))
    rd = None
    if initrd is not None:
        sl, rseg = add_buffer(sl, KexecBuf(initrd, len(initrd), Role.INITRD,
                                           buf_align=target.page_size,
                                           buf_min=MIN_INITRD_LOAD_ADDR, top_down=True))
        rd = (rseg.mem, len(initrd))
    sd_kho = None if kho is None or scratch is None else kho_data(kho, scratch,
                                                                   target.page_size)
    params = build_boot_params(kernel, img, lay, bp_seg.mem, cmd, target, initrd=rd, ima=ima,
                               rng_seed=rng_seed, dtb=force_dtb, kho=sd_kho)
    segs = list(sl.segments)
    i = sl.segments.index(bp_seg)
    segs[i] = type(bp_seg)(params, bp_seg.mem, bp_seg.memsz, bp_seg.role, bp_seg.checksummed)
    sl = SegmentList(sl.target, tuple(segs))
    regs = entry64_regs.parse(get_symbol(lp, "entry64_regs", ENTRY64_REGS_SIZE))
    regs.rbx = 0  # the bootstrap processor
    regs.rsi = bp_seg.mem
    regs.rip = kseg.mem + bz.KERNEL_ENTRY64_OFFSET
    regs.rsp = symbol_address(lp, "stack_end")
    lp = set_symbol(lp, "entry64_regs", entry64_regs.build(regs))
    return seal(sl, policy, purgatory=lp, cmdline=cmdline.encode(),
                handover_style=HandoverStyle.SETUP_DATA if ima else HandoverStyle.NONE)


@dataclass(frozen=True)
class SetupDataEntry:
    address: int
    type: int
    data: bytes


def setup_data_chain(params: bytes | memoryview, load_addr: int) -> tuple[SetupDataEntry, ...]:
    """Walk ``hdr.setup_data`` inside a boot-parameters segment loaded at ``load_addr`` (links
    that leave the segment end the walk: the next kernel would follow them into other memory)."""
    out: list[SetupDataEntry] = []
    (at,) = struct.unpack_from("<Q", params, bz.FIELD_OFFSET["setup_data"])
    while at and len(out) < 64:
        off = at - load_addr
        if not 0 <= off <= len(params) - bz.SETUP_DATA_SIZE:
            break
        nxt, kind, length = struct.unpack_from("<QII", params, off)
        body = bytes(params[off + bz.SETUP_DATA_SIZE:off + bz.SETUP_DATA_SIZE + length])
        if len(body) != length:
            raise RuleError(f"setup_data entry at {at:#x} ({length} bytes) runs past the "
                            "boot parameters", fmt="boot-params", field="setup_data.len",
                            offset=off + 12)
        out.append(SetupDataEntry(at, kind, body))
        at = nxt
    return tuple(out)


def announced_ima(params: bytes | memoryview, load_addr: int) -> tuple[int, int] | None:
    """(addr, size) of the SETUP_IMA entry, as the next kernel's ``parse_setup_data`` reads it."""
    for e in setup_data_chain(params, load_addr):
        if e.type == bz.SETUP_IMA and len(e.data) == bz.IMA_SETUP_DATA_SIZE:
            addr, size = struct.unpack("<QQ", e.data)
            return addr, size
    return None
