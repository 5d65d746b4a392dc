"""``kimagekit patch-handover IMAGE``: replace a kexec image's hand-over contents. The device-tree
job is ``dtb handover`` (:mod:`kimagekit.cli.dtb`); the old ``patch-handover DTB`` spelling still
runs it, with a notice."""

from __future__ import annotations

from pathlib import Path

import typer

from kimagekit.cli.common import DtStyle, emit_json, input_named, out, warn
from kimagekit.dtb_file import is_tree
from kimagekit.errors import UnrecognisedFormat, UsageError
from kimagekit.fileio import read_head
from kimagekit.handover import patch_file
from kimagekit.image_info import is_image


def register(root: typer.Typer) -> None:
    @root.command("patch-handover")
    def patch_handover(
        file: Path = typer.Argument(..., metavar="IMAGE", help="A kexec image (kimagekit "
                                    "build's output)."),
        ima: Path | None = typer.Option(None, "--ima", metavar="LIST",
                                        help="New IMA list (or kexec buffer) to hand over."),
        data: Path | None = typer.Option(None, "--data", metavar="FILE",
                                         help="New raw hand-over contents."),
        output: Path | None = typer.Option(None, "-o", "--output", metavar="OUT",
                                           help="Where to write the patched image."),
        in_place: bool = typer.Option(False, "--in-place", help="Rewrite IMAGE itself."),
        reseal: bool = typer.Option(False, "--reseal", help="Recompute the digest when the "
                                    "policy hashes the hand-over."),
        force: bool = typer.Option(False, "--force", help="Write contents the next kernel "
                                   "would refuse."),
        continuation: bool = typer.Option(False, "--continuation", help="Refuse an IMA list "
                                          "that does not extend the old hand-over."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable result."),
        # the device-tree job's options, for the old `patch-handover DTB` spelling only
        start: str | None = typer.Option(None, "--start", hidden=True),
        size: str | None = typer.Option(None, "--size", hidden=True),
        style: DtStyle | None = typer.Option(None, "--style", hidden=True),
        remove: bool = typer.Option(False, "--remove", hidden=True),
        pack: bool = typer.Option(False, "--pack", hidden=True),
    ) -> None:
        """Replace a kexec image's hand-over contents as kexec_update_segment does, and verify
        the result.

        Example: kimagekit patch-handover kexec.img --ima new.bin -o patched.img
        """
        head = read_head(file, 65536)
        if is_image(head):
            if start is not None or size is not None or style is not None or remove or pack:
                raise UsageError("--start/--size/--style/--remove/--pack are for device trees "
                                 "(kimagekit dtb handover)")
            patch_image(file, ima=ima, data=data, output=output, in_place=in_place,
                        reseal=reseal, as_json=as_json, force=force, continuation=continuation)
            return
        if not is_tree(head):
            with input_named(file):
                raise UnrecognisedFormat("patch-handover reads a kexec image (a device tree: "
                                         "kimagekit dtb handover)", fmt="patch-handover")
        if ima is not None or data is not None or in_place or reseal or force or continuation:
            raise UsageError("--ima/--data/--in-place/--reseal/--force/--continuation are for "
                             "kexec images")
        if output is None:
            raise UsageError("-o/--output is needed for a device tree")
        warn("notice: `patch-handover DTB` is now `kimagekit dtb handover DTB` (whose --style "
             "defaults to ima; this spelling keeps seed)")
        from kimagekit.cli.dtb import handover_tree

        handover_tree(file, start=start, size=size, style=style.value if style else "seed",
                      remove=remove, output=output, pack=pack, as_json=as_json)


def patch_image(image: Path, *, ima: Path | None, data: Path | None, output: Path | None,
                in_place: bool, reseal: bool, as_json: bool, force: bool = False,
                continuation: bool = False) -> None:
    if (output is None) == (not in_place):
        raise UsageError("give exactly one of -o OUT and --in-place (the input is never "
                         "changed otherwise)")
    if (ima is None) == (data is None):
        raise UsageError("give exactly one of --ima LIST and --data FILE")
    if continuation and ima is None:
        raise UsageError("--continuation checks an --ima list against the old hand-over")
    target = output if output is not None else image
    result = patch_file(image, output, ima=ima, data=data, reseal=reseal, force=force,
                        continuation=continuation)
    for w in result.warnings:
        warn(f"warning: {image}: {w}")
    if as_json:
        emit_json(result)
        return
    out(f"{target}: hand-over segment {result.segment} at {result.mem:#x}: {result.old_bufsz} -> "
        f"{result.bufsz} of {result.memsz} bytes{', resealed' if result.resealed else ''}; "
        f"verified, digest {result.digest}")
    if result.ima is not None:
        m = result.ima
        out(f"{target}: IMA {m.form}: {m.entries} entries, "
            f"{'restore FAILED' if m.restore_error else 'restore ok'}")
