"""What ``setup_new_fdt_ppc64`` (``arch/powerpc/kexec/file_load_64.c`` of linux 7.2) does to the
next kernel's tree after ``of_kexec_alloc_and_setup_fdt``: ``/cpus`` rebuilt from the live tree
(``update_cpus_node``, ``core_64.c``) and one ``/memreserve/`` for each of the running system's
reserved ranges (``get_reserved_memory_ranges``, ``ranges.c``).

The input tree stands for both the running kernel's flattened tree and its live tree (so take it
from the running system: ``/sys/firmware/fdt``). A firmware dump (QEMU's ``-dumpdtb``) lacks what
the running kernel adds at boot (``/rtas/linux,rtas-base``): it is refused, never guessed. Not
modelled: ``update_pci_dma_nodes`` (copies DMA-window properties from the live tree: with one tree
for both it changes nothing) and the PLPKS password (``plpks_populate_fdt``).
Line numbers: linux-source 7.2.13.
"""

from __future__ import annotations

from kimagekit.devicetree import DeviceTree, Node
from kimagekit.errors import RuleError
from kimagekit.ppc_fdt import Range

__all__ = [
    "CPUS", "FDT_RESERVE_ENTRY", "RTAS", "cpu_nodes", "reserved_memory_ranges",
    "setup_new_fdt_ppc64", "update_cpus_node",
]

CPUS = "/cpus"
RTAS = "/rtas"
FDT_RESERVE_ENTRY = 16  # sizeof(struct fdt_reserve_entry)
_EINVAL, _ENODATA, _EOVERFLOW = 22, 61, 75


def _err(msg: str, fld: str) -> RuleError:
    return RuleError(msg, fmt="dtb", field=fld)


def _read(node: Node, name: str, size: int) -> int:
    """``of_property_read_u32``/``_u64``: the value, or the negative errno (-EINVAL: absent;
    -EOVERFLOW: shorter than ``size``)."""
    prop = node.prop(name)
    if prop is None:
        return -_EINVAL
    if len(prop.value) < size:
        return -_EOVERFLOW
    return int.from_bytes(prop.value[:size], "big")


def _add_mem_range(ranges: list[list[int]], base: int, size: int) -> None:
    """ranges.c:199-236 ``add_mem_range``: a range overlapping one already listed (strictly)
    widens it; any other is appended; empty ones are skipped. No sorting."""
    if not size:
        return
    end = base + size - 1
    for r in ranges:
        if base < r[1] and end > r[0]:
            r[0], r[1] = min(r[0], base), max(r[1], end)
            return
    ranges.append([base, end])


def _root_cells(tree: DeviceTree) -> tuple[int, int]:
    # of_n_addr_cells/of_n_size_cells on the root: its own properties, else OF_ROOT_NODE_*
    # defaults (1, 1; include/linux/of.h)
    out = []
    for name in ("#address-cells", "#size-cells"):
        raw = tree.get("/", name)
        out.append(int.from_bytes(raw[:4], "big") if raw is not None and len(raw) >= 4 else 1)
    return out[0], out[1]


def reserved_memory_ranges(tree: DeviceTree) -> tuple[Range, ...]:
    """ranges.c:437-453 ``get_reserved_memory_ranges``: RTAS (``/rtas`` ``linux,rtas-base``
    and ``rtas-size``, ranges.c:340-356), each ``pci`` node's TCE table (``linux,tce-base`` u64,
    ``linux,tce-size`` u32, ranges.c:248-273) and the root's ``reserved-ranges``
    (ranges.c:390-425), merged as ``add_mem_range`` merges."""
    ranges: list[list[int]] = []
    rtas = tree.find(RTAS)
    if rtas is not None:
        base, size = _read(rtas, "linux,rtas-base", 4), _read(rtas, "rtas-size", 4)
        if base < 0 or size < 0:
            missing = "linux,rtas-base" if base < 0 else "rtas-size"
            raise _err(f"{RTAS} has no readable {missing}: the running kernel records RTAS "
                       "there at boot (arch/powerpc/kernel/prom_init.c:1882) and fails the load "
                       "without it (ranges.c:351-353); this looks like a firmware dump, not the "
                       "running kernel's tree (/sys/firmware/fdt)", f"{RTAS}/{missing}")
        _add_mem_range(ranges, base, size)
    for path, node in tree.walk():
        dtype = node.prop("device_type")
        if dtype is None or dtype.value[:4] != b"pci\0":
            continue
        tbase, tsize = _read(node, "linux,tce-base", 8), _read(node, "linux,tce-size", 4)
        errs = min(tbase, 0) | min(tsize, 0)
        if errs == -_EINVAL:  # ranges.c:260-266: a pci node without a TCE table is fine
            continue
        if errs:
            raise _err("linux,tce-base (8 bytes) or linux,tce-size (4 bytes) is too short: "
                       "the kernel fails the load (ranges.c:267)", path)
        _add_mem_range(ranges, tbase, tsize)
    raw = tree.get("/", "reserved-ranges")
    if raw is not None:
        ac, sc = _root_cells(tree)
        step = 4 * (ac + sc)
        for at in range(0, len(raw) // step * step if step else 0, step):
            _add_mem_range(ranges, int.from_bytes(raw[at:at + 4 * ac], "big"),
                           int.from_bytes(raw[at + 4 * ac:at + step], "big"))
    return tuple(Range(b, e - b + 1, "reserved") for b, e in ranges)


def _is_cpu(node: Node) -> bool:
    dtype = node.prop("device_type")
    return dtype is not None and dtype.value[:4] == b"cpu\0"


def cpu_nodes(tree: DeviceTree) -> tuple[Node, ...]:
    """The ``/cpus`` children with ``device_type = "cpu"``, in tree order."""
    cpus = tree.find(CPUS)
    return () if cpus is None else tuple(c for c in cpus.children() if _is_cpu(c))


def _live_props(node: Node) -> list[tuple[str, bytes]]:
    """The node's properties as the unflattened tree lists them: in blob order, plus a
    ``name`` made from the unit name when the blob has none (drivers/of/fdt.c:161-182)."""
    props = [(p.name, p.value) for p in node.props()]
    if not any(n == "name" for n, _ in props):
        unit = node.name.rfind("@")
        base = node.name if unit < 0 else node.name[:unit]
        props.append(("name", base.encode("latin-1") + b"\0"))
    return props


def update_cpus_node(tree: DeviceTree) -> tuple[str, ...]:
    """core_64.c:491-560: every ``/cpus`` child with ``device_type = "cpu"`` is deleted, then
    each live one is added again (``fdt_add_subnode`` puts it before the other children, so
    they come back in reverse order) with its live properties set one by one (each new one
    goes first: reversed too). Children of a cpu node are not copied. Returns notes."""
    cpus = tree.find(CPUS)
    if cpus is None:  # core_64.c:528-532
        raise _err("the tree has no /cpus node: the kernel fails the load (core_64.c:530)",
                   CPUS)
    live = cpu_nodes(tree)
    cpus.items = [it for it in cpus.items if not (isinstance(it, Node) and _is_cpu(it))]
    notes = []
    for node in live:
        if any(True for _ in node.children()):
            notes.append(f"{CPUS}/{node.name}: its child nodes are dropped, as "
                         "update_cpus_node copies properties only")
        tree.add_node(CPUS, node.name)
        for name, value in _live_props(node):
            tree.set(f"{CPUS}/{node.name}", name, value)
    return tuple(notes)


def setup_new_fdt_ppc64(tree: DeviceTree, rmem: tuple[Range, ...]) -> tuple[str, ...]:
    """file_load_64.c:728-808 for a normal load: ``update_cpus_node`` (773), then one
    ``/memreserve/`` per reserved range in list order (786-797). Returns notes."""
    notes = update_cpus_node(tree)
    for r in rmem:
        tree.add_reservation(r.start, r.size)
    return notes
