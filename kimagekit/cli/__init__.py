"""The ``kimagekit`` command: a thin typer layer over the library. Only this package prints."""

from __future__ import annotations

import sys
import traceback

import typer

from kimagekit.cli import build as build_cli
from kimagekit.cli import dtb as dtb_cli
from kimagekit.cli import ima as ima_cli
from kimagekit.cli import image as image_cli
from kimagekit.cli import inspect as inspect_cli
from kimagekit.cli import kernel as kernel_cli
from kimagekit.cli import signature as signature_cli
from kimagekit.errors import KimageError

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
    line, exit 2); a KimageError from the library becomes one line on stderr."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        app(args=args, prog_name="kimagekit")
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except KimageError as err:
        if debug:
            traceback.print_exc()
        prefix = f"{err.file}: " if err.file else ""
        sys.stderr.write(f"kimagekit: error: {prefix}{err}\n")
        return err.exit_code
    except BrokenPipeError:
        return 0
    return 0
