"""``kimagekit inspect FILE``: the library detects the format and describes it
(:mod:`kimagekit.detect`); this module only picks the text renderer for the format's name."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from kimagekit.cli.common import emit_json, input_named, out
from kimagekit.cli.progress import Progress
from kimagekit.detect import inspect
from kimagekit.errors import UsageError

# format -> (CLI module, renderer): only the renderer of the format found is imported
RENDERERS: dict[str, tuple[str, str]] = {
    "bzImage": ("kernel", "render_bzimage"),
    "arm64 zboot": ("kernel", "render_zboot"),
    "arm64 Image": ("kernel", "render_arm64"),
    "vmlinux": ("kernel", "render_vmlinux"),
    "kexec image": ("image", "render_summary"),
    "device-tree": ("dtb", "render_summary"),
    "kho-tree": ("dtb", "render_kho"),
    "ima-kexec-buffer": ("ima_summary", "render_summary"),
    "ima-binary-list": ("ima_summary", "render_summary"),
    "ima-ascii-list": ("ima_summary", "render_summary"),
}


def renderer(fmt: str) -> Callable[[Any], list[str]]:
    module, name = RENDERERS[fmt]
    found: Callable[[Any], list[str]] = getattr(
        importlib.import_module(f"kimagekit.cli.{module}"), name)
    return found


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect_cmd(
        file: Path = typer.Argument(..., metavar="FILE", help="Any file kimagekit knows: "
                                    "kernel, kexec image, device tree, IMA list ('-': stdin); "
                                    "the content decides."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
        svg: Path | None = typer.Option(None, "--svg", metavar="FILE", help="A kexec image: "
                                        "also write its memory map as SVG ('-': stdout)."),
        memory: str | None = typer.Option(
            None, "--memory", metavar="FILE[@BASE]", help="A KHO tree: walk its preserved "
            "pages in this memory dump (raw physical memory from BASE, default 0, or an ELF "
            "core such as /proc/kcore)."),
    ) -> None:
        """Detect FILE's format from its content and describe it; exit 1 when the description
        reports damage.

        A kexec image's description ends with its memory map (RAM, reservations, segments,
        free holes).

        Example: kimagekit inspect /boot/vmlinuz"""
        # a kernel is decompressed, an image hashed: a spinner if that takes over a second
        with input_named(file), Progress(f"inspecting {file}"):
            found = inspect(file)
        if memory is not None:
            if found.format != "kho-tree":
                raise UsageError(f"--memory reads a KHO tree's preserved pages; {file} is "
                                 f"{found.format}")
            from dataclasses import replace

            from kimagekit.kho import with_memory
            found = replace(found, summary=with_memory(found.summary, memory))
        memory = getattr(found.summary, "memory_map", None)
        if svg is not None:
            if memory is None:
                raise UsageError(f"--svg draws a kexec image's memory map; {file} is "
                                 f"{found.format}")
            from kimagekit.cli.memory_map import write_svg
            write_svg(svg, memory, (file,))
        if as_json:
            emit_json(found)
        else:
            out(f"{file}: {found.format}")
            for line in renderer(found.format)(found.summary):
                out(f"  {line}")
        # A summary that lists damage (a kexec image's ``damage``) is a failed check.
        if getattr(found.summary, "damage", ()):
            raise typer.Exit(1)
