"""``kimagekit dtb ...`` and ``kimagekit patch-handover``: device trees (.dtb or .dts input)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from kimagekit import dts, ppc_fdt
from kimagekit.cli import handover as handover_cli
from kimagekit.cli import image as image_cli
from kimagekit.cli.common import emit_json, input_named, out
from kimagekit.cli.inspect import Kind
from kimagekit.devicetree import TYPES, DeviceTree, Header, Reservation, decode, encode
from kimagekit.errors import UnrecognisedFormat, UsageError
from kimagekit.fileio import atomic_write, mapped, read_head
from kimagekit.formats.fdt import FDT_MAGIC

app = typer.Typer(no_args_is_help=True, help="Flattened device trees: show, get, set.")

_MAGIC = FDT_MAGIC.to_bytes(4, "big")
DtbArg = typer.Argument(..., help="A .dtb, or .dts source (the content decides).")
OutOpt = typer.Option(..., "-o", "--output", help="Where to write the new DTB (atomically).")
ValuesArg = typer.Argument(..., help="Values (numbers: 0x.. or decimal).")
PatchArg = typer.Argument(..., help="A DTB or DTS, or a kexec image (the content decides).")
PackOpt = typer.Option(False, "--pack", help="Drop padding and gaps, as fdtput does.")


def is_dtb(head: bytes) -> bool:
    return head[:4] == _MAGIC


def load_tree(path: Path) -> DeviceTree:
    """A DTB, or DTS text compiled in memory; anything else is refused."""
    head = read_head(path, 4096)
    if is_dtb(head):
        with mapped(path) as view:
            return DeviceTree.parse(view)
    if dts.looks_like_dts(head):
        return dts.from_dts(path.read_text(encoding="latin-1"))
    raise UnrecognisedFormat("not a device tree (no DTB magic, no /dts-v1/ tag)", fmt="dtb")


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"{what}: not a number: {text!r}") from None


# -- dtb show / get / set ----------------------------------------------------------------------
@app.command("show")
def show(
    file: Path = DtbArg,
    as_dts: bool = typer.Option(False, "--dts", help="DTS text, as dtc -O dts writes it."),
    as_json: bool = typer.Option(False, "--json", help="Header, reservations, every node."),
) -> None:
    """Every property of every node, one per line (or DTS, or JSON)."""
    if as_dts and as_json:
        raise UsageError("--dts and --json exclude each other")
    with input_named(file):
        tree = load_tree(file)
    if as_dts:
        typer.echo(dts.to_dts(tree), nl=False)
        return
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
    node: str = typer.Argument(..., help="Node path, e.g. /chosen."),
    prop: str = typer.Argument(..., help="Property name."),
    kind: str | None = typer.Option(None, "--type", "-t", help=f"One of {', '.join(TYPES)}."),
) -> None:
    """Print one property: as dtc would, or decoded as --type (one value per line)."""
    with input_named(file):
        tree = load_tree(file)
        tree.need(node)
        raw = tree.get(node, prop)
        if raw is None:
            raise UsageError(f"no property {prop} in {node}", fmt="dtb")
        if kind is None:
            out(dts.value_text(raw))
            return
        value = decode(kind, raw)
    if isinstance(value, bytes):
        out(value.hex())
    elif isinstance(value, str):
        out(value)
    else:
        for v in value:
            out(f"{v:#x}" if isinstance(v, int) else v)


@app.command("set")
def set_(
    file: Path = DtbArg,
    node: str = typer.Argument(..., help="Node path (must exist)."),
    prop: str = typer.Argument(..., help="Property name."),
    values: list[str] = ValuesArg,
    kind: str = typer.Option("u32", "--type", "-t", help=f"One of {', '.join(TYPES)}."),
    output: Path = OutOpt,
    pack: bool = PackOpt,
) -> None:
    """Set one property and write a new DTB; everything else keeps its bytes."""
    with input_named(file):
        tree = load_tree(file)
        tree.set(node, prop, encode(kind, values))
        data = tree.build(pack=pack)
    atomic_write(output, data)
    out(f"{output}: {node} {prop} set ({len(data)} bytes)")


# -- patch-handover ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchResult:
    output: str
    action: str  # "set" or "removed"
    handovers: tuple[ppc_fdt.Handover, ...]
    size: int


def patch_handover_dtb(file: Path, output: Path, *, start: int | None = None,
                       size: int | None = None, style: str = "seed", remove: bool = False,
                       pack: bool = False) -> PatchResult:
    """Set (or remove) the hand-over buffer in a DTB/DTS and write the result atomically."""
    with input_named(file):
        tree = load_tree(file)
        if remove:
            done = ppc_fdt.remove_handover(tree)
            if not done:
                raise UsageError("no hand-over buffer to remove", fmt="dtb")
        else:
            if start is None or size is None:
                raise UsageError("--start and --size are needed (or --remove)")
            done = (ppc_fdt.set_handover(tree, start, size, style),)
        data = tree.build(pack=pack)
    atomic_write(output, data)
    return PatchResult(str(output), "removed" if remove else "set", done, len(data))


def register(root: typer.Typer) -> None:
    @root.command("patch-handover")
    def patch_handover(
        file: Path = PatchArg,
        start: str | None = typer.Option(None, "--start", help="Buffer address."),
        size: str | None = typer.Option(None, "--size", help="Buffer size in bytes."),
        style: str = typer.Option("seed", "--style", help="seed (2016 series) or ima."),
        remove: bool = typer.Option(False, "--remove", help="Remove it and its reservation."),
        output: Path | None = typer.Option(None, "-o", "--output", help="Where to write."),
        pack: bool = PackOpt,
        as_json: bool = typer.Option(False, "--json", help="Machine-readable result."),
        ima: Path | None = typer.Option(None, "--ima", help="Image: new IMA list to hand over."),
        data: Path | None = typer.Option(None, "--data", help="Image: new raw contents."),
        in_place: bool = typer.Option(False, "--in-place", help="Image: rewrite IMAGE itself."),
        reseal: bool = typer.Option(False, "--reseal", help="Image: recompute the digest when "
                                    "the policy hashes the hand-over."),
    ) -> None:
        """Announce a hand-over buffer in a DTB (or remove it); or, for a kexec image, replace
        its hand-over contents as kexec_update_segment does."""
        head = read_head(file, 65536)
        if image_cli.is_image(head, len(head)):
            if start is not None or size is not None or remove or pack:
                raise UsageError("--start/--size/--remove/--pack are for device trees")
            handover_cli.patch_image(file, ima=ima, data=data, output=output,
                                     in_place=in_place, reseal=reseal, as_json=as_json)
            return
        if ima is not None or data is not None or in_place or reseal:
            raise UsageError("--ima/--data/--in-place/--reseal are for kexec images")
        if output is None:
            raise UsageError("-o/--output is needed for a device tree")
        if remove and (start is not None or size is not None):
            raise UsageError("--remove takes no --start/--size")
        if not (is_dtb(head) or dts.looks_like_dts(head)):
            with input_named(file):
                raise UnrecognisedFormat("patch-handover reads a DTB, DTS or kexec image",
                                         fmt="patch-handover")
        res = patch_handover_dtb(
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
@dataclass(frozen=True)
class DtbSummary:
    source: str
    header: Header
    reservations: tuple[Reservation, ...]
    chosen: dict[str, str]
    handovers: tuple[ppc_fdt.Handover, ...]
    ram: tuple[ppc_fdt.Range, ...]
    node_count: int


def describe(path: Path) -> DtbSummary:
    tree = load_tree(path)
    chosen = tree.find(ppc_fdt.CHOSEN)
    items = {p.name: dts.value_text(p.value) for p in chosen.props()} if chosen else {}
    return DtbSummary("dtb" if is_dtb(read_head(path, 4)) else "dts", tree.header(),
                      tuple(tree.reservations), items, ppc_fdt.handovers(tree),
                      ppc_fdt.ram_ranges(tree), tree.node_count())


def render(s: Any) -> list[str]:
    h = s.header
    lines = [f"version {h.version} (last compatible {h.last_comp_version}), totalsize "
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


def inspect_kinds() -> list[Kind]:
    return [Kind("device-tree", lambda head, _size: is_dtb(head) or dts.looks_like_dts(head),
                 describe, render)]
