"""The one reader: every file option and file argument refuses devices, writerless FIFOs,
missing files and directories in one line naming the option and the file; pipes and stdin are
read up to a bound. Subprocesses with a timeout, so a hang fails instead of stalling the suite."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from image_helpers import gen
from kernel_helpers import kgen

from kimagekit import input_files
from kimagekit.cli import main
from kimagekit.image import write_image

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "testdata" / "ima" / "small-le.bin"
PCRS = ROOT / "testdata" / "ima" / "small-le.pcrs.json"
DEVICE = "a character device: refused (regular files, pipes and - for stdin are read)"
OPTIONS = ("--pcrs", "--data", "--initrd", "--purgatory", "--handover", "file")


def cli(*argv: object, stdin: bytes | None = None, timeout: float = 60,
        **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kimagekit", *map(str, argv)], input=stdin,
                          capture_output=True, timeout=timeout, check=False,
                          env={**os.environ, **env})


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("inputs")
    (d / "bzImage").write_bytes(kgen.make_bzimage())
    (d / "purgatory.ro").write_bytes(gen.make_purgatory())
    (d / "vmlinux").write_bytes(gen.make_vmlinux())
    write_image(d / "x86.img", gen.x86_like_image())
    return d


def command(files: Path, what: str, given: object) -> list[object]:
    """A command whose first read of a side input is ``what`` (the other inputs are good)."""
    out = files / "never-written"
    return {
        "--pcrs": ["ima", "replay", SMALL, "--pcrs", given],
        "--data": ["patch-handover", files / "x86.img", "--data", given, "-o", out],
        "--initrd": ["build", "--arch", "x86_64", "--kernel", files / "bzImage", "--purgatory",
                     files / "purgatory.ro", "--initrd", given, "-o", out],
        "--purgatory": ["build", "--arch", "x86_64", "--kernel", files / "bzImage",
                        "--purgatory", given, "-o", out],
        "--handover": ["build", "--arch", "ppc64le", "--no-purgatory",
                       "--kernel", files / "vmlinux", "--dtb",
                       ROOT / "testdata" / "dtb" / "small.dtb", "--handover", given, "-o", out],
        "file": ["ima", "show", given],
    }[what]


@pytest.mark.parametrize("what", OPTIONS)
def test_dev_zero_is_refused_at_once(files: Path, what: str) -> None:
    p = cli(*command(files, what, "/dev/zero"))
    assert (p.returncode, p.stdout, p.stderr.decode()) == (
        2, b"", f"kimagekit: error: /dev/zero: {what}: {DEVICE}\n")
    assert not (files / "never-written").exists()


@pytest.mark.parametrize("what", OPTIONS)
def test_fifo_without_writer_is_refused_after_the_wait(files: Path, tmp_path: Path,
                                                       what: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    p = cli(*command(files, what, fifo), KIMAGEKIT_FIFO_WAIT="0.2")
    assert (p.returncode, p.stdout, p.stderr.decode()) == (
        2, b"", f"kimagekit: error: {fifo}: {what}: a FIFO with no writer (waited 0.2 s): "
                "refused\n")


@pytest.mark.parametrize("what", OPTIONS)
def test_missing_file_and_directory(files: Path, tmp_path: Path, what: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing"
    assert main([str(a) for a in command(files, what, missing)]) == 2
    assert capsys.readouterr() == (
        "", f"kimagekit: error: {missing}: {what}: cannot open: No such file or directory\n")
    assert main([str(a) for a in command(files, what, tmp_path)]) == 2
    assert capsys.readouterr() == ("", f"kimagekit: error: {tmp_path}: {what}: a directory, "
                                       "not a file\n")


def test_bounds_are_stated_per_option() -> None:
    assert input_files.BOUNDS == {"--pcrs": 1 << 20, "--purgatory": 16 << 20,
                                  "--data": 256 << 20, "--handover": 256 << 20,
                                  "--policy": 256 << 20, "--loader-config": 16 << 20}
    assert input_files.bound_for("--initrd") == input_files.bound_for("file") == 2**31 - 1
    assert input_files.FIFO_WAIT == 3.0


def test_pipe_past_its_bound_is_refused() -> None:
    p = cli("ima", "replay", SMALL, "--pcrs", "-", stdin=b" " * ((1 << 20) + 1))
    assert (p.returncode, p.stdout, p.stderr.decode()) == (
        2, b"", "kimagekit: error: -: --pcrs: more than 1048576 bytes from a pipe (the bound "
                "for --pcrs read from a pipe or stdin)\n")
    # exactly at the bound is read
    text = PCRS.read_bytes()
    p = cli("ima", "replay", SMALL, "--pcrs", "-", stdin=text + b" " * ((1 << 20) - len(text)))
    assert (p.returncode, p.stdout.splitlines()[-1], p.stderr) == (
        0, b"OK: chain matches the quote, 8 expected PCR values reproduced", b"")


def test_stdin_pipe_and_fifo_with_writer_are_read(tmp_path: Path) -> None:
    expected = b"OK: chain matches the quote, 8 expected PCR values reproduced\n"
    p = cli("ima", "replay", SMALL, "--pcrs", "-", stdin=PCRS.read_bytes())
    assert (p.returncode, p.stdout.endswith(expected), p.stderr) == (0, True, b"")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def writer() -> None:
        with fifo.open("wb") as f:  # blocks until kimagekit opens the read end
            f.write(PCRS.read_bytes())

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    p = cli("ima", "replay", SMALL, "--pcrs", fifo, KIMAGEKIT_FIFO_WAIT="20")
    t.join(5)
    assert (p.returncode, p.stdout.endswith(expected), p.stderr) == (0, True, b"")
    # the LIST itself from a pipe: read once, though detection looks at its head first
    p = cli("inspect", "-", stdin=SMALL.read_bytes())
    assert (p.returncode, p.stderr) == (0, b"")
    assert p.stdout.startswith(b"-: ima-binary-list")


def test_stdin_regular_file_is_mapped_and_terminal_refused() -> None:
    with SMALL.open("rb") as f:
        p = subprocess.run([sys.executable, "-m", "kimagekit", "ima", "check", "-"], stdin=f,
                           capture_output=True, timeout=60, check=False)
    assert (p.returncode, p.stdout, p.stderr) == (
        0, b"OK: 9 entries, 1 violations, 0 template digest mismatches (sha1)\n", b"")
    with open("/dev/null", "rb") as null:
        p = subprocess.run([sys.executable, "-m", "kimagekit", "ima", "check", "-"], stdin=null,
                           capture_output=True, timeout=60, check=False)
    assert (p.returncode, p.stderr.decode()) == (2, f"kimagekit: error: -: file: {DEVICE}\n")


@pytest.mark.parametrize(("what", "bound"), [("--pcrs", 1 << 20), ("--initrd", 2**31 - 1)])
def test_files_read_whole_are_held_to_the_bound(files: Path, tmp_path: Path, what: str,
                                                 bound: int,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Sparse, so nothing is read: the size alone is refused (for an initrd, as
    kexec_file_load refuses a file past INT_MAX)."""
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.truncate(bound + 1)
    assert main([str(a) for a in command(files, what, big)]) == 2
    assert capsys.readouterr() == ("", f"kimagekit: error: {big}: {what}: {bound + 1} bytes, "
                                       f"more than the bound for {what} ({bound} bytes)\n")


def test_stdin_read_once_is_held_to_each_options_bound() -> None:
    """stdin given for the list and for --pcrs is read once; the --pcrs reading of it is held
    to the --pcrs bound all the same (it was once handed back whole from the cache)."""
    big = SMALL.read_bytes() * 2000  # 1,976,000 bytes: a list, over --pcrs's 1 MiB
    p = cli("ima", "replay", "-", "--pcrs", "-", stdin=big)
    assert (p.returncode, p.stdout, p.stderr.decode()) == (
        2, b"", "kimagekit: error: -: --pcrs: more than 1048576 bytes from a pipe (the bound "
                "for --pcrs read from a pipe or stdin)\n")


def test_stdin_file_is_read_from_its_position(tmp_path: Path) -> None:
    """A regular file on stdin holds what lies after its read position, not the whole file."""
    src = tmp_path / "list.kexec"
    src.write_bytes(b"\0" * 100 + (ROOT / "testdata/ima/small-le.kexec").read_bytes())
    with src.open("rb") as f:
        f.seek(100)
        p = subprocess.run([sys.executable, "-m", "kimagekit", "inspect", "-"], stdin=f,
                           capture_output=True, timeout=60, check=False)
    assert (p.returncode, p.stderr) == (0, b"")
    assert p.stdout.decode().splitlines()[0] == "-: ima-kexec-buffer"
