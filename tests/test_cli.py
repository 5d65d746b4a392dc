"""The CLI entry point: usage errors, help, and the exit-code contract."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kimagekit.cli import main


@pytest.mark.parametrize(("argv", "needle"), [
    (["nosuchcmd"], "No such command 'nosuchcmd'."),
    (["ima", "replay"], "Missing argument 'file'."),
    (["ima", "check", "--bogus", "x"], "No such option: --bogus"),
])
def test_usage_errors_exit_2_without_traceback(capsys: pytest.CaptureFixture[str],
                                               argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("inspect", "ima", "dtb", "patch-handover"):
        assert verb in out


def test_debug_shows_the_traceback_on_bad_input(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "x"
    bad.write_bytes(b"\0" * 10)
    assert main(["--debug", "inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.splitlines()[-1].startswith(f"kimagekit: error: {bad}: inspect: unrecognised "
                                           "format (known: ")


def test_console_script_exit_codes() -> None:
    run = [sys.executable, "-m", "kimagekit"]
    bad = subprocess.run([*run, "nosuchcmd"], capture_output=True, text=True, check=False)
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr.startswith("Usage: kimagekit [OPTIONS] COMMAND [ARGS]...\n"
                                 "Try 'kimagekit --help' for help.\n")
    assert "No such command 'nosuchcmd'." in bad.stderr and "Traceback" not in bad.stderr
    ok = subprocess.run([*run, "--help"], capture_output=True, text=True, check=False)
    assert (ok.returncode, ok.stderr) == (0, "")
    assert "Usage: kimagekit [OPTIONS] COMMAND [ARGS]..." in ok.stdout
