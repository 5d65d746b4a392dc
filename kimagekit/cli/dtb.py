"""``kimagekit dtb ...`` and ``kimagekit patch-handover``: device trees (.dtb or .dts input)."""

from __future__ import annotations

from pathlib import Path

import typer

from kimagekit import dtb_file, dts
from kimagekit.cli import handover as handover_cli
from kimagekit.cli.common import emit_json, input_named, out
from kimagekit.devicetree import TYPES, decode
from kimagekit.dtb_file import DtbSummary, is_tree, load_tree
from kimagekit.errors import UnrecognisedFormat, UsageError
from kimagekit.fileio import read_head
from kimagekit.image_info import is_image

app = typer.Typer(no_args_is_help=True, help="Flattened device trees: show, get, set.")

DtbArg = typer.Argument(..., help="A .dtb, or .dts source (the content decides).")
OutOpt = typer.Option(..., "-o", "--output", help="Where to write the new DTB (atomically).")
ValuesArg = typer.Argument(..., help="Values (numbers: 0x.. or decimal).")
PatchArg = typer.Argument(..., help="A DTB or DTS, or a kexec image (the content decides).")
PackOpt = typer.Option(False, "--pack", help="Drop padding and gaps, as fdtput does.")


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
    node: str = typer.Argument(..., help="Node path, e.g. /chosen."),
    prop: str = typer.Argument(..., help="Property name."),
    kind: str | None = typer.Option(None, "--type", "-t", help=f"One of {', '.join(TYPES)}."),
) -> None:
    """Print one property: as dtc would, or decoded as --type (one value per line)."""
    with input_named(file):
        raw = dtb_file.read_property(file, node, prop)
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
    size = dtb_file.set_property(file, output, node, prop, kind, values, pack=pack)
    out(f"{output}: {node} {prop} set ({size} bytes)")


# -- patch-handover ----------------------------------------------------------------------------
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
        force: bool = typer.Option(False, "--force", help="Image: write contents the next "
                                   "kernel would refuse."),
        continuation: bool = typer.Option(False, "--continuation", help="Image: refuse an IMA "
                                          "list that does not extend the old hand-over."),
    ) -> None:
        """Announce a hand-over buffer in a DTB (or remove it); or, for a kexec image, replace
        its hand-over contents as kexec_update_segment does."""
        head = read_head(file, 65536)
        if is_image(head):
            if start is not None or size is not None or remove or pack:
                raise UsageError("--start/--size/--remove/--pack are for device trees")
            handover_cli.patch_image(file, ima=ima, data=data, output=output,
                                     in_place=in_place, reseal=reseal, as_json=as_json,
                                     force=force, continuation=continuation)
            return
        if ima is not None or data is not None or in_place or reseal or force or continuation:
            raise UsageError("--ima/--data/--in-place/--reseal/--force/--continuation are for "
                             "kexec images")
        if output is None:
            raise UsageError("-o/--output is needed for a device tree")
        if remove and (start is not None or size is not None):
            raise UsageError("--remove takes no --start/--size")
        if not is_tree(head):
            with input_named(file):
                raise UnrecognisedFormat("patch-handover reads a DTB, DTS or kexec image",
                                         fmt="patch-handover")
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
