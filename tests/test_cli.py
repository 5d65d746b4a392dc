"""The CLI entry point: usage errors, help, and the exit-code contract."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from kimagekit import ima_log
from kimagekit.cli import main
from kimagekit.errors import ParseError

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "testdata" / "ima" / "small-le.bin"


@pytest.mark.parametrize(("argv", "line"), [
    (["nosuchcmd"], "No such command 'nosuchcmd'. (see 'kimagekit --help')"),
    (["ima", "replay"], "Missing argument 'FILE'. (see 'kimagekit ima replay --help')"),
    (["ima", "check", "--bogus", "x"],
     "No such option: --bogus (Possible options: --jobs) (see 'kimagekit ima check --help')"),
    (["build", "--arch", "x86_64"],
     "Missing option '--kernel'. (see 'kimagekit build --help')"),
    (["ls"], "Missing argument 'IMAGE'. (see 'kimagekit ls --help')"),
    # click's multi-line "Choose from:" list, on one line
    (["build"], "Missing option '--arch'. Choose from: ppc64le, ppc64, x86_64, arm64, riscv64 (see "
     "'kimagekit build --help')"),
    (["ls", "a", "b"], "Got unexpected extra argument(s) (b) (see 'kimagekit ls --help')"),
    (["inspect", "--json=\x1b"],
     "Option '--json' does not take a value."),  # click gives no command here
])
def test_usage_errors_are_one_plain_line(capsys: pytest.CaptureFixture[str],
                                         argv: list[str], line: str) -> None:
    """Off a terminal a usage error reads like every other error: one line, exit 2."""
    assert main(argv) == 2
    assert capsys.readouterr() == ("", f"kimagekit: error: {line}\n")


def test_usage_errors_on_a_terminal_keep_the_usage_box() -> None:
    import pty
    leader, follower = pty.openpty()
    code = "import sys; from kimagekit.cli import main; sys.exit(main(['ls']))"
    p = subprocess.run([sys.executable, "-c", code], stderr=follower, stdout=subprocess.PIPE,
                       env={**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT)},
                       check=False)
    os.close(follower)
    err = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        err += chunk
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;]*m", "", err.decode())
    assert p.returncode == 2
    assert "Usage: kimagekit ls [OPTIONS] IMAGE" in text
    assert "Missing argument 'IMAGE'." in text and "\u256d" in text  # the box


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from kimagekit import __version__
    assert main(["--version"]) == 0
    assert capsys.readouterr() == (f"kimagekit {__version__}\n", "")
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" in project["dynamic"]
    assert (project.get("version"), __version__) == (None, "0.1.0")


def test_shell_completion_is_offered(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--install-completion" in help_text and "--show-completion" in help_text
    env = {**os.environ, "_KIMAGEKIT_COMPLETE": "complete_bash", "COMP_WORDS": "kimagekit ins",
           "COMP_CWORD": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "kimagekit"], env=env, capture_output=True,
                       text=True, check=False)
    assert (p.returncode, p.stdout.split()) == (0, ["inspect"])


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
    assert (bad.returncode, bad.stdout, bad.stderr) == (
        2, "", "kimagekit: error: No such command 'nosuchcmd'. (see 'kimagekit --help')\n")
    bare = subprocess.run(run, capture_output=True, text=True, check=False)
    assert (bare.returncode, bare.stderr) == (2, "")
    assert "Usage: kimagekit [OPTIONS] COMMAND [ARGS]..." in bare.stdout
    ok = subprocess.run([*run, "--help"], capture_output=True, text=True, check=False)
    assert (ok.returncode, ok.stderr) == (0, "")
    assert "Usage: kimagekit [OPTIONS] COMMAND [ARGS]..." in ok.stdout


def test_error_lines_escape_control_characters(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """File names, arguments and text quoted from the input never break the one-line error."""
    name = tmp_path / "a\nb\x1b[31m\x7f\u2028" / os.fsdecode(b"\xff")
    assert main(["inspect", str(name)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {tmp_path}/a\\x0ab\\x1b[31m\\x7f\\u2028/\\xff: file: cannot open: "
        "No such file or directory\n")
    dtb = ROOT / "testdata" / "dtb" / "small.dtb"
    assert main(["dtb", "get", str(dtb), "/chosen", "pr\rop\tx"]) == 1
    assert capsys.readouterr().err == (f"kimagekit: error: {dtb}: dtb: no property "
                                       "pr\\x0dop\\x09x in /chosen\n")
    err = ParseError("name 'a\nb'\x00", fmt="ima\x85", field="entry[0].\x1bname", offset=16)
    assert str(err) == "ima\\x85: entry[0].\\x1bname at offset 0x10: name 'a\\x0ab'\\x00"


def test_closed_stdout_exits_by_sigpipe_quietly(tmp_path: Path) -> None:
    """``kimagekit ima show BIG | head -1``: the shell sees 141 (128 + SIGPIPE), no message."""
    entries = ima_log.read_entries(SMALL)
    big = tmp_path / "big.bin"
    big.write_bytes(ima_log.encode_list(entries * 2000, "<", 20))
    script = (f"{shlex.quote(sys.executable)} -m kimagekit ima show {shlex.quote(str(big))} "
              f"2>{shlex.quote(str(tmp_path / 'err'))} | head -1; "
              'echo "${PIPESTATUS[0]}"')
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                       check=False)
    lines = p.stdout.splitlines()
    assert (len(lines), lines[-1], p.stderr) == (2, "141", "")
    assert lines[0].startswith(f"{big}: binary list, little-endian")
    assert (tmp_path / "err").read_text() == ""


def test_warnings_escape_control_characters(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A file name with a newline stays on one diagnostic line, as in error lines."""
    out = tmp_path / "o\nut"
    lst = ROOT / "testdata" / "ima" / "small-le.bin"
    assert main(["ima", "convert", str(lst), "--to", "ascii", "-o", str(out)]) == 0
    assert capsys.readouterr().err == (f"kimagekit: wrote {tmp_path}/o\\x0aut: 9 entries, "
                                       "1336 bytes (ascii)\n")
