"""Dataclass reprs that show bytes as hex: a digest reads as ``sha256:ab12...`` in a log or a
debugger, not as a ``b'\\x..'`` escape soup."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["hex_repr"]


def hex_repr(obj: Any) -> str:
    """``Name(field=value, ...)`` as dataclasses write it, but every ``bytes`` value as
    ``hex('...')``."""
    parts = []
    for f in dataclasses.fields(obj):
        if not f.repr:
            continue
        value = getattr(obj, f.name)
        if isinstance(value, bytes | bytearray | memoryview):
            shown = f"hex({bytes(value).hex()!r})"
        else:
            shown = repr(value)
        parts.append(f"{f.name}={shown}")
    return f"{type(obj).__name__}({', '.join(parts)})"
