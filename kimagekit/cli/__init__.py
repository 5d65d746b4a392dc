"""The ``kimagekit`` command: a thin typer layer over the library. Only this package prints."""

from __future__ import annotations

import os
import signal
import sys
import traceback

import typer

from kimagekit import output_files
from kimagekit.cli import build as build_cli
from kimagekit.cli import dtb as dtb_cli
from kimagekit.cli import ima as ima_cli
from kimagekit.cli import image as image_cli
from kimagekit.cli import inspect as inspect_cli
from kimagekit.cli import kernel as kernel_cli
from kimagekit.cli import signature as signature_cli
from kimagekit.errors import KimageError, escape

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Build, inspect, verify and patch Linux kexec images and IMA measurement lists offline.",
)
app.add_typer(ima_cli.app, name="ima")
app.add_typer(dtb_cli.app, name="dtb")
dtb_cli.register(app)
image_cli.register(app)
build_cli.register(app)
kernel_cli.register(app)
signature_cli.register(app)
inspect_cli.register(app)


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
