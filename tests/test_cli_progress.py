"""Progress on stderr: drawn on a terminal (a pty here), never on a pipe, and rich is imported
only when it is drawn."""

from __future__ import annotations

import errno
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from ima_helpers import make_ima

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def big_list(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150000 entries (14 MiB): long enough (about half a second) that the bar, asked for at
    once, is drawn before the work ends."""
    path = tmp_path_factory.mktemp("progress") / "big.bin"
    entry = make_ima.entry(10, "ima-ng", [make_ima.d_ng("sha256", b"\1" * 32),
                                          make_ima.n_ng("/usr/lib/f")])
    path.write_bytes(entry * 150000)
    return path


def _env(delay: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "KIMAGEKIT_PROGRESS_DELAY": delay,
            "COLUMNS": "100", "TERM": "xterm"}


def _run_on_pty(*argv: object, delay: str = "0") -> tuple[int, bytes, bytes]:
    """The CLI with stderr on a pty and stdout on a pipe: (exit code, stdout, the pty's
    bytes)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "kimagekit", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=slave, env=_env(delay))
    os.close(slave)
    # stdout drained beside the pty, or a full pipe would stop the writer
    out = bytearray()
    reader = threading.Thread(target=lambda: out.extend(proc.stdout.read()  # type: ignore[union-attr]
                                                        ), daemon=True)
    reader.start()
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError as err:  # EIO: every writer of the pty is gone
            if err.errno != errno.EIO:
                raise
            break
        if not chunk:
            break
        seen += chunk
    code = proc.wait(timeout=120)
    reader.join(timeout=30)
    os.close(master)
    return code, bytes(out), seen


@pytest.mark.parametrize("argv", [("ima", "check"), ("ima", "replay", "--bank", "sha1"),
                                  ("ima", "show", "--ascii", "--path-prefix", "/none")])
def test_progress_on_a_terminal(big_list: Path, argv: tuple[str, ...]) -> None:
    code, out, tty = _run_on_pty(*argv, big_list)
    assert code == 0
    assert f"reading {big_list}".encode() in tty
    assert b"%" in tty
    # stdout is untouched: the same bytes as without a terminal
    piped = subprocess.run([sys.executable, "-m", "kimagekit", *argv, str(big_list)],
                           capture_output=True, env=_env("0"), check=True)
    assert out == piped.stdout
    assert piped.stderr == b""


def test_no_progress_before_the_delay(big_list: Path) -> None:
    code, _, tty = _run_on_pty("ima", "check", big_list, delay="60")
    assert (code, tty) == (0, b"")


def test_rich_is_not_imported_without_a_terminal(big_list: Path) -> None:
    probe = ("import sys; from kimagekit.cli import main; "
             f"code = main(['ima', 'check', {str(big_list)!r}]); "
             "sys.stdout.write(repr((code, 'rich.progress' in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=_env("0"), check=True)
    assert done.stdout.endswith("(0, False)")
    assert done.stderr == ""


def test_a_spinner_while_a_kernel_is_decompressed(amd64_vmlinuz: Path) -> None:
    """inspect decompresses the bzImage's payload in one call: the spinner is drawn by its own
    thread meanwhile."""
    code, out, tty = _run_on_pty("inspect", "--json", amd64_vmlinuz)
    assert code == 0
    assert f"inspecting {amd64_vmlinuz}".encode() in tty
    assert b'"format": "bzImage"' in out
