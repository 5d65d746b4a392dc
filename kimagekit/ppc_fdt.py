"""The kexec items of ``/chosen``: what a loading kernel writes for the next one, read back and
removed the way the next kernel does (``drivers/of/kexec.c``; the 2016 powerpc hand-over series).

Hand-over styles:
- ``seed`` (2016 series): ``linux,kexec-handover-buffer-start`` and ``-end``, each an 8-byte
  big-endian address, ``-end`` the first byte after the buffer; plus a reservation (start, size).
- ``ima`` (upstream): ``linux,ima-kexec-buffer`` = address, size in the root's cells; plus a
  reservation with exactly that start and size.
Random values the kernel would invent (``kaslr-seed``, ``rng-seed``) are always inputs here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kimagekit import dts
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import RuleError, UsageError

__all__ = [
    "BOOTED_FROM_KEXEC", "CHOSEN", "ELFCOREHDR", "IMA_BUFFER", "INITRD_END", "INITRD_START",
    "SEED_END", "SEED_START", "STYLES", "USABLE_MEMORY", "Handover", "Range", "check_buffer",
    "chosen_items", "encode_ranges", "ensure_chosen", "get_bootargs", "get_elfcorehdr",
    "get_handover",
    "get_initrd", "get_kaslr_seed", "get_rng_seed", "get_usable_memory", "handovers", "ram_ranges",
    "remove_bootargs", "remove_elfcorehdr", "remove_handover", "remove_initrd",
    "remove_kaslr_seed", "remove_rng_seed", "remove_usable_memory", "reserved_ranges",
    "root_cells", "set_bootargs", "set_elfcorehdr", "set_handover", "set_initrd", "set_kaslr_seed",
    "set_rng_seed", "set_usable_memory",
]

CHOSEN = "/chosen"
SEED_START = "linux,kexec-handover-buffer-start"
SEED_END = "linux,kexec-handover-buffer-end"
IMA_BUFFER = "linux,ima-kexec-buffer"
INITRD_START = "linux,initrd-start"
INITRD_END = "linux,initrd-end"
ELFCOREHDR = "linux,elfcorehdr"
USABLE_MEMORY = "linux,usable-memory-range"
BOOTED_FROM_KEXEC = "linux,booted-from-kexec"  # empty; every kexec_file load sets it
STYLES = ("seed", "ima")
_U64 = struct.Struct(">Q")


@dataclass(frozen=True)
class Range:
    start: int
    size: int
    source: str = ""

    @property
    def end(self) -> int:
        return self.start + self.size

    def text(self) -> str:
        return f"[{self.start:#x}, {self.end:#x})"


@dataclass(frozen=True)
class Handover:
    style: str
    start: int
    size: int
    reserved: bool  # a reservation with exactly this start and size is present


def _err(msg: str, fld: str = "chosen") -> RuleError:
    return RuleError(msg, fmt="dtb", field=fld)


# -- cells, RAM, reservations ------------------------------------------------------------------
def _cells(tree: DeviceTree, path: str, name: str, default: int) -> int:
    raw = tree.get(path, name)
    if raw is None:
        return default
    if len(raw) != 4:
        raise _err(f"{name} is {len(raw)} bytes, not one cell", f"node[{path}].prop[{name}]")
    return int.from_bytes(raw, "big")


def root_cells(tree: DeviceTree) -> tuple[int, int]:
    """Root ``#address-cells``, ``#size-cells``; libfdt's defaults (2, 1) when absent."""
    return _cells(tree, "/", "#address-cells", 2), _cells(tree, "/", "#size-cells", 1)


def _read_ranges(raw: bytes, ac: int, sc: int, source: str) -> list[Range]:
    step = 4 * (ac + sc)
    if step == 0 or len(raw) % step:
        raise _err(f"{len(raw)} bytes are not whole (address, size) pairs of {ac}+{sc} cells",
                   source)
    out = []
    for at in range(0, len(raw), step):
        addr = int.from_bytes(raw[at:at + 4 * ac], "big")
        size = int.from_bytes(raw[at + 4 * ac:at + step], "big")
        out.append(Range(addr, size, source))
    return out


def encode_ranges(tree: DeviceTree, ranges: list[tuple[int, int]], name: str) -> bytes:
    """(address, size) pairs in the root's cells, as ``fdt_appendprop_addrrange`` writes them."""
    ac, sc = root_cells(tree)
    if not (1 <= ac <= 2 and 0 <= sc <= 2):  # libfdt's fdt_appendprop_addrrange limits
        raise _err(f"root #address-cells {ac} / #size-cells {sc} cannot hold {name}")
    out = b""
    for start, size in ranges:
        if start >> (32 * ac) or size >> (32 * sc) or (ac == 1 and start + size > 1 << 32):
            raise _err(f"{name} ({start:#x}, {size:#x}) does not fit the root's {ac} address "
                       f"and {sc} size cells")
        out += start.to_bytes(4 * ac, "big") + size.to_bytes(4 * sc, "big")
    return out


def ram_ranges(tree: DeviceTree) -> tuple[Range, ...]:
    """RAM per the root's ``device_type = "memory"`` nodes (disabled ones left out)."""
    ac, sc = root_cells(tree)
    out: list[Range] = []
    for node in tree.root.children():
        dtype = node.prop("device_type")
        if dtype is None or dtype.value != b"memory\0":
            continue
        status = node.prop("status")
        if status is not None and status.value not in (b"okay\0", b"ok\0"):
            continue
        reg = node.prop("reg")
        if reg is not None:
            out += _read_ranges(reg.value, ac, sc, f"/{node.name}")
    return tuple(out)


def reserved_ranges(tree: DeviceTree) -> tuple[Range, ...]:
    """``/memreserve/`` entries, then the ``reg`` of each ``/reserved-memory`` child."""
    out = [Range(r.address, r.size, f"/memreserve/ {i}") for i, r in
           enumerate(tree.reservations)]
    parent = tree.find("/reserved-memory")
    if parent is not None:
        ac = _cells(tree, "/reserved-memory", "#address-cells", 2)
        sc = _cells(tree, "/reserved-memory", "#size-cells", 1)
        for child in parent.children():
            reg = child.prop("reg")
            if reg is not None:
                out += _read_ranges(reg.value, ac, sc, f"/reserved-memory/{child.name}")
    return tuple(out)


def check_buffer(tree: DeviceTree, start: int, size: int, what: str = "buffer",
                 ignore: tuple[int, int] | None = None) -> None:
    """The kernel's checks: a non-empty range inside RAM, clear of every reservation (but the
    one ``/memreserve/`` entry equal to ``ignore``: a stale one the caller is about to drop)."""
    if size <= 0:
        raise _err(f"{what} size is 0")
    if start < 0 or start + size > 1 << 64:
        raise _err(f"{what} [{start:#x}, +{size:#x}) is outside the 64-bit address space")
    buf = Range(start, size)
    ram = ram_ranges(tree)
    if not ram:
        raise _err(f"{what} {buf.text()} cannot be checked: the tree has no memory node")
    if not _covered(buf, ram):
        listed = ", ".join(r.text() for r in ram)
        raise _err(f"{what} {buf.text()} is not inside RAM ({listed})")
    skip = ignore
    for r in reserved_ranges(tree):
        if skip is not None and r.source.startswith("/memreserve/") \
                and (r.start, r.size) == skip:
            skip = None
            continue
        if r.start < buf.end and buf.start < r.end:
            raise _err(f"{what} {buf.text()} overlaps reservation {r.text()} ({r.source})")


def _covered(buf: Range, ram: tuple[Range, ...]) -> bool:
    pos = buf.start
    for r in sorted(ram, key=lambda r: r.start):
        if r.start <= pos < r.end:
            pos = r.end
        if pos >= buf.end:
            return True
    return False


def ensure_chosen(tree: DeviceTree) -> None:
    if tree.find(CHOSEN) is None:
        tree.add_node("/", "chosen")


def chosen_items(tree: DeviceTree) -> dict[str, str]:
    """Every ``/chosen`` property, name -> value as dtc writes it (empty without the node)."""
    node = tree.find(CHOSEN)
    return {} if node is None else {p.name: dts.value_text(p.value) for p in node.props()}


# -- hand-over buffer --------------------------------------------------------------------------
def handovers(tree: DeviceTree) -> tuple[Handover, ...]:
    """Every hand-over present, upstream style first."""
    out = []
    for style in ("ima", "seed"):
        h = get_handover(tree, style)
        if h is not None:
            out.append(h)
    return tuple(out)


def get_handover(tree: DeviceTree, style: str | None = None, check: bool = False
                 ) -> Handover | None:
    """The hand-over as the next kernel reads it; ``check`` adds its RAM check."""
    if style is None:
        found = handovers(tree)
        return found[0] if found else None
    if style not in STYLES:
        raise UsageError(f"unknown hand-over style {style!r} (seed or ima)")
    rng = _ima_range(tree) if style == "ima" else _seed_range(tree)
    if rng is None:
        return None
    start, size = rng
    if check:
        if size == 0:
            raise _err("hand-over buffer size is 0")
        ram = ram_ranges(tree)
        if not _covered(Range(start, size), ram):
            raise _err(f"hand-over buffer {Range(start, size).text()} is beyond memory")
    reserved = any(r.address == start and r.size == size for r in tree.reservations)
    return Handover(style, start, size, reserved)


def _ima_range(tree: DeviceTree) -> tuple[int, int] | None:
    raw = tree.get(CHOSEN, IMA_BUFFER)
    if raw is None:
        return None
    ac, sc = root_cells(tree)
    if len(raw) < 4 * (ac + sc):
        raise _err(f"{IMA_BUFFER} is {len(raw)} bytes; the root cells need {4 * (ac + sc)}",
                   f"node[{CHOSEN}].prop[{IMA_BUFFER}]")
    r = _read_ranges(raw[:4 * (ac + sc)], ac, sc, IMA_BUFFER)[0]
    return r.start, r.size


def _u64(tree: DeviceTree, name: str) -> int | None:
    raw = tree.get(CHOSEN, name)
    if raw is None:
        return None
    if len(raw) != 8:
        raise _err(f"{name} is {len(raw)} bytes, not a 64-bit value",
                   f"node[{CHOSEN}].prop[{name}]")
    return int(_U64.unpack(raw)[0])


def _seed_range(tree: DeviceTree) -> tuple[int, int] | None:
    start, end = _u64(tree, SEED_START), _u64(tree, SEED_END)
    if start is None and end is None:
        return None
    if start is None or end is None:
        raise _err(f"only one of {SEED_START} and {SEED_END} is present")
    if end < start:
        raise _err(f"{SEED_END} {end:#x} is below {SEED_START} {start:#x}")
    return start, end - start


def set_handover(tree: DeviceTree, start: int, size: int, style: str = "seed",
                 check: bool = True) -> Handover:
    """Announce the buffer in ``style``: stale property and its reservation go first."""
    if style not in STYLES:
        raise UsageError(f"unknown hand-over style {style!r} (seed or ima)")
    if check:
        # Checked before any edit, so a refusal leaves the caller's tree as it was; the stale
        # announcement's reservation does not count, since it goes with the stale property.
        try:
            stale = _ima_range(tree) if style == "ima" else _seed_range(tree)
        except RuleError:
            stale = None
        check_buffer(tree, start, size, "hand-over buffer", ignore=stale)
    ensure_chosen(tree)
    remove_handover(tree, style)
    if style == "ima":
        tree.set(CHOSEN, IMA_BUFFER, encode_ranges(tree, [(start, size)], IMA_BUFFER))
    else:
        tree.set(CHOSEN, SEED_START, _U64.pack(start))
        tree.set(CHOSEN, SEED_END, _U64.pack(start + size))
    tree.add_reservation(start, size)
    return Handover(style, start, size, True)


def remove_handover(tree: DeviceTree, style: str | None = None) -> tuple[Handover, ...]:
    """What the next kernel does once it took the buffer: drop the property and the
    reservation that matches it exactly. A malformed property is still dropped."""
    removed = []
    for s in STYLES if style is None else (style,):
        try:
            rng = _ima_range(tree) if s == "ima" else _seed_range(tree)
        except RuleError:
            rng = None
        # Reverse order of set_handover, so names it appended to the strings table go again.
        names = (IMA_BUFFER,) if s == "ima" else (SEED_END, SEED_START)
        if not any([tree.delete(CHOSEN, n) for n in names]):
            continue
        reserved = rng is not None and tree.remove_reservation(*rng)
        if rng is not None:
            removed.append(Handover(s, rng[0], rng[1], reserved))
    return tuple(removed)


# -- the other /chosen items -------------------------------------------------------------------
def get_initrd(tree: DeviceTree) -> Range | None:
    s, e = tree.get(CHOSEN, INITRD_START), tree.get(CHOSEN, INITRD_END)
    if s is None or e is None:
        return None
    # The kernel reads these with of_read_number(len / 4): 4 or 8 bytes both occur.
    start, end = int.from_bytes(s, "big"), int.from_bytes(e, "big")
    return Range(start, end - start, "initrd")


def remove_initrd(tree: DeviceTree, page_size: int = 4096) -> Range | None:
    """Drop the initrd properties and its reservation, exact or page-rounded (firmware may
    reserve whole pages)."""
    old = get_initrd(tree)
    if old is not None and not tree.remove_reservation(old.start, old.size):
        tree.remove_reservation(old.start, -(-old.size // page_size) * page_size)
    tree.delete(CHOSEN, INITRD_END)
    tree.delete(CHOSEN, INITRD_START)
    return old


def set_initrd(tree: DeviceTree, start: int, size: int, page_size: int = 4096) -> Range:
    ensure_chosen(tree)
    remove_initrd(tree, page_size)
    tree.set(CHOSEN, INITRD_START, _U64.pack(start))
    tree.set(CHOSEN, INITRD_END, _U64.pack(start + size))
    tree.add_reservation(start, size)
    return Range(start, size, "initrd")


def get_bootargs(tree: DeviceTree) -> str | None:
    raw = tree.get(CHOSEN, "bootargs")
    return None if raw is None else raw.split(b"\0", 1)[0].decode("latin-1")


def set_bootargs(tree: DeviceTree, cmdline: str) -> None:
    ensure_chosen(tree)
    tree.set(CHOSEN, "bootargs", cmdline.encode("latin-1") + b"\0")


def remove_bootargs(tree: DeviceTree) -> bool:
    return tree.delete(CHOSEN, "bootargs")


def get_elfcorehdr(tree: DeviceTree) -> Range | None:
    raw = tree.get(CHOSEN, ELFCOREHDR)
    return None if raw is None else _read_ranges(raw, *root_cells(tree), ELFCOREHDR)[0]


def set_elfcorehdr(tree: DeviceTree, start: int, size: int) -> Range:
    ensure_chosen(tree)
    remove_elfcorehdr(tree)
    tree.set(CHOSEN, ELFCOREHDR, encode_ranges(tree, [(start, size)], ELFCOREHDR))
    tree.add_reservation(start, size)
    return Range(start, size, ELFCOREHDR)


def remove_elfcorehdr(tree: DeviceTree) -> Range | None:
    try:
        old = get_elfcorehdr(tree)
    except RuleError:
        old = None
    tree.delete(CHOSEN, ELFCOREHDR)
    if old is not None:
        tree.remove_reservation(old.start, old.size)
    return old


def get_usable_memory(tree: DeviceTree) -> tuple[Range, ...]:
    raw = tree.get(CHOSEN, USABLE_MEMORY)
    return () if raw is None else tuple(_read_ranges(raw, *root_cells(tree), USABLE_MEMORY))


def set_usable_memory(tree: DeviceTree, ranges: list[tuple[int, int]]) -> None:
    """Crash kernels: the crash region, then the low one if any. No reservation goes with it."""
    ensure_chosen(tree)
    tree.delete(CHOSEN, USABLE_MEMORY)
    tree.set(CHOSEN, USABLE_MEMORY, encode_ranges(tree, ranges, USABLE_MEMORY))


def remove_usable_memory(tree: DeviceTree) -> bool:
    return tree.delete(CHOSEN, USABLE_MEMORY)


def get_kaslr_seed(tree: DeviceTree) -> int | None:
    return _u64(tree, "kaslr-seed")


def set_kaslr_seed(tree: DeviceTree, seed: int) -> None:
    ensure_chosen(tree)
    tree.delete(CHOSEN, "kaslr-seed")  # the kernel deletes, then adds (so it moves first)
    tree.set(CHOSEN, "kaslr-seed", _U64.pack(seed))


def remove_kaslr_seed(tree: DeviceTree) -> bool:
    return tree.delete(CHOSEN, "kaslr-seed")


def get_rng_seed(tree: DeviceTree) -> bytes | None:
    return tree.get(CHOSEN, "rng-seed")


def set_rng_seed(tree: DeviceTree, seed: bytes) -> None:
    ensure_chosen(tree)
    tree.set(CHOSEN, "rng-seed", seed)


def remove_rng_seed(tree: DeviceTree) -> bool:
    return tree.delete(CHOSEN, "rng-seed")
