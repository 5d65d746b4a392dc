"""What every CLI module shares: JSON rendering, output of results, naming the input on errors."""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from pathlib import Path
from typing import Any

from kimagekit.errors import escape, input_named
from kimagekit.output_files import state

__all__ = ["emit_json", "emit_line", "input_named", "jsonable", "out", "warn"]


def jsonable(obj: Any) -> Any:
    """Dataclasses to dicts, bytes to lowercase hex, enums to their values, tuples to lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.name.startswith("_")}
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _report() -> Any:
    """Where a command's report goes: stdout, unless its output (``-o -``) went there."""
    return sys.stderr if state.wrote_stdout else sys.stdout


def emit_json(obj: Any) -> None:
    _report().write(json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n")


def emit_line(obj: Any) -> None:
    """One JSON object on one line (JSON Lines), flushed so a reader sees each as it comes."""
    report = _report()
    report.write(json.dumps(jsonable(obj)) + "\n")
    report.flush()


def out(text: str = "") -> None:
    _report().write(text + "\n")


def warn(text: str) -> None:
    """One diagnostic line on stderr: control characters (from file names, from the input)
    escaped, as in error lines."""
    sys.stderr.write(f"kimagekit: {escape(text)}\n")


class DtStyle(enum.StrEnum):
    """How a device tree announces the hand-over (``--style``, ``--handover-style``)."""

    IMA = "ima"
    SEED = "seed"
