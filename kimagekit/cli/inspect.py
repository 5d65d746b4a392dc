"""``kimagekit inspect FILE``: detect the format from the content and describe it.

Each format registers a :class:`Kind`: a detector over the first bytes, a describer returning a
dataclass, and a text renderer. Order matters: the first detector that says yes wins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from kimagekit.cli.common import emit_json, input_named, out
from kimagekit.errors import UnrecognisedFormat
from kimagekit.fileio import read_head


@dataclass(frozen=True)
class Kind:
    name: str
    detect: Callable[[bytes, int], bool]
    describe: Callable[[Path], Any]
    render: Callable[[Any], list[str]]


KINDS: list[Kind] = []


def add_kind(kind: Kind) -> None:
    KINDS.append(kind)


def _load_kinds() -> None:
    if KINDS:
        return
    from kimagekit.cli import dtb as dtb_cli
    from kimagekit.cli import ima as ima_cli
    from kimagekit.cli import image as image_cli
    from kimagekit.cli import kernel as kernel_cli

    # Kernels first: their detectors are exact (magic, or an ELF kernel without the kimagekit
    # note), so a vmlinux that happens to hold the string "kimagekit" is still a vmlinux.
    for kind in [*kernel_cli.inspect_kinds(), *image_cli.inspect_kinds(),
                 *dtb_cli.inspect_kinds(), *ima_cli.inspect_kinds()]:
        add_kind(kind)


def detect(path: Path) -> Kind:
    _load_kinds()
    head = read_head(path, 65536)
    size = path.stat().st_size
    for kind in KINDS:
        if kind.detect(head, size):
            return kind
    known = ", ".join(dict.fromkeys(k.name for k in KINDS))
    raise UnrecognisedFormat(f"unrecognised format (known: {known})", fmt="inspect")


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect(
        file: Path = typer.Argument(..., help="Any file kimagekit knows; the content decides."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Detect FILE's format from its content and describe it."""
        with input_named(file):
            kind = detect(file)
            summary = kind.describe(file)
        if as_json:
            emit_json({"file": str(file), "format": kind.name, "summary": summary})
        else:
            out(f"{file}: {kind.name}")
            for line in kind.render(summary):
                out(f"  {line}")
