"""The kdump side of the powerpc kexec_file load (linux 7.2): the crash kernel region, the backup
region, the ELF core headers segment (``load_crashdump_segments_ppc64``,
``arch/powerpc/kexec/file_load_64.c``; ``crash_prepare_elf64_headers``, ``kernel/crash_core.c``),
the ``elfcorehdr=`` command line (``file_load.c``) and the kdump tree's usable-memory properties.

What only the running system knows is an input, never guessed: the crash kernel region
(``/proc/iomem``'s "Crash kernel"), its memory (memblock's regions: ``/proc/iomem``'s "System
RAM"), each possible CPU's ``crash_notes`` address and size
(``/sys/devices/system/cpu/cpuN/crash_notes{,_size}``) and the vmcoreinfo note
(``/sys/kernel/vmcoreinfo``). Line numbers: linux-source 7.2.13.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from kimagekit.arch.ppc64_fdt import (
    RTAS,
    add_mem_range,
    cpu_nodes,
    live_props,
    of_root_cells,
    read_number,
    reserved_memory_ranges,
)
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import RuleError, UsageError
from kimagekit.ppc_fdt import ram_ranges

__all__ = [
    "BACKUP_SRC_SIZE", "COMMAND_LINE_SIZE", "DRCONF", "ELF_CORE_HEADER_ALIGN", "PAGE_OFFSET",
    "CrashInputs", "check_memory", "crash_memory_ranges", "elf_headers", "elfcorehdr_memsz",
    "kdump_cmdline", "kdump_extra_fdt_size", "parse_crashkernel", "setup_crash_fdt",
    "sync_backup_region_phdr", "usable_memory_ranges",
]

BACKUP_SRC_START, BACKUP_SRC_END = 0, 0xFFFF  # asm/crashdump-ppc64.h:15-17
BACKUP_SRC_SIZE = BACKUP_SRC_END - BACKUP_SRC_START + 1
PAGE_OFFSET = 0xC000000000000000  # __va() on ppc64 book3s
COMMAND_LINE_SIZE = 2048  # arch/powerpc/include/uapi/asm/setup.h:5
ELF_CORE_HEADER_ALIGN = 4096  # include/linux/crash_core.h:55
DRCONF = "/ibm,dynamic-reconfiguration-memory"
_CHUNK = 2048  # MEM_RANGE_CHUNK_SZ, asm/kexec_ranges.h:5
_EM_PPC64, _PT_LOAD, _PT_NOTE, _PF_RWX = 21, 1, 4, 7


@dataclass(frozen=True)
class CrashInputs:
    """The running system's crash facts (see the module doc). ``crashkernel``: (start, size);
    ``memory``: memblock's regions (start, size), ascending; ``notes``: one crash_notes
    address per possible CPU; ``vmcoreinfo``: (address, size). ``crash_hotplug``: the loading
    kernel has CONFIG_CRASH_HOTPLUG (with MEMORY_HOTPLUG); ``max_memory_ranges``:
    CONFIG_CRASH_MAX_MEMORY_RANGES."""

    crashkernel: tuple[int, int]
    memory: tuple[tuple[int, int], ...]
    notes: tuple[int, ...]
    note_size: int
    vmcoreinfo: tuple[int, int]
    crash_hotplug: bool = False
    max_memory_ranges: int = 8192

    @property
    def crash_end(self) -> int:
        """``crashk_res.end``: the last byte."""
        return self.crashkernel[0] + self.crashkernel[1] - 1


def _memparse(text: str) -> tuple[int, str]:
    """lib/cmdline.c:153-196: a C number (0x hex, 0 octal, decimal) and a K..E suffix."""
    m = re.match(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)([kKmMgGtTpPeE]?)", text)
    if m is None:
        raise UsageError(f"--crashkernel: not a size: {text!r}")
    num, suffix = m.groups()
    value = int(num, 16) if num[:2].lower() == "0x" else int(num, 8) if num[0] == "0" \
        else int(num)
    shift = 10 * (" kmgtpe".index(suffix.lower()) if suffix else 0)
    return value << shift, text[m.end():]


def parse_crashkernel(text: str) -> tuple[int, int]:
    """``SIZE@BASE`` as ``parse_crashkernel_simple`` reads it (kernel/crash_reserve.c), taken as
    the region the running kernel reserved (``/proc/iomem``'s "Crash kernel"). Without ``@BASE``
    the kernel picks the base: unknown offline, refused; so are the other forms."""
    size, rest = _memparse(text)
    if not rest.startswith("@"):
        raise UsageError(f"--crashkernel {text!r}: give SIZE@BASE, the region the running kernel "
                         "reserved (/proc/iomem \"Crash kernel\"); the other forms leave the base "
                         "to the kernel")
    base, rest = _memparse(rest[1:])
    if rest or not size:
        raise UsageError(f"--crashkernel {text!r}: not SIZE@BASE")
    return base, size


# -- ranges ------------------------------------------------------------------------------------
def _opal_rtas_tce(tree: DeviceTree, ranges: list[list[int]], tce: bool) -> None:
    """ranges.c:344-386 (RTAS, OPAL: opal-base-address and opal-runtime-size) and 248-273 (TCE)."""
    rtas = tree.find(RTAS)
    if rtas is not None:
        base, size = read_number(rtas, "linux,rtas-base", 4), read_number(rtas, "rtas-size", 4)
        if base < 0 or size < 0:
            reserved_memory_ranges(tree)  # its refusal names what is missing
        add_mem_range(ranges, base, size)
    opal = tree.find("/ibm,opal")
    if opal is not None:
        base = read_number(opal, "opal-base-address", 8)
        size = read_number(opal, "opal-runtime-size", 8)
        if base < 0 or size < 0:
            raise RuleError("/ibm,opal has no readable opal-base-address or opal-runtime-size: "
                            "the kernel fails the crash load (ranges.c:369-386); OPAL records "
                            "them at boot: this looks like a firmware dump", fmt="dtb",
                            field="/ibm,opal")
        add_mem_range(ranges, base, size)
    if tce:
        for path, node in tree.walk():
            if tree.get(path, "device_type") != b"pci\0":
                continue
            tbase = read_number(node, "linux,tce-base", 8)
            tsize = read_number(node, "linux,tce-size", 4)
            if tbase >= 0 and tsize >= 0:
                add_mem_range(ranges, tbase, tsize)


def usable_memory_ranges(tree: DeviceTree, crash: CrashInputs) -> list[tuple[int, int]]:
    """ranges.c:514-546 ``get_usable_memory_ranges``: [0, crashk_res.end], then RTAS, OPAL and
    the TCE tables, merged by add_mem_range. (start, end) pairs, end inclusive."""
    ranges: list[list[int]] = []
    add_mem_range(ranges, 0, crash.crash_end + 1)
    _opal_rtas_tce(tree, ranges, tce=True)
    return [(s, e) for s, e in ranges]


def _merge_sorted(ranges: list[list[int]]) -> None:
    # ranges.c:104-120 __merge_memory_ranges after sorting
    ranges.sort(key=lambda r: r[0])
    out: list[list[int]] = []
    for r in ranges:
        if out and r[0] <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], r[1])
        else:
            out.append(r)
    ranges[:] = out


def crash_memory_ranges(tree: DeviceTree, crash: CrashInputs) -> list[tuple[int, int]]:
    """ranges.c:578-633 ``get_crash_memory_ranges``: memblock's regions (the first 64 KiB left
    out: the backup region gets its own entry), the crash kernel region excluded
    (crash_core.c:289-345), RTAS and OPAL added, the backup region added, sorted (not merged)."""
    ranges: list[list[int]] = []
    cap = (_CHUNK - 8) // 16  # max_nr_ranges of the first allocation (ranges.c:41-56)
    last = -1
    for given, given_size in crash.memory:
        base, size = given, given_size
        if base <= last or size <= 0:
            raise UsageError("--crash-mem: memblock's regions are ascending, disjoint and not "
                             "empty")
        last = base + size - 1
        if base == BACKUP_SRC_START:
            if size <= BACKUP_SRC_SIZE:
                continue
            base, size = BACKUP_SRC_END + 1, size - BACKUP_SRC_SIZE
        before = len(ranges)
        add_mem_range(ranges, base, size)
        if len(ranges) > before == cap:  # a full list grows by one chunk (ranges.c:175-195)
            cap = (-(-(8 + 16 * cap) // _CHUNK) * _CHUNK + _CHUNK - 8) // 16
        if len(ranges) == cap:  # ranges.c:601-602
            _merge_sorted(ranges)
    ranges = _exclude(ranges, crash.crashkernel[0], crash.crash_end)
    _opal_rtas_tce(tree, ranges, tce=False)
    add_mem_range(ranges, BACKUP_SRC_START, BACKUP_SRC_SIZE)
    ranges.sort(key=lambda r: r[0])  # sort() is not stable; starts are distinct here
    return [(s, e) for s, e in ranges]


def _exclude(ranges: list[list[int]], mstart: int, mend: int) -> list[list[int]]:
    """crash_core.c:289-345 ``crash_exclude_mem_range`` on ascending ranges."""
    out: list[list[int]] = []
    for start, end in ranges:
        if mstart > end or mend < start:
            out.append([start, end])
            continue
        ps, pe = max(mstart, start), min(mend, end)
        if ps > start:
            out.append([start, ps - 1])
        if pe < end:
            out.append([pe + 1, end])
    return out


# -- the ELF core headers ----------------------------------------------------------------------
def elf_headers(ranges: list[tuple[int, int]], crash: CrashInputs, little: bool) -> bytes:
    """crash_core.c:174-272 ``crash_prepare_elf64_headers`` (no kernel map on powerpc): one
    PT_NOTE per possible CPU, the vmcoreinfo PT_NOTE, one PT_LOAD per range (vaddr __va), in a
    zeroed buffer sized for one phdr more than used, rounded to ELF_CORE_HEADER_ALIGN. The
    fields are in the CPU's byte order, but EI_DATA is always ELFDATA2LSB (crash_core.c:209)."""
    e = "<" if little else ">"
    nr_phdr = len(crash.notes) + 1 + len(ranges) + 1
    size = -(-(64 + 56 * nr_phdr) // ELF_CORE_HEADER_ALIGN) * ELF_CORE_HEADER_ALIGN
    buf = bytearray(size)
    used = len(crash.notes) + 1 + len(ranges)
    buf[:16] = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    struct.pack_into(e + "HHIQQQIHHHHHH", buf, 16, 4, _EM_PPC64, 1, 0, 64, 0, 0, 64, 56, used,
                     0, 0, 0)
    phdrs = [(_PT_NOTE, 0, addr, 0, addr, crash.note_size, crash.note_size, 0)
             for addr in crash.notes]
    vm, vm_size = crash.vmcoreinfo
    phdrs.append((_PT_NOTE, 0, vm, 0, vm, vm_size, vm_size, 0))
    phdrs += [(_PT_LOAD, _PF_RWX, s, (PAGE_OFFSET + s) & (1 << 64) - 1, s, e_ - s + 1,
               e_ - s + 1, 0) for s, e_ in ranges]
    for i, ph in enumerate(phdrs):
        struct.pack_into(e + "IIQQQQQQ", buf, 64 + 56 * i, *ph)
    return bytes(buf)


def sync_backup_region_phdr(headers: bytes, backup_start: int, little: bool) -> bytes:
    """crash.c:420-438 with phdr_to_kimage false: the first phdr whose p_paddr is
    BACKUP_SRC_START gets p_offset = backup_start."""
    e = "<" if little else ">"
    buf = bytearray(headers)
    (phnum,) = struct.unpack_from(e + "H", buf, 56)
    for i in range(phnum):
        at = 64 + 56 * i
        if struct.unpack_from(e + "Q", buf, at + 24)[0] == BACKUP_SRC_START:
            struct.pack_into(e + "Q", buf, at + 8, backup_start)
            break
    return bytes(buf)


def elfcorehdr_memsz(headers_len: int, nr_ranges: int, crash: CrashInputs) -> int:
    """file_load_64.c:377-400, 428-432: bufsz plus room for CONFIG_CRASH_MAX_MEMORY_RANGES
    phdrs when CRASH_HOTPLUG and MEMORY_HOTPLUG (none past PN_XNUM or when already full)."""
    extra = 0
    if crash.crash_hotplug and crash.max_memory_ranges <= 0xFFFF \
            and nr_ranges < crash.max_memory_ranges:
        extra = (crash.max_memory_ranges - nr_ranges) * 56
    return headers_len + extra


def kdump_cmdline(elf_load_addr: int, cmdline: str) -> str:
    """file_load.c:36-58 ``setup_kdump_cmdline``: "elfcorehdr=0x%lx " before the command line,
    refused past COMMAND_LINE_SIZE (the passed length counts its NUL)."""
    head = f"elfcorehdr={elf_load_addr:#x} "
    passed = len(cmdline.encode("latin-1")) + 1 if cmdline else 0
    if len(head) + passed > COMMAND_LINE_SIZE:
        raise RuleError(f"{head.strip()} and the {passed}-byte command line exceed "
                        f"COMMAND_LINE_SIZE ({COMMAND_LINE_SIZE}): the kernel fails the load",
                        fmt="kexec", field="cmdline")
    return head + cmdline


# -- the kdump tree ----------------------------------------------------------------------------
def _usable_in(usable: list[tuple[int, int]], base: int, end: int) -> list[int]:
    """file_load_64.c:104-139 ``add_usable_mem``: each usable range clipped to [base, end]."""
    out: list[int] = []
    for lb, le in usable:
        if base <= le and end >= lb:
            s, e = max(lb, base), min(le, end)
            out += [s, e - s + 1]
    return out


def _lmbs(tree: DeviceTree) -> list[int]:
    """arch/powerpc/mm/drmem.c:393-420 ``walk_drmem_lmbs``: each LMB's base from
    ibm,dynamic-memory (v1) or else ibm,dynamic-memory-v2, in the root's address cells."""
    ac, _ = of_root_cells(tree)
    v1 = tree.get(DRCONF, "ibm,dynamic-memory")
    raw = v1 if v1 is not None else tree.get(DRCONF, "ibm,dynamic-memory-v2")
    if raw is None:
        return []
    cell = 4 * (ac + 4)  # v1: base, drc, reserved, aa, flags; v2: seq, base, drc, aa, flags
    count = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else 0
    if len(raw) < 4 + count * cell:
        raise RuleError(f"{DRCONF}: {count} entries of {cell} bytes run past the property",
                        fmt="dtb", field=DRCONF)
    size = _lmb_size(tree)
    out = []
    for i in range(count):
        at = 4 + i * cell
        if v1 is not None:
            out.append(int.from_bytes(raw[at:at + 4 * ac], "big"))
        else:
            seq = int.from_bytes(raw[at:at + 4], "big")
            base = int.from_bytes(raw[at + 4:at + 4 + 4 * ac], "big")
            out += [base + j * size for j in range(seq)]
    return out


def _lmb_size(tree: DeviceTree) -> int:
    _, sc = of_root_cells(tree)
    raw = tree.get(DRCONF, "ibm,lmb-size")
    if raw is None or len(raw) < 4 * sc:
        raise RuleError(f"{DRCONF} has no ibm,lmb-size: the kernel fails the crash load "
                        "(drmem.c:366-369)", fmt="dtb", field=f"{DRCONF}/ibm,lmb-size")
    return int.from_bytes(raw[:4 * sc], "big")


def _update_usable_mem_fdt(tree: DeviceTree, usable: list[tuple[int, int]]) -> None:
    """file_load_64.c:272-342: linux,drconf-usable-memory (per LMB: a count, then base/size
    pairs) and linux,usable-memory on each memory node ((0, 0) when none is usable there); u64
    big-endian values."""
    if tree.find(DRCONF) is not None:
        if tree.get(DRCONF, "linux,drconf-usable-memory") is not None:
            raise RuleError(f"{DRCONF} already has linux,drconf-usable-memory: the kernel "
                            "refuses a kdump load (file_load_64.c:156-159)", fmt="dtb",
                            field=DRCONF)
        size = _lmb_size(tree)
        cells: list[int] = []
        for base in _lmbs(tree):
            found = _usable_in(usable, base, base + size - 1)
            cells += [len(found) // 2, *found]
        tree.set(DRCONF, "linux,drconf-usable-memory", struct.pack(f">{len(cells)}Q", *cells))
    for path, _node in tree.walk():
        if tree.get(path, "device_type") != b"memory\0":
            continue
        regs = _regs(tree, path)
        if not regs:  # file_load_64.c:239-241
            continue
        cells = []
        for base, size in regs:
            cells += _usable_in(usable, base, base + size - 1)
        cells = cells or [0, 0]
        tree.set(path, "linux,usable-memory", struct.pack(f">{len(cells)}Q", *cells))


def _regs(tree: DeviceTree, path: str) -> list[tuple[int, int]]:
    """``of_property_read_reg`` over one node's reg, in its parent's cells."""
    parent = path.rsplit("/", 1)[0] or "/"
    ac = int.from_bytes(tree.get(parent, "#address-cells") or b"\0\0\0\2", "big")
    sc = int.from_bytes(tree.get(parent, "#size-cells") or b"\0\0\0\1", "big")
    raw = tree.get(path, "reg") or b""
    step = 4 * (ac + sc)
    return [(int.from_bytes(raw[i:i + 4 * ac], "big"),
             int.from_bytes(raw[i + 4 * ac:i + step], "big"))
            for i in range(0, len(raw) - step + 1, step)] if step else []


def setup_crash_fdt(tree: DeviceTree, crash: CrashInputs, backup_start: int) -> None:
    """file_load_64.c:737-770: the usable-memory properties, then a reservation of the crashed
    kernel's memory from 64 KiB to the crash region, and one of the backup region."""
    _update_usable_mem_fdt(tree, usable_memory_ranges(tree, crash))
    tree.add_reservation(BACKUP_SRC_END + 1, crash.crashkernel[0] - BACKUP_SRC_SIZE)
    tree.add_reservation(backup_start, BACKUP_SRC_SIZE)


def kdump_extra_fdt_size(tree: DeviceTree, crash: CrashInputs) -> int:
    """file_load_64.c:602-645: room for the usable-memory entries (when the tree has dynamic
    memory) and, under CRASH_HOTPLUG, for the possible CPU nodes not present."""
    extra = 0
    if tree.find(DRCONF) is not None:
        lmb = _lmb_size(tree)
        top = max((b + s for b, s in crash.memory), default=0)
        # numa.c:1337-1368 memory_hotplug_max: /rtas ibm,lrdr-capacity (a be64), else the
        # last LMB's end; at least memblock's end
        lrdr = tree.get("/rtas", "ibm,lrdr-capacity")
        if lrdr is not None and len(lrdr) >= 8:
            top = max(top, int.from_bytes(lrdr[:8], "big"))
        elif _lmbs(tree):
            top = max(top, max(_lmbs(tree)) + lmb)
        extra += (top // lmb + 2 * (crash.crashkernel[1] // lmb)) * 8
    cpus = cpu_nodes(tree)
    if crash.crash_hotplug and cpus:
        servers = cpus[0].prop("ibm,ppc-interrupt-server#s")
        threads = max(len(servers.value) // 4, 1) if servers is not None else 1
        possible = len(crash.notes) // threads
        if possible > len(cpus):
            first = cpus[0]
            props = live_props(first)
            name = dict(props)["name"].split(b"\0")[0]
            size = len(name) + 5 + sum(len(n) + len(v) for n, v in props)
            extra += (possible - len(cpus)) * size
    return extra


def check_memory(tree: DeviceTree, crash: CrashInputs) -> None:
    """The crash kernel region must lie in RAM (the tree's memory nodes)."""
    s, n = crash.crashkernel
    if not any(r.start <= s and s + n <= r.end for r in ram_ranges(tree)):
        raise UsageError(f"--crashkernel [{s:#x}, {s + n:#x}) is not inside the tree's RAM")
