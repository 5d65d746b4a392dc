"""The one exception hierarchy of kimagekit, and the one place foreign errors are converted.

Every error knows the format it was reading (``fmt``), the field path inside it (``field``, e.g.
``entry[3].template_name_len``) and the byte offset in the input where the problem is. ``str()``
gives the single line the CLI prints.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "KimageError", "OutputError", "ParseError", "Refused", "RuleError", "UnrecognisedFormat",
    "UsageError", "about_file", "converted", "escape", "input_named",
]

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _escaped(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 in a file name (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` safe for one line of a terminal: control characters, line separators and
    undecodable file-name bytes shown as ``\\xNN`` / ``\\uNNNN``."""
    return _UNSAFE.sub(lambda m: _escaped(m.group()), text)


class KimageError(Exception):
    """Base of every error kimagekit raises on purpose."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        fmt: str | None = None,
        field: str | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fmt = fmt
        self.field = field
        self.offset = offset
        self.file: str | None = None

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.fmt, self.field) if p)
        if self.offset is not None:
            where = f"{where} at offset {self.offset:#x}" if where else f"offset {self.offset:#x}"
        return escape(f"{where}: {self.message}" if where else self.message)


def about_file(err: KimageError, file: object) -> KimageError:
    """Name the input file on ``err`` unless an inner layer already did."""
    if err.file is None:
        err.file = str(file)
    return err


@contextmanager
def input_named(path: object) -> Iterator[None]:
    """Errors raised inside name ``path`` as their file."""
    try:
        yield
    except KimageError as err:
        raise about_file(err, path) from err.__cause__


class ParseError(KimageError):
    """The bytes do not follow the format: truncated, out of bounds, bad magic, bad value."""


class UnrecognisedFormat(KimageError):
    """No known format matches the content."""


class RuleError(KimageError):
    """Well-formed input that a kernel rule rejects (restore limits, placement, hand-over)."""


class Refused(RuleError):
    """An output the next kernel would refuse (a hand-over its restore rules reject, a template
    digest that does not match): a failed check, exit 1. ``--force`` writes it anyway."""

    exit_code = 1


class UsageError(KimageError):
    """An argument value that cannot be used (bad hex, unknown bank, malformed expectation)."""


class NotFound(UsageError):
    """A node or property the arguments name is not in the tree: exit 1, as fdtget and fdtput
    exit when they do not find it."""

    exit_code = 1


class OutputError(KimageError):
    """Writing or re-reading an output failed."""


def _foreign_errors() -> tuple[type[BaseException], ...]:
    kinds: list[type[BaseException]] = [struct.error, UnicodeDecodeError, EOFError]
    try:
        from construct import ConstructError

        kinds.append(ConstructError)
    except ImportError:  # pragma: no cover - construct is a hard dependency
        pass
    try:
        from elftools.common.exceptions import ELFError

        kinds.append(ELFError)
    except ImportError:  # pragma: no cover - pyelftools is a hard dependency
        pass
    return tuple(kinds)


@contextmanager
def converted(fmt: str, field: str | None = None, offset: int | None = None) -> Iterator[None]:
    """The choke point: run a block that calls construct/struct/pyelftools/fdt and turn whatever
    they raise into a :class:`ParseError` carrying ``fmt``, ``field`` and ``offset``.

    construct reports its own field path (``(parsing) -> a -> b``); it is appended to ``field``.
    """
    try:
        yield
    except KimageError:
        raise
    except _foreign_errors() as exc:
        raise ParseError(_describe(exc), fmt=fmt, field=_join(field, _construct_path(exc)),
                         offset=offset) from exc
    except (ValueError, IndexError, KeyError, AssertionError) as exc:
        # fdt raises bare ValueError/Exception subclasses; keep their text, never their traceback.
        raise ParseError(_describe(exc), fmt=fmt, field=field, offset=offset) from exc


def _construct_path(exc: BaseException) -> str | None:
    path = getattr(exc, "path", None)
    if not isinstance(path, str):
        return None
    parts = [p.strip() for p in path.split("->")]
    parts = [p for p in parts if p and not p.startswith("(")]
    return ".".join(parts) or None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if "\n" in text:
        text = text.splitlines()[-1].strip()
    # construct prefixes messages with its path; that is carried in ``field`` already.
    if text.startswith("Error in path"):
        text = text.split("\n")[-1]
    return text or type(exc).__name__


def _join(a: str | None, b: str | None) -> str | None:
    if a and b:
        return f"{a}.{b}"
    return a or b
