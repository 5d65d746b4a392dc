"""What ``inspect`` knows: each format's detector over the first bytes and its describer.

Order matters: the first detector that says yes wins. Kernels come first: their detectors are
exact (magic, or an ELF kernel without the kimagekit note), so a vmlinux that happens to hold the
string "kimagekit" is still a vmlinux.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kimagekit import dtb_file, ima_log, image_info, kernel_info, kernels
from kimagekit.errors import UnrecognisedFormat
from kimagekit.fileio import input_size, read_head

HEAD_SIZE = 65536


@dataclass(frozen=True)
class Kind:
    name: str
    detect: Callable[[bytes, int], bool]
    describe: Callable[[Path], Any]  # a frozen dataclass


def _kernel(kind: str) -> Callable[[bytes, int], bool]:
    return lambda head, _size: kernels.kernel_kind(head) == kind


def _ima(kind: str) -> Callable[[bytes, int], bool]:
    def test(head: bytes, size: int) -> bool:
        fmt = ima_log.detect(head, size)
        return fmt is not None and fmt.kind == kind
    return test


KINDS: tuple[Kind, ...] = (
    Kind("bzImage", _kernel("bzImage"), kernel_info.describe_bzimage),
    Kind("arm64 zboot", _kernel("zboot"), kernel_info.describe_zboot),
    Kind("arm64 Image", _kernel("arm64-image"), kernel_info.describe_arm64),
    Kind("vmlinux", lambda head, _size: kernel_info.is_vmlinux(head),
         kernel_info.describe_vmlinux),
    Kind("kexec image", lambda head, _size: image_info.is_image(head), image_info.describe),
    Kind("device-tree", lambda head, _size: dtb_file.is_tree(head), dtb_file.describe),
    Kind("ima-kexec-buffer", _ima("kexec-buffer"), ima_log.summarize),
    Kind("ima-binary-list", _ima("binary"), ima_log.summarize),
    Kind("ima-ascii-list", _ima("ascii"), ima_log.summarize),
)


def detect(path: str | os.PathLike[str]) -> Kind:
    """The first kind whose detector takes the file's first bytes."""
    head = read_head(path, HEAD_SIZE)
    size = input_size(path)
    for kind in KINDS:
        if kind.detect(head, size):
            return kind
    known = ", ".join(dict.fromkeys(k.name for k in KINDS))
    raise UnrecognisedFormat(f"unrecognised format (known: {known})", fmt="inspect")


@dataclass(frozen=True)
class Described:
    file: str
    format: str
    summary: Any


def inspect(path: str | os.PathLike[str]) -> Described:
    """Detect ``path``'s format from its content and describe it."""
    kind = detect(path)
    return Described(str(path), kind.name, kind.describe(Path(path)))
