"""``kimagekit inspect FILE``: the library detects the format and describes it
(:mod:`kimagekit.detect`); this module only picks the text renderer for the format's name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from kimagekit.cli import dtb as dtb_cli
from kimagekit.cli import ima as ima_cli
from kimagekit.cli import image as image_cli
from kimagekit.cli import kernel as kernel_cli
from kimagekit.cli.common import emit_json, input_named, out
from kimagekit.detect import inspect

RENDERERS: dict[str, Callable[[Any], list[str]]] = {
    **kernel_cli.RENDERERS,
    "kexec image": image_cli.render_summary,
    "device-tree": dtb_cli.render_summary,
    "ima-kexec-buffer": ima_cli.render_summary,
    "ima-binary-list": ima_cli.render_summary,
    "ima-ascii-list": ima_cli.render_summary,
}


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect_cmd(
        file: Path = typer.Argument(..., help="Any file kimagekit knows; the content decides."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Detect FILE's format from its content and describe it; exit 1 when the description
        reports damage."""
        with input_named(file):
            found = inspect(file)
        if as_json:
            emit_json(found)
        else:
            out(f"{file}: {found.format}")
            for line in RENDERERS[found.format](found.summary):
                out(f"  {line}")
        # A summary that lists damage (a kexec image's ``damage``) is a failed check.
        if getattr(found.summary, "damage", ()):
            raise typer.Exit(1)
