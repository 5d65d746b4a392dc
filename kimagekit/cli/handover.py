"""``kimagekit patch-handover IMAGE``: the image half of the root ``patch-handover`` command (the
device-tree half is in :mod:`kimagekit.cli.dtb`)."""

from __future__ import annotations

from pathlib import Path

from kimagekit.cli.common import emit_json, out, warn
from kimagekit.errors import UsageError
from kimagekit.handover import patch_file


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
            f"{'restore ok' if m.restored is not None else 'restore FAILED'}")
