"""``kimagekit load IMAGE`` and ``kimagekit unload``: an image handed to the running kernel
through ``kexec_load(2)`` (and, with ``--exec``, rebooted into), or the loaded one dropped."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from kimagekit import kexec_load
from kimagekit.cli.common import emit_json, input_named, out, warn


def call_lines(p: kexec_load.LoadPlan) -> list[str]:
    """The syscall's arguments, one segment a line."""
    lines = [f"kexec_load(entry={p.entry:#x}, nr_segments={p.nr_segments}, segments, "
             f"flags={p.flags:#x} KEXEC_ARCH_DEFAULT): syscall {p.number} on {p.machine}",
             f"{'#':>2} {'role':<11} {'buf':>10} {'bufsz':>10} {'mem':>18} {'memsz':>10}"]
    for s in p.segments:
        lines.append(f"{s.index:>2} {s.role:<11} {s.buf_offset:#10x} {s.bufsz:#10x} "
                     f"{s.mem:#18x} {s.memsz:#10x}")
    lines.append(f"buf: offset in {p.file}, mapped privately at load time")
    return lines


def register(app: typer.Typer) -> None:
    @app.command("load")
    def load_cmd(
        image: Path = typer.Argument(..., metavar="IMAGE", help="A kexec image written by "
                                     "kimagekit ('-': stdin)."),
        exec_: bool = typer.Option(False, "--exec", help="Sync and reboot into it once loaded."),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Check it and print the syscall's arguments; load nothing."),
        force: bool = typer.Option(
            False, "--force", help="Load an image that does not verify or whose hand-over the "
                                   "next kernel would refuse."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Load a kimagekit image into the running kernel through kexec_load(2), segments and
        entry as the image holds them; --exec reboots into it.

        Refused before the syscall (exit 1): an image for another architecture, more than 16
        segments, an image that does not verify or a hand-over the next kernel would refuse
        (both loaded anyway with --force), no CAP_SYS_BOOT. The kernel's errors are explained
        (exit 1). Needs root unless --dry-run.

        Example: kimagekit load kexec.img --exec"""
        with input_named(image):
            report = kexec_load.load(image, force=force, dry_run=dry_run)
        p = report.plan
        for w in p.warnings:
            warn(f"warning: {image}: --force: {w}")
        if as_json:
            emit_json(report)
        elif dry_run:
            for line in call_lines(p):
                out(line)
            out("dry run: nothing loaded")
        else:
            out(f"{image}: loaded through kexec_load: {p.nr_segments} segments, entry "
                f"{p.entry:#x}" + ("; syncing and rebooting into it" if exec_ else
                                  "; boot it with kexec -e or systemctl kexec"))
        if exec_ and not dry_run:
            sys.stdout.flush()
            with input_named(image):
                kexec_load.reboot()

    @app.command("unload")
    def unload_cmd(
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Print the syscall's arguments; unload nothing."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Unload the image loaded for kexec (kexec_load with no segments); needs root unless
        --dry-run.

        Example: kimagekit unload --dry-run"""
        r = kexec_load.unload(dry_run=dry_run)
        if as_json:
            emit_json(r)
            return
        if dry_run:
            out(f"kexec_load(entry={r.entry:#x}, nr_segments=0, segments=NULL, "
                f"flags={r.flags:#x} KEXEC_ARCH_DEFAULT): syscall {r.number} on {r.machine}")
            out("dry run: nothing unloaded")
            return
        before = {True: " (an image was loaded)", False: " (none was loaded)", None: ""}
        out(f"unloaded{before[r.was_loaded]}")
