"""``kimagekit build``: compose, seal and write a kexec image (ppc64 ELF loader for now)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from kimagekit import ima_kexec, ima_log
from kimagekit.arch import ppc64, ppc64_dt
from kimagekit.cli.build_x86 import build_x86
from kimagekit.cli.common import emit_json, input_named, out
from kimagekit.cli.dtb import load_tree
from kimagekit.cli.image import ls_lines
from kimagekit.errors import KimageError, UsageError, about_file
from kimagekit.fileio import mapped
from kimagekit.handover import endian_of
from kimagekit.image import ARCHES, HandoverStyle, read_image, write_image
from kimagekit.purgatory import DigestPolicy, parse_purgatory

PPC_ARCHES = ("ppc64le", "ppc64")


@dataclass(frozen=True)
class BuildResult:
    output: str
    arch: str
    page_size: int
    policy: str
    entry: int
    digest: str
    handover_entries: int | None  # IMA entries in the hand-over buffer (--ima)


def _number(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"{what}: not a number: {text!r}") from None
    if value <= 0:
        raise UsageError(f"{what}: must be positive, not {text}")
    return value


def _handover(ima: Path | None, data: Path | None, little: bool) -> tuple[bytes, int | None]:
    """The hand-over buffer's bytes, and the number of IMA entries in it (None for --handover)."""
    if ima is not None:
        with input_named(ima):
            entries = ima_log.read_entries(ima)
        return ima_kexec.build_buffer(entries, endian=endian_of(little)), len(entries)
    assert data is not None
    return data.read_bytes(), None


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build_cmd(
        arch: str = typer.Option(..., "--arch", help="Target: ppc64le, ppc64 or x86_64."),
        kernel: Path = typer.Option(..., "--kernel", help="The vmlinux (ELF) to load."),
        dtb: Path | None = typer.Option(
            None, "--dtb", help="The running system's tree (.dtb or .dts); ppc64 only."),
        output: Path = typer.Option(..., "-o", "--output", help="Where to write the image."),
        initrd: Path | None = typer.Option(None, "--initrd", help="Initial ramdisk."),
        cmdline: str = typer.Option("", "--cmdline", help="Kernel command line (bootargs)."),
        purgatory: Path | None = typer.Option(None, "--purgatory", help="Purgatory object."),
        purgatory_from: Path | None = typer.Option(
            None, "--purgatory-from", help="x86_64: take the purgatory from this kernel."),
        mem: str | None = typer.Option(
            None, "--mem", help="x86_64: RAM ranges START-LAST or START+SIZE, comma separated."),
        ima: Path | None = typer.Option(None, "--ima", help="IMA list for the hand-over."),
        handover: Path | None = typer.Option(None, "--handover", help="Raw hand-over bytes."),
        handover_size: str | None = typer.Option(
            None, "--handover-size", help="memsz of the hand-over (default: as IMA sizes it)."),
        handover_style: HandoverStyle = typer.Option(
            HandoverStyle.SEED, "--handover-style", help="seed or ima."),
        policy: DigestPolicy = typer.Option(DigestPolicy.SEED, "--digest-policy",
                                            help="Which segments the digest leaves out."),
        page_size: str | None = typer.Option(
            None, "--page-size", help=f"Target page size (default {ppc64_dt.PPC64_PAGE_SIZE})."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable result."),
    ) -> None:
        """Place kernel, initrd, hand-over, device tree (and purgatory) as kexec_file_load does;
        seal, write atomically, re-read and verify."""
        if arch == "x86_64":
            if dtb is not None or handover is not None:
                raise UsageError("x86_64 takes no --dtb or --handover (the hand-over is --ima)")
            build_x86(kernel=kernel, output=output, initrd=initrd, cmdline=cmdline,
                      purgatory=purgatory, purgatory_from=purgatory_from, ima=ima,
                      handover_size=_number(handover_size, "--handover-size"), mem=mem,
                      policy=policy, as_json=as_json)
            return
        if arch not in PPC_ARCHES:
            raise UsageError(f"--arch {arch}: this build supports "
                             f"{', '.join((*PPC_ARCHES, 'x86_64'))}")
        if dtb is None or purgatory_from is not None or mem is not None:
            raise UsageError("ppc64 needs --dtb and takes no --purgatory-from or --mem")
        if ima is not None and handover is not None:
            raise UsageError("--ima and --handover exclude each other")
        if handover_style not in (HandoverStyle.SEED, HandoverStyle.IMA):
            raise UsageError(f"--handover-style {handover_style}: a device tree takes seed or ima")
        page = _number(page_size, "--page-size") or ppc64_dt.PPC64_PAGE_SIZE
        if page & (page - 1):
            raise UsageError(f"--page-size {page:#x} is not a power of two")
        little = ARCHES[arch][1]
        ho, entries = (None, None)
        ho_size = _number(handover_size, "--handover-size")
        if ima is not None or handover is not None:
            ho, entries = _handover(ima, handover, little)
            need = ima_kexec.segment_size(len(ho), page_size=page)
            if ho_size is not None and ho_size < len(ho):
                raise UsageError(f"--handover-size {ho_size} is smaller than the hand-over "
                                 f"buffer ({len(ho)} bytes)")
            ho_size = ho_size or need
        elif ho_size is not None:
            raise UsageError("--handover-size needs --ima or --handover")
        with input_named(dtb):
            tree = load_tree(dtb)
            target = ppc64_dt.target_from_tree(tree, arch, page)
        purg = None
        if purgatory is not None:
            with input_named(purgatory):
                purg = parse_purgatory(purgatory.read_bytes())
        rd = None if initrd is None else initrd.read_bytes()
        with mapped(kernel) as view:
            try:
                img = ppc64.build(target, view, tree.build(), ppc64_dt.chosen_hook(page),
                                  initrd=rd, handover=ho, handover_size=ho_size,
                                  handover_style=handover_style, cmdline=cmdline,
                                  purgatory=purg, policy=policy)
            except KimageError as err:
                # Only the vmlinux's own faults name it; placement refusals are about the layout.
                if err.fmt == ppc64.FMT:
                    raise about_file(err, kernel) from err.__cause__
                raise
            res = write_image(output, img)
            del img  # its segments are views into the vmlinux's map
        with mapped(output) as written:
            info = read_image(written)
        result = BuildResult(str(output), arch, page, policy.value, info.entry, res.digest.hex(),
                             entries)
        if as_json:
            emit_json({"result": result, "image": info})
            return
        for line in ls_lines(info):
            out(line)
        out(f"{output}: entry {info.entry:#x}, digest {res.digest.hex()} ({policy} policy), "
            "verified")
