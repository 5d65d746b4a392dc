"""``-`` is stdin for every input and stdout for every ``-o`` (and ``--svg``), command by
command: the same output as with the file named (a pipe, not a file, on stdin), or the refusal
where the output must be re-read (build, patch-handover IMAGE)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from image_helpers import gen
from kernel_helpers import kgen
from sig_helpers import make_pki

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "testdata" / "ima" / "small-le.bin"
DTB = ROOT / "testdata" / "dtb" / "small.dtb"


def run(argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """The console script with ``stdin`` through a pipe."""
    return subprocess.run([sys.executable, "-m", "kimagekit", *argv], input=stdin,
                          capture_output=True, check=False, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                               "COLUMNS": "200"})


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dash")
    f = {"vmlinux": d / "vmlinux", "ima": d / "ima.bin", "initrd": d / "initrd",
         "bzimage": d / "bzImage", "image": d / "ppc.img"}
    f["vmlinux"].write_bytes(gen.make_vmlinux())
    gen.restorable_list(f["ima"])
    f["initrd"].write_bytes(gen.filler(0x1166, 7))
    f["bzimage"].write_bytes(kgen.make_bzimage(kgen.make_vmlinux(purgatory=gen.make_purgatory())))
    done = run(["build", "--arch", "ppc64le", "--no-purgatory",
                "--kernel", str(f["vmlinux"]), "--dtb", str(DTB),
                "--ima", str(f["ima"]), "-o", str(f["image"])])
    assert done.returncode == 0, done.stderr
    pki = make_pki(d)
    f["cert"] = pki.ca
    return f


# (argv with FILE for the input, that input's key in `files` or a path); the input goes once
# by name and once as '-' on a pipe: stdout, stderr and exit code agree but for the name
READS = {
    "inspect": (["inspect", "FILE"], "image"),
    "ls": (["ls", "FILE"], "image"),
    "verify": (["verify", "FILE"], "image"),
    "extract": (["extract", "FILE", "kernel", "-o", "/dev/stdout"], "image"),
    "extract-purgatory": (["extract-purgatory", "FILE", "-o", "/dev/stdout"], "bzimage"),
    "verify-signature": (["verify-signature", "FILE", "--cert", "{cert}"], "bzimage"),
    "build --kernel": (["build", "--arch", "ppc64le", "--no-purgatory",
                        "--kernel", "FILE", "--dtb", str(DTB),
                        "-o", "{out}"], "vmlinux"),
    "build --dtb": (["build", "--arch", "ppc64le", "--no-purgatory",
                     "--kernel", "{vmlinux}", "--dtb", "FILE",
                     "-o", "{out}"], DTB),
    "build --ima": (["build", "--arch", "ppc64le", "--no-purgatory",
                     "--kernel", "{vmlinux}", "--dtb", str(DTB),
                     "--ima", "FILE", "-o", "{out}"], "ima"),
    "build --initrd": (["build", "--arch", "ppc64le", "--no-purgatory",
                        "--kernel", "{vmlinux}", "--dtb",
                        str(DTB), "--initrd", "FILE", "-o", "{out}"], "initrd"),
    "patch-handover IMAGE": (["patch-handover", "FILE", "--ima", "{ima}", "-o", "{out}"],
                             "image"),
    "patch-handover DTB": (["patch-handover", "FILE", "--start", "0x1000000", "--size",
                            "0x1000", "-o", "/dev/stdout"], DTB),
    "ima show": (["ima", "show", "FILE"], LIST),
    "ima check": (["ima", "check", "FILE"], LIST),
    "ima replay": (["ima", "replay", "FILE"], LIST),
    "ima convert": (["ima", "convert", "FILE", "--to", "ascii", "-o", "/dev/stdout"], LIST),
    "ima append": (["ima", "append", "FILE", str(LIST), "-o", "/dev/stdout"], LIST),
    "dtb show": (["dtb", "show", "FILE"], DTB),
    "dtb get": (["dtb", "get", "FILE", "/", "model"], DTB),
    "dtb set": (["dtb", "set", "FILE", "/chosen", "x", "1", "-o", "/dev/stdout"], DTB),
    "dtb ls": (["dtb", "ls", "FILE", "/", "-p"], DTB),
    "dtb rm": (["dtb", "rm", "FILE", "/", "model", "-o", "/dev/stdout"], DTB),
    "dtb handover": (["dtb", "handover", "FILE", "--start", "0x1000000", "--size", "0x1000",
                      "-o", "/dev/stdout"], DTB),
    # load reads stdin too: tests/test_load.py::test_dry_run_of_an_image_on_stdin (its dry run
    # needs an image for the running architecture)
}


def _argv(template: list[str], files: dict[str, Path], name: str, out: Path) -> list[str]:
    fill = {k: str(v) for k, v in files.items()} | {"out": str(out)}
    return [name if a == "FILE" else a.format(**fill) for a in template]


@pytest.mark.parametrize("case", list(READS))
def test_dash_reads_stdin(case: str, files: dict[str, Path], tmp_path: Path) -> None:
    template, source = READS[case]
    path = files[source] if isinstance(source, str) else source
    by_name = run(_argv(template, files, str(path), tmp_path / "a.img"))
    piped = run(_argv(template, files, "-", tmp_path / "b.img"), path.read_bytes())
    assert by_name.returncode in (0, 1), by_name.stderr
    assert by_name.stdout  # something to compare: a report, or the output itself
    assert piped.returncode == by_name.returncode, piped.stderr
    for got, want in ((piped.stdout, by_name.stdout), (piped.stderr, by_name.stderr)):
        assert got.replace(str(tmp_path / "b.img").encode(), b"OUT") == want.replace(
            str(path).encode(), b"-").replace(str(tmp_path / "a.img").encode(), b"OUT")
    if (tmp_path / "a.img").exists():
        assert (tmp_path / "b.img").read_bytes() == (tmp_path / "a.img").read_bytes()


# -o - (or --svg -): the bytes the named file gets, on stdout; the report moves to stderr
WRITES = {
    "extract": ["extract", "{image}", "kernel", "-o", "OUT"],
    "extract-purgatory": ["extract-purgatory", "{bzimage}", "-o", "OUT"],
    "ima convert": ["ima", "convert", str(LIST), "--to", "binary", "-o", "OUT"],
    "ima append": ["ima", "append", str(LIST), str(LIST), "-o", "OUT"],
    "dtb set": ["dtb", "set", str(DTB), "/chosen", "x", "1", "-o", "OUT"],
    "patch-handover DTB": ["patch-handover", str(DTB), "--start", "0x1000000", "--size",
                           "0x1000", "-o", "OUT"],
    "ls --svg": ["ls", "{image}", "--svg", "OUT"],
    "inspect --svg": ["inspect", "{image}", "--svg", "OUT"],
}


@pytest.mark.parametrize("case", list(WRITES))
def test_dash_writes_stdout(case: str, files: dict[str, Path], tmp_path: Path) -> None:
    fill = {k: str(v) for k, v in files.items()}
    named = tmp_path / "named"
    argv = [a.format(**fill) for a in WRITES[case]]
    by_name = run([str(named) if a == "OUT" else a for a in argv])
    to_stdout = run(["-" if a == "OUT" else a for a in argv])
    assert (by_name.returncode, to_stdout.returncode) == (0, 0), to_stdout.stderr
    assert to_stdout.stdout == named.read_bytes()
    # the report the named run printed on stdout is on stderr now
    report = by_name.stdout.replace(str(named).encode(), b"-")
    assert report in to_stdout.stderr


@pytest.mark.parametrize("argv", [
    ["build", "--arch", "ppc64le", "--no-purgatory",
     "--kernel", "{vmlinux}", "--dtb", str(DTB), "-o", "-"],
    ["patch-handover", "{image}", "--ima", "{ima}", "-o", "-"],
])
def test_outputs_that_are_reread_refuse_stdout(argv: list[str], files: dict[str, Path]) -> None:
    fill = {k: str(v) for k, v in files.items()}
    done = run([a.format(**fill) for a in argv])
    assert (done.returncode, done.stdout) == (2, b"")
    assert done.stderr == (b"kimagekit: error: -: -o: stdout is refused here: the output is "
                           b"re-read and verified after it is written, so it must be a file\n")
