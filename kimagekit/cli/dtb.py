"""``kimagekit dtb ...``: device trees (.dtb or .dts input), with fdtget's and fdtput's habits
(their ``-t`` type letters, output and "not found" exit)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from kimagekit import dtb_file, dts, fdt_values
from kimagekit.cli.common import DtStyle, emit_json, input_named, out
from kimagekit.cli.memory_map import human_size
from kimagekit.devicetree import TYPES, decode
from kimagekit.dtb_file import DtbSummary, load_tree
from kimagekit.errors import UsageError
from kimagekit.kho import DATA_PROPERTY, MEMORY_MAP, KhoTree

app = typer.Typer(no_args_is_help=True,
                  help="Flattened device trees: show, get, ls, set, rm, handover.\n\n"
                  "Example: kimagekit dtb get board.dtb /chosen bootargs")

DtbArg = typer.Argument(..., metavar="DTB", help="A .dtb, or .dts source (the content decides).")
NodeArg = typer.Argument(..., metavar="NODE", help="Node path, e.g. /chosen.")
PropArg = typer.Argument(..., metavar="PROP", help="Property name.")
OutOpt = typer.Option(..., "-o", "--output", metavar="OUT",
                      help="Where to write the new DTB (atomically; - for stdout).")
PackOpt = typer.Option(False, "--pack", help="Drop padding and gaps, as fdtput does.")


Style = DtStyle


_TYPE_HELP = ("s string, i int, u unsigned, x hex (r raw, for get); a prefix b (or hh) for "
              "bytes, h for 16-bit, l for 32-bit cells (as fdtget's -t); or ")


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"{what}: not a number: {text!r}") from None


def _write(data: bytes) -> None:
    # values are bytes (a string may hold any byte but NUL): written as they are, as fdtget does
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


# -- dtb show / get / ls -----------------------------------------------------------------------
@app.command("show")
def show(
    file: Path = DtbArg,
    as_dts: bool = typer.Option(False, "--dts", help="DTS text, as dtc -O dts writes it."),
    as_json: bool = typer.Option(False, "--json", help="Header, reservations, every node."),
) -> None:
    """Every property of every node, one per line (or DTS, or JSON).

    Example: kimagekit dtb show --dts board.dtb
    """
    if as_dts and as_json:
        raise UsageError("--dts and --json exclude each other")
    if as_dts:
        with input_named(file):
            text = dtb_file.dts_text(file)
        typer.echo(text, nl=False)
        return
    with input_named(file):
        tree = load_tree(file)
    if as_json:
        emit_json({"header": tree.header(), "reservations": tree.reservations,
                   "nodes": [{"path": p, "properties": [
                       {"name": pr.name, "length": len(pr.value), "value": pr.value}
                       for pr in n.props()]} for p, n in tree.walk()]})
        return
    for r in tree.reservations:
        out(f"/memreserve/ {r.address:#x} {r.size:#x}")
    for path, node in tree.walk():
        out(path)
        for pr in node.props():
            out(f"  {pr.name} = {dts.value_text(pr.value)}")


@app.command("get")
def get(
    file: Path = DtbArg,
    node: str = NodeArg,
    prop: str = PropArg,
    kind: fdt_values.FdtType | None = typer.Option(
        None, "--type", "-t", parser=fdt_values.parse_type,
        metavar=fdt_values.TYPE_METAVAR,
        help=_TYPE_HELP + f"{', '.join(TYPES)} (one value per line). Default: as fdtget "
        "guesses (strings, else 32-bit cells when the length allows, else bytes)."),
    as_dts: bool = typer.Option(False, "--dts", help="The value as dtc writes it in DTS."),
) -> None:
    """Print one property as fdtget does (or as --type, or in DTS form); exit 1 when the node
    or property is not there.

    Example: kimagekit dtb get -t x board.dtb /memory@0 reg
    """
    if as_dts and kind is not None:
        raise UsageError("--dts and --type exclude each other")
    with input_named(file):
        raw = dtb_file.read_property(file, node, prop)
        if as_dts:
            out(dts.value_text(raw))
            return
        if kind is None or not kind.name:
            _write(fdt_values.fdtget_text(raw, kind))
            return
        value = decode(kind.name, raw)
    if isinstance(value, bytes):
        out(value.hex())
    elif isinstance(value, str):
        out(value)
    else:
        for v in value:
            out(f"{v:#x}" if isinstance(v, int) else v)


@app.command("ls")
def ls(
    file: Path = DtbArg,
    node: str = typer.Argument("/", metavar="NODE", help="Node path (default: the root)."),
    props: bool = typer.Option(False, "-p", "--properties",
                               help="List the node's properties, as fdtget -p."),
    as_json: bool = typer.Option(False, "--json", help="Subnodes and properties."),
) -> None:
    """List a node's subnodes, one per line, as fdtget -l (its properties with -p); exit 1
    when the node is not there.

    Example: kimagekit dtb ls -p board.dtb /chosen
    """
    with input_named(file):
        listing = dtb_file.list_node(file, node)
    if as_json:
        emit_json(listing)
        return
    for name in listing.properties if props else listing.subnodes:
        out(name)


# -- dtb set / rm ------------------------------------------------------------------------------
@app.command("set")
def set_(
    file: Path = DtbArg,
    node: str = NodeArg,
    prop: str = PropArg,
    values: list[str] | None = typer.Argument(
        None, metavar="VALUE", help="Values: numbers (0x.. hex, 0.. octal, decimal) or, "
        "for strings, one string each; none: an empty property."),
    kind: fdt_values.FdtType | None = typer.Option(
        None, "--type", "-t", parser=fdt_values.parse_type,
        metavar=fdt_values.SET_TYPE_METAVAR,
        help=_TYPE_HELP + f"{', '.join(TYPES)}. Default: the type the property already has "
        "(a string stays a string), else 32-bit cells."),
    create: bool = typer.Option(False, "-c", "--create",
                                help="Create the node if it is missing (its parent must "
                                "exist), as fdtput -c."),
    parents: bool = typer.Option(False, "-p", "--auto-path",
                                 help="Create every missing node on the path, as fdtput -p."),
    output: Path = OutOpt,
    pack: bool = PackOpt,
) -> None:
    """Set one property and write a new DTB; everything else keeps its bytes. Exit 1 when the
    node is not there (unless -c/-p).

    Example: kimagekit dtb set board.dtb / model "IBM pSeries" -o new.dtb
    """
    res = dtb_file.set_property(file, output, node, prop, kind, values or [], pack=pack,
                                create="all" if parents else "last" if create else "")
    for made in res.created:
        out(f"{res.output}: node {made} created")
    how = f"{res.type}, the old value's type" if res.kept else res.type
    out(f"{res.output}: {node} {prop} set as {how} ({res.size} bytes)")


@app.command("rm")
def rm(
    file: Path = DtbArg,
    node: str = NodeArg,
    props: list[str] | None = typer.Argument(
        None, metavar="PROP", help="Properties to delete; none: remove the node and "
        "everything under it."),
    output: Path = OutOpt,
    pack: bool = PackOpt,
) -> None:
    """Delete properties (fdtput -d) or a whole node (fdtput -r) and write a new DTB; exit 1
    when the node or a property is not there.

    Example: kimagekit dtb rm board.dtb /chosen bootargs -o new.dtb
    """
    res = dtb_file.remove(file, output, node, props or [], pack=pack)
    if res.removed:
        out(f"{res.output}: {node} {', '.join(res.removed)} deleted ({res.size} bytes)")
    else:
        out(f"{res.output}: node {node} removed ({res.size} bytes)")


# -- dtb handover ------------------------------------------------------------------------------
STYLE_HELP = ("ima: linux,ima-kexec-buffer (upstream, 4.10 on); seed: linux,kexec-handover-"
              "buffer-start/-end (the 2016 \"kexec hand-over buffer\" series).")


@app.command("handover")
def handover(
    file: Path = DtbArg,
    start: str | None = typer.Option(None, "--start", metavar="ADDR",
                                     help="Buffer address (0x.. or decimal)."),
    size: str | None = typer.Option(None, "--size", metavar="N", help="Buffer size in bytes."),
    style: Style = typer.Option(Style.IMA, "--style", help=STYLE_HELP),
    remove: bool = typer.Option(False, "--remove",
                                help="Remove every hand-over and its reservation."),
    output: Path = OutOpt,
    pack: bool = PackOpt,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable result."),
) -> None:
    """Announce a hand-over buffer in /chosen, with its reservation (or remove it); refused
    when it is not in RAM or overlaps a reservation.

    Example: kimagekit dtb handover board.dtb --start 0x2000000 --size 0x10000 -o new.dtb
    """
    handover_tree(file, start=start, size=size, style=style.value, remove=remove, output=output,
                  pack=pack, as_json=as_json)


def handover_tree(file: Path, *, start: str | None, size: str | None, style: str,
                  remove: bool, output: Path, pack: bool, as_json: bool) -> None:
    """``dtb handover`` (and the old ``patch-handover DTB`` spelling)."""
    if remove and (start is not None or size is not None):
        raise UsageError("--remove takes no --start/--size")
    res = dtb_file.patch_handover(
        file, output, start=None if start is None else _int(start, "--start"),
        size=None if size is None else _int(size, "--size"), style=style, remove=remove,
        pack=pack)
    if as_json:
        emit_json(res)
        return
    for h in res.handovers:
        out(f"{res.output}: hand-over {h.style} [{h.start:#x}, {h.start + h.size:#x}) "
            f"{res.action}{', with its reservation' if h.reserved else ''}")


# -- inspect -----------------------------------------------------------------------------------
def render_summary(s: DtbSummary) -> list[str]:
    h = s.header
    read = "" if s.read_version == h.version else \
        f"read from version {s.read_version}, written back as "
    lines = [f"{read}version {h.version} (last compatible {h.last_comp_version}), totalsize "
             f"{h.totalsize:#x}, boot_cpuid_phys {h.boot_cpuid_phys}",
             f"blocks: reservations {h.off_mem_rsvmap:#x}, struct {h.off_dt_struct:#x}"
             f"+{h.size_dt_struct or 0:#x}, strings {h.off_dt_strings:#x}+{h.size_dt_strings:#x}",
             f"nodes: {s.node_count}"]
    lines += [f"reservation: [{r.address:#x}, {r.address + r.size:#x})" for r in s.reservations]
    lines += [f"RAM: {r.text()} ({r.source})" for r in s.ram]
    lines += [f"hand-over ({h.style}): [{h.start:#x}, {h.start + h.size:#x}) "
              f"{'reserved' if h.reserved else 'NOT reserved'}" for h in s.handovers]
    lines += [f"/chosen {k} = {v}" for k, v in s.chosen.items()]
    return lines


def render_kho(s: KhoTree) -> list[str]:
    """A KHO tree: its ABI, the preserved-memory map's address, each client's data address
    (and size); with a memory dump, the pages the map preserves."""
    if s.known:
        lines = [f"compatible {s.compatible} (client data property: "
                 f"{DATA_PROPERTY[s.compatible]})"]
    else:
        lines = [f"compatible {s.compatible}: a KHO ABI kimagekit does not know "
                 f"({', '.join(DATA_PROPERTY)}); client properties shown by name only"]
    lines.append(f"{MEMORY_MAP} " + ("-" if s.memory_map is None else f"{s.memory_map:#x}"))
    lines.append(f"clients: {len(s.clients)}")
    for c in s.clients:
        if c.data_property is None:
            lines.append(f"  {c.name}: {', '.join(c.properties) or 'no properties'}")
        else:
            value = "-" if c.data is None else f"{c.data:#x}"
            size = "" if c.size is None else f", blob-size {c.size}"
            lines.append(f"  {c.name}: {c.data_property} {value}{size}")
    p = s.preserved
    if p is not None:
        orders = ", ".join(f"order {o}: {n}" for o, n in p.orders) or "none"
        lines.append(f"preserved pages (the radix tree in the memory dump, {p.nodes} nodes "
                     f"read): {orders}")
        for start, end in p.ranges:
            lines.append(f"  [{start:#x}, {end:#x}) {human_size(end - start)}")
    lines += [f"DAMAGE: {d}" for d in s.damage]
    return lines
