"""The ``kimagekit`` command: a thin typer layer over the library. Only this package prints.

Commands are registered lazily: a command's module (and the library it pulls in) is imported
only when that command runs, so start-up costs what the command needs. ``--help`` lists every
command from :data:`COMMANDS` without importing any of them."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

import typer
from typer.core import TyperGroup

from kimagekit import output_files
from kimagekit.errors import KimageError, escape

# name -> (module under kimagekit.cli, first paragraph of the command's help), in the order
# --help lists them. tests/test_cli_lazy.py holds each line to the command's own help.
COMMANDS: dict[str, tuple[str, str]] = {
    "patch-handover": ("dtb", "Announce a hand-over buffer in a DTB (or remove it); or, for a "
                       "kexec image, replace\nits hand-over contents as kexec_update_segment "
                       "does."),
    "verify": ("image", "Recompute the digest as the purgatory will at reboot, and read the "
               "hand-over as the\nnext kernel will: exit 0 if both hold."),
    "ls": ("image", "List the segments: index, role, mem, memsz, bufsz, checksummed, file "
           "offset."),
    "extract": ("image", "Write one segment's content (bufsz bytes) to a file."),
    "build": ("build", "Place kernel, initrd, hand-over, device tree (and purgatory) as "
              "kexec_file_load does;\nseal, write atomically, re-read and verify."),
    "extract-purgatory": ("kernel", "Write the purgatory object a kexec_file kernel embeds; "
                          "refuse when it has none."),
    "verify-signature": ("signature", "Verify the signature as kexec_file_load does "
                         "(KEXEC_SIG): exit 0 verified, 1 not."),
    "inspect": ("inspect", "Detect FILE's format from its content and describe it; exit 1 "
                "when the description\nreports damage."),
    "load": ("load", "Load a kimagekit image into the running kernel through kexec_load(2), "
             "segments and\nentry as the image holds them; --exec reboots into it."),
    "unload": ("load", "Unload the image loaded for kexec (kexec_load with no segments); needs "
               "root unless\n--dry-run."),
    "ima": ("ima", "IMA measurement lists and kexec buffers."),
    "dtb": ("dtb", "Flattened device trees: show, get, set."),
}
GROUPS = ("ima", "dtb")


@cache
def load_command(name: str) -> Any:
    """The click command ``name`` as the eager CLI built it: its module registered on a
    root of its own, so typer builds the command exactly as before."""
    module: Any = importlib.import_module(f"kimagekit.cli.{COMMANDS[name][0]}")
    holder = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    holder.callback()(_no_options)
    if name in GROUPS:
        holder.add_typer(module.app, name=name)
    else:
        module.register(holder)
    return typer.main.get_command(holder).commands[name]  # type: ignore[attr-defined]


def _no_options() -> None:
    """A callback, so that typer builds a group even for a module with one command."""


class _Commands(Mapping[str, Any]):
    """The root's commands by name (what typer suggests from on a typo), each loaded when
    looked up."""

    def __getitem__(self, name: str) -> Any:
        if name not in COMMANDS:
            raise KeyError(name)
        return load_command(name)

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


class _LazyGroup(TyperGroup):
    """The root group: commands from :data:`COMMANDS`, each imported on first use; while
    help is formatted, stand-ins carrying only the listed help line."""

    _listing = False

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Commands()  # type: ignore[assignment]

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if self._listing:
            return typer.core.TyperCommand(cmd_name, help=COMMANDS[cmd_name][1])
        return load_command(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    cls=_LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Build, inspect, verify and patch Linux kexec images and IMA measurement lists offline.",
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show a traceback on errors."),
) -> None:
    """kimagekit: exit 0 = ok, 1 = a check failed, 2 = bad input or usage."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code. typer/click handle usage errors themselves (usage
    line, exit 2); a KimageError from the library becomes one line on stderr.

    As a program (``argv`` None) a closed stdout ends it by SIGPIPE, as it ends any filter
    (the shell's 141), before click can turn the broken pipe into an exit 1."""
    if argv is None and hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = list(sys.argv[1:] if argv is None else argv)
    output_files.state.wrote_stdout = False
    debug = "--debug" in args
    try:
        app(args=args, prog_name="kimagekit")
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except KimageError as err:
        if debug:
            traceback.print_exc()
        prefix = f"{escape(err.file)}: " if err.file else ""
        sys.stderr.write(f"kimagekit: error: {prefix}{err}\n")
        return err.exit_code
    except BrokenPipeError:
        # stdout is gone: nothing more to say, and nothing left to flush at exit
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
        return 128 + int(getattr(signal, "SIGPIPE", 13))
    return 0
