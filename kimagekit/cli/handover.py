"""``kimagekit patch-handover IMAGE``: the image half of the root ``patch-handover`` command (the
device-tree half is in :mod:`kimagekit.cli.dtb`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kimagekit import ima_kexec, ima_log
from kimagekit.cli.common import emit_json, input_named, out
from kimagekit.errors import UsageError
from kimagekit.handover import ImaContent, endian_of, patch
from kimagekit.image import open_image


@dataclass(frozen=True)
class ImagePatchResult:
    output: str
    segment: int
    mem: int
    memsz: int
    old_bufsz: int
    bufsz: int
    resealed: bool
    digest: str
    ima: ImaContent | None  # the new buffer read back (--ima only)


def new_contents(image: Path, ima: Path | None, data: Path | None) -> bytes:
    """--data as is, or --ima built into a kexec buffer in the image's byte order."""
    if (ima is None) == (data is None):
        raise UsageError("give exactly one of --ima LIST and --data FILE")
    if data is not None:
        return data.read_bytes()
    assert ima is not None
    with input_named(image), open_image(image) as (info, _):
        little = info.little
    with input_named(ima):
        entries = ima_log.read_entries(ima)
    return ima_kexec.build_buffer(entries, endian=endian_of(little))


def patch_image(image: Path, *, ima: Path | None, data: Path | None, output: Path | None,
                in_place: bool, reseal: bool, as_json: bool) -> None:
    if (output is None) == (not in_place):
        raise UsageError("give exactly one of -o OUT and --in-place (the input is never "
                         "changed otherwise)")
    new = new_contents(image, ima, data)
    target = output if output is not None else image
    with input_named(image):
        done = patch(image, new, out=target, reseal=reseal)
    res = done.result
    result = ImagePatchResult(str(target), res.segment.index, res.segment.mem, res.segment.memsz,
                              res.old_bufsz, res.segment.bufsz, res.resealed,
                              res.verify.digest.hex(), done.ima if ima is not None else None)
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
