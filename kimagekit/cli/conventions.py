"""What every command's help and usage errors look like, applied to each command as it loads.

- Arguments read ``FILE`` in usage (typer writes ``{file}``), ``[FILE]`` when optional,
  ``FILE...`` when repeated; the help table shows the name, not a Python type (``<path>``).
- An option without a metavar gets one for what it takes (``FILE``, ``N``, ``TEXT``), never
  ``<str>``/``<path>``/``<int>``; flags show none; choices are listed as they are.
- A usage error is one line, ``kimagekit: error: ...``, like every other error, unless stderr is
  a terminal (then typer's box, with the usage line)."""

from __future__ import annotations

import inspect
import sys
from typing import Any

from typer._click import core, exceptions, types  # typer 0.28's own click (pinned: 0.28.x)
from typer.core import TyperArgument, TyperOption

from kimagekit.errors import escape

# click type name -> the metavar an option of that type shows
METAVARS = {"path": "FILE", "int": "N", "str": "TEXT", "float": "NUMBER",
            "integer range": "N"}


class _Named(types.ParamType):
    """An argument's type as the help shows it: by the argument's name alone. Conversion and
    shell completion are the wrapped type's."""

    def __init__(self, inner: types.ParamType) -> None:
        self.inner = inner
        self.name = inner.name

    def convert(self, value: Any, param: core.Parameter | None,
                ctx: core.Context | None) -> Any:
        return self.inner.convert(value, param, ctx)

    def get_metavar(self, param: core.Parameter, ctx: core.Context) -> str | None:
        return ""

    def shell_complete(self, ctx: core.Context, param: core.Parameter,
                       incomplete: str) -> list[Any]:
        return self.inner.shell_complete(ctx, param, incomplete)


class _Argument(TyperArgument):
    def make_metavar(self, ctx: core.Context, *, usage: bool = False) -> str:
        var = self.metavar or (self.name or "").upper()
        if self.nargs != 1:
            var += "..."
        return var if self.required or not usage else f"[{var}]"


def _is_choice(t: types.ParamType) -> bool:
    return t.name == "choice"


def apply(command: core.Command) -> None:
    """Give ``command`` (and, for a group, each of its commands) the conventions above."""
    for sub in getattr(command, "commands", {}).values():
        apply(sub)
    if command.help:
        # typer's rich help keeps the docstring's line breaks after the first paragraph:
        # each paragraph becomes one line, wrapped to the terminal (an example stays whole)
        command.help = "\n\n".join(" ".join(p.split())
                                    for p in inspect.cleandoc(command.help).split("\n\n"))
    for param in command.params:
        if isinstance(param, TyperArgument):
            param.__class__ = _Argument
            param.metavar = (param.metavar or param.name or "").upper()
            if not _is_choice(param.type):
                param.type = _Named(param.type)
        elif isinstance(param, TyperOption) and not param.is_flag and param.metavar is None \
                and not _is_choice(param.type):
            param.metavar = METAVARS.get(param.type.name, param.type.name.upper())


def show_usage_error(err: exceptions.ClickException) -> None:
    """One line on stderr (typer's box on a terminal). A group called without a command has
    had its help printed already."""
    if type(err).__name__ == "NoArgsIsHelpError":
        return
    if sys.stderr.isatty():
        try:
            from typer import rich_utils
        except ImportError:  # typer without rich: click's own text
            err.show()
        else:
            rich_utils.rich_format_error(err)
        return
    ctx = getattr(err, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    # click lays some messages out on lines ("Choose from:\n\tA,\n\tB"): one line here
    message = " ".join(err.format_message().split())
    sys.stderr.write(f"kimagekit: error: {escape(message)}{hint}\n")
