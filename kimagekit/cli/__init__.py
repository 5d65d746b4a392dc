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
from typer._click import exceptions as click_errors  # typer 0.28's own click (pinned)
from typer.core import TyperGroup

from kimagekit import output_files
from kimagekit.cli import conventions
from kimagekit.errors import KimageError, escape

# name -> (module under kimagekit.cli, first paragraph of the command's help), in the order
# --help lists them. tests/test_cli_lazy.py holds each line to the command's own help.
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("inspect", "Detect FILE's format from its content and describe it; exit 1 "
                "when the description\nreports damage."),
    "build": ("build", "Place kernel, initrd, hand-over, device tree (and purgatory) as "
              "kexec_file_load does;\nseal, write atomically, re-read and verify."),
    "verify": ("image", "Recompute the digest as the purgatory will at reboot, and read the "
               "hand-over as the\nnext kernel will: exit 0 if both hold."),
    "ls": ("image", "List the segments and the memory map: RAM, reservations, segments and "
           "free holes."),
    "extract": ("image", "Write one segment's content (bufsz bytes) to a file."),
    "patch-handover": ("handover", "Replace a kexec image's hand-over contents as "
                       "kexec_update_segment does, and verify\nthe result."),
    "load": ("load", "Load a kimagekit image into the running kernel through kexec_load(2), "
             "segments and\nentry as the image holds them; --exec reboots into it."),
    "unload": ("load", "Unload the image loaded for kexec (kexec_load with no segments); needs "
               "root unless\n--dry-run."),
    "extract-purgatory": ("kernel", "Write the purgatory object a kexec_file kernel embeds; "
                          "refuse when it has none."),
    "verify-signature": ("signature", "Verify the signature as kexec_file_load does "
                         "(KEXEC_SIG): exit 0 verified, 1 not."),
    "ima": ("ima", "IMA measurement lists and kexec buffers."),
    "dtb": ("dtb", "Flattened device trees: show, get, ls, set, rm, handover."),
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
    command = typer.main.get_command(holder).commands[name]  # type: ignore[attr-defined]
    conventions.apply(command)
    return command


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
            # one paragraph, wrapped by the listing, not at the table's line breaks
            return typer.core.TyperCommand(cmd_name, help=" ".join(COMMANDS[cmd_name][1].split()))
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
    add_completion=True,
    pretty_exceptions_enable=False,
    help="Build, inspect, verify and patch Linux kexec images and IMA measurement lists offline."
    "\n\nExample: kimagekit inspect vmlinuz",
)


def _print_version(value: bool) -> None:
    if value:
        from kimagekit import __version__
        typer.echo(f"kimagekit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show a traceback on errors."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print kimagekit's version and exit."),
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
        code = app(args=args, prog_name="kimagekit", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except click_errors.ClickException as err:
        conventions.show_usage_error(err)
        return err.exit_code
    except typer.Abort:
        sys.stderr.write("kimagekit: aborted\n")
        return 1
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
