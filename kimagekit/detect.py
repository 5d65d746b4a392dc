"""What ``inspect`` knows: each format's detector over the first bytes and its describer.

Order matters: the first detector that says yes wins. Kernels come first: their detectors are
exact (magic, or an ELF kernel without the kimagekit note), so a vmlinux that happens to hold the
string "kimagekit" is still a vmlinux.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kimagekit.errors import UnrecognisedFormat
from kimagekit.fileio import input_size, read_head

__all__ = [
    "HEAD_SIZE", "KINDS", "MAGIC_ARM64", "MAGIC_BZIMAGE", "MAGIC_DTB", "MAGIC_ELF", "MAGIC_ZBOOT",
    "Described", "Kind", "detect", "inspect",
]

HEAD_SIZE = 65536

# Bytes each format must hold in its head (a necessary condition of its detector, so a file
# without them is passed over without importing that format's modules): the bzImage "HdrS" at
# 0x202, the PE "MZ" of a zboot, the arm64 Image magic at 0x38, the ELF magic of a vmlinux or
# a kexec image, the FDT magic of a DTB or the "/" that starts DTS text (a comment or /dts-v1/).
MAGIC_BZIMAGE = (0x202, b"HdrS")
MAGIC_ZBOOT = (0, b"MZ")
MAGIC_ARM64 = (0x38, b"ARM\x64")
MAGIC_ELF = (0, b"\x7fELF")
MAGIC_DTB = b"\xd0\x0d\xfe\xed"


@dataclass(frozen=True)
class Kind:
    name: str
    detect: Callable[[bytes, int], bool]
    describe: Callable[[Path], Any]  # a frozen dataclass


def _lib(module: str, name: str) -> Callable[..., Any]:
    """``kimagekit.<module>.<name>``, imported when first called."""
    def call(*args: Any) -> Any:
        return getattr(importlib.import_module(f"kimagekit.{module}"), name)(*args)
    return call


def _has(magic: tuple[int, bytes], head: bytes) -> bool:
    at, value = magic
    return head[at:at + len(value)] == value


def _kernel(kind: str, magic: tuple[int, bytes]) -> Callable[[bytes, int], bool]:
    kernel_kind = _lib("kernels", "kernel_kind")
    return lambda head, _size: _has(magic, head) and kernel_kind(head) == kind


def _ima(kind: str) -> Callable[[bytes, int], bool]:
    def test(head: bytes, size: int) -> bool:
        from kimagekit import ima_log
        fmt = ima_log.detect(head, size)
        return fmt is not None and fmt.kind == kind
    return test


def _elf(module: str, name: str) -> Callable[[bytes, int], bool]:
    test = _lib(module, name)
    return lambda head, _size: _has(MAGIC_ELF, head) and bool(test(head))


def _tree(head: bytes, _size: int) -> bool:
    return ((head[:4] == MAGIC_DTB or head.lstrip()[:1] == b"/")
            and bool(_lib("dtb_file", "is_tree")(head)))


_summarize = _lib("ima_log", "summarize")

KINDS: tuple[Kind, ...] = (
    Kind("bzImage", _kernel("bzImage", MAGIC_BZIMAGE), _lib("kernel_info", "describe_bzimage")),
    Kind("arm64 zboot", _kernel("zboot", MAGIC_ZBOOT), _lib("kernel_info", "describe_zboot")),
    Kind("arm64 Image", _kernel("arm64-image", MAGIC_ARM64),
         _lib("kernel_info", "describe_arm64")),
    Kind("vmlinux", _elf("kernel_info", "is_vmlinux"), _lib("kernel_info", "describe_vmlinux")),
    Kind("kexec image", _elf("image_info", "is_image"), _lib("image_info", "describe")),
    Kind("kho-tree", lambda head, _size: (head[:4] == MAGIC_DTB
                                          and bool(_lib("kho", "looks_like_kho")(head))),
         _lib("kho", "describe")),
    Kind("device-tree", _tree, _lib("dtb_file", "describe")),
    Kind("ima-kexec-buffer", _ima("kexec-buffer"), _summarize),
    Kind("ima-binary-list", _ima("binary"), _summarize),
    Kind("ima-ascii-list", _ima("ascii"), _summarize),
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
