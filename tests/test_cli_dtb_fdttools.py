"""``dtb get``/``ls``/``set``/``rm`` against fdtget and fdtput themselves, on the same trees:
the same bytes out (each type letter), the same trees written, "not found" exit 1 alike."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TESTDATA, need_tool

from kimagekit import fdt_values
from kimagekit.cli import main
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import UsageError

SMALL = TESTDATA / "dtb" / "small.dtb"
PSERIES = "dtb/qemu-7.2-ppc64-pseries.dtb"
# each size on each number letter, and the string letter (the other spellings of the same
# types are held to fdtget's parser in test_type_strings_are_fdtgets)
GET_TYPES = [None, "s", "i", "u", "x", "bx", "bi", "bu", "hx", "hi", "hu", "lx"]

Run = Callable[..., tuple[int, bytes, bytes]]


@pytest.fixture
def run(capsysbinary: pytest.CaptureFixture[bytes]) -> Run:
    def go(*args: object) -> tuple[int, bytes, bytes]:
        rc = main([str(a) for a in args])
        cap = capsysbinary.readouterr()
        return rc, cap.out, cap.err
    return go


def _trees(corpus: Path) -> list[Path]:
    return [*sorted((corpus / "dtb").glob("*.dtb")), SMALL]


def _pairs(path: Path) -> list[tuple[str, str]]:
    tree = DeviceTree.parse(path.read_bytes())
    return [(p, pr.name) for p, node in tree.walk() for pr in node.props()]


def _fdtget(*args: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([need_tool("fdtget"), *map(str, args)], capture_output=True,
                          check=False)


def test_get_prints_what_fdtget_prints_for_every_type(corpus: Path, run: Run) -> None:
    """Every property of every corpus tree, with every type letter: the values kimagekit shows
    are fdtget's bytes (one fdtget run per tree and type); the ones it refuses, fdtget refuses."""
    shown = refused = 0
    for path in _trees(corpus):
        pairs = _pairs(path)
        for kind in GET_TYPES:
            opt = [] if kind is None else ["-t", kind]
            ok_args: list[str] = []
            ours = b""
            refused_here = 0
            for node, prop in pairs:
                rc, out, err = run("dtb", "get", *opt, path, node, prop)
                if rc == 0:
                    ok_args += [node, prop]
                    ours += out
                    shown += 1
                    continue
                assert rc == 2 and out == b"", (path, kind, node, prop, err)
                refused += 1
                if refused_here == 3:  # fdtget runs one refusal at a time: a sample of each
                    continue
                refused_here += 1
                ref = _fdtget(*opt, path, node, prop)
                assert ref.returncode == 1, (path, kind, node, prop, ref.stdout)
                assert ref.stderr in (b"Unterminated string\n", b"Property length must be a "
                                      b"multiple of selected data size\n")
            ref = _fdtget(*opt, path, *ok_args)
            assert (ref.returncode, ref.stdout) == (0, ours), (path, kind)
    assert (shown, refused) == (13167, 969)


def test_get_refusals_and_not_found(tmp_path: Path, run: Run) -> None:
    assert run("dtb", "get", "-t", "lx", SMALL, "/chosen", "bootargs") == (
        2, b"", f"kimagekit: error: {SMALL}: property length 13 is not a multiple of the "
        "selected data size (4)\n".encode())
    assert _fdtget("-t", "lx", SMALL, "/chosen", "bootargs").stderr == \
        b"Property length must be a multiple of selected data size\n"
    odd = tmp_path / "odd.dtb"
    assert run("dtb", "set", "-t", "bx", SMALL, "/chosen", "b", "1", "-o", odd)[0] == 0
    assert run("dtb", "get", "-t", "s", odd, "/chosen", "b") == (
        2, b"", f"kimagekit: error: {odd}: unterminated string (the value does not end with "
        "NUL)\n".encode())
    assert _fdtget("-t", "s", odd, "/chosen", "b").stderr == b"Unterminated string\n"
    # not found: exit 1, as fdtget, naming what is missing
    for node, prop, what in (("/chosen", "nope", "no property nope in /chosen"),
                             ("/nope", "reg", "no node /nope")):
        assert run("dtb", "get", SMALL, node, prop) == (
            1, b"", f"kimagekit: error: {SMALL}: dtb: {what}\n".encode())
        ref = _fdtget(SMALL, node, prop)
        assert (ref.returncode, ref.stdout) == (1, b"")
    # the older spellings and the DTS form stay
    assert run("dtb", "get", SMALL, "/memory@0", "reg", "--type", "u64") == (
        0, b"0x0\n0x40000000\n", b"")
    assert run("dtb", "get", SMALL, "/memory@0", "reg", "--dts") == (
        0, b"<0x00 0x00 0x00 0x40000000>\n", b"")
    assert run("dtb", "get", SMALL, "/chosen", "bootargs") == (0, b"console=hvc0\n", b"")
    assert run("dtb", "get", SMALL, "/chosen", "bootargs", "-t", "r") == (
        0, b"console=hvc0\0", b"")  # dtc 1.7's raw type: the value itself
    assert run("dtb", "get", SMALL, "/", "model", "-t", "q")[::2] == (
        2, b"kimagekit: error: --type 'q': not a type (s, i, u, x or r, optionally after b, "
        b"hh, h or l, as fdtget's -t; or one of u32, u64, string, strings, bytes)\n")


def test_type_strings_are_fdtgets() -> None:
    """Every prefix/letter combination fdtget's parser could meet: accepted exactly when
    fdtget accepts it (``r``, dtc 1.7's raw type, is newer than the installed 1.6.1)."""
    prefixes = ["", "h", "hh", "b", "bb", "l", "ll", "L", "LL", "hb", "bh", "lh", "hhh", "x"]
    letters = ["i", "u", "x", "s", "d", "c", ""]
    for p in prefixes:
        for letter in letters:
            text = p + letter
            if not text:
                continue
            ref = _fdtget("-t", text, SMALL, "/", "model")
            fdtget_takes = b"invalid type string" not in ref.stderr
            try:
                fdt_values.parse_type(text)
                ours = True
            except UsageError:
                ours = False
            assert ours == fdtget_takes, text
    assert fdt_values.parse_type("hhx") == fdt_values.FdtType("x", 1)
    assert fdt_values.parse_type("ls") == fdt_values.FdtType("s", 0)
    assert fdt_values.parse_type("br") == fdt_values.FdtType("r", 0)
    assert fdt_values.parse_type("u64") == fdt_values.FdtType("", 0, "u64")


def test_ls_lists_what_fdtget_lists(corpus: Path, run: Run) -> None:
    """fdtget -l and -p over every node of every corpus tree (one run per tree)."""
    for path in sorted((corpus / "dtb").glob("*.dtb")):
        nodes = [p for p, _ in DeviceTree.parse(path.read_bytes()).walk()]
        for ours_opt, ref_opt in (([], "-l"), (["-p"], "-p")):
            ours = b""
            for node in nodes:
                rc, out, _ = run("dtb", "ls", *ours_opt, path, node)
                assert rc == 0
                ours += out
            ref = _fdtget(ref_opt, path, *nodes)
            assert (ref.returncode, ref.stdout) == (0, ours), (path, ref_opt)


def test_ls_text_json_nop_and_not_found(run: Run) -> None:
    assert run("dtb", "ls", SMALL) == (0, b"memory@0\nchosen\ncpus\n", b"")
    assert run("dtb", "ls", "-p", SMALL, "/") == (
        0, b"#address-cells\n#size-cells\nmodel\n", b"")
    assert run("dtb", "ls", "--json", SMALL, "/cpus") == (0, (
        b'{\n  "node": "/cpus",\n  "subnodes": [\n    "cpu@0"\n  ],\n  "properties": []\n}\n'),
        b"")
    # fdtget -l stops at an FDT_NOP token (small.dtb has one); kimagekit lists past it, as
    # libfdt's own subnode walk does
    ref = _fdtget("-l", SMALL, "/")
    assert (ref.returncode, ref.stdout) == (1, b"Unknown tag 0x00000004\n")
    assert run("dtb", "ls", SMALL, "/nope") == (
        1, b"", f"kimagekit: error: {SMALL}: dtb: no node /nope\n".encode())


# -- set / rm against fdtput -------------------------------------------------------------------
# (kimagekit arguments, fdtput runs that make the same tree (F: the file), kimagekit's report)
EDITS: list[tuple[list[str], list[list[str]], str]] = [
    # no --type: a string stays a string (fdtput needs -t s)
    (["/", "model", "IBM pSeries"], [["-t", "s", "F", "/", "model", "IBM pSeries"]],
     "/ model set as string, the old value's type"),
    (["/", "model", "quiet", "splash"], [["-t", "s", "F", "/", "model", "quiet", "splash"]],
     "/ model set as string, the old value's type"),
    (["/memory@0", "reg", "0", "0", "0", "536870912"],
     [["F", "/memory@0", "reg", "0", "0", "0", "536870912"]],
     "/memory@0 reg set as 32-bit cells, the old value's type"),
    (["-t", "x", "/chosen", "kimagekit,x", "deadbeef", "0x10"],
     [["-t", "x", "F", "/chosen", "kimagekit,x", "deadbeef", "0x10"]],
     "/chosen kimagekit,x set as 32-bit cells"),
    (["-t", "bx", "/chosen", "mac", "0", "1a", "ff"],
     [["-t", "bx", "F", "/chosen", "mac", "0", "1a", "ff"]], "/chosen mac set as bytes"),
    (["-t", "i", "/chosen", "n", "--", "-1", "010", "0x7fffffff"],
     [["-t", "i", "F", "/chosen", "n", "--", "-1", "010", "0x7fffffff"]],
     "/chosen n set as 32-bit cells"),
    (["-t", "u", "/chosen", "u", "4294967295"], [["-t", "u", "F", "/chosen", "u", "4294967295"]],
     "/chosen u set as 32-bit cells"),
    (["/chosen", "flag"], [["F", "/chosen", "flag"]], "/chosen flag set as 32-bit cells"),
    (["-t", "s", "/chosen", "names", "a", "b c"], [["-t", "s", "F", "/chosen", "names", "a",
                                                     "b c"]], "/chosen names set as string"),
    # -c: only the last node (fdtput -c, then the property); -p: every missing one
    (["-c", "/kimagekit", "p", "1"], [["-c", "F", "/kimagekit"], ["F", "/kimagekit", "p", "1"]],
     "node /kimagekit created\n{out}: /kimagekit p set as 32-bit cells"),
    (["-c", "/chosen", "p", "1"], [["F", "/chosen", "p", "1"]], "/chosen p set as 32-bit cells"),
    (["-p", "-t", "s", "/a/b@1/c", "p", "x"], [["-p", "-t", "s", "F", "/a/b@1/c", "p", "x"]],
     "node /a created\n{out}: node /a/b@1 created\n{out}: node /a/b@1/c created\n{out}: "
     "/a/b@1/c p set as string"),
]


def _same_as_fdtput(tmp_path: Path, src: Path, runs: list[list[str]], ours: Path) -> None:
    copy = tmp_path / "fdtput.dtb"
    shutil.copyfile(src, copy)
    for args in runs:
        subprocess.run([need_tool("fdtput"), *(str(copy) if a == "F" else a for a in args)],
                       check=True)
    mine, theirs = ours.read_bytes(), copy.read_bytes()
    # the same bytes, except where libfdt leaves stale bytes in a new value's alignment
    # padding (kimagekit writes zeros there); and the same tree as dtc reads it
    assert len(mine) == len(theirs)
    assert all(a in (b, 0) for a, b in zip(mine, theirs, strict=True))
    assert _dts(ours) == _dts(copy)


def _dts(path: Path) -> str:
    return subprocess.run([need_tool("dtc"), "-I", "dtb", "-O", "dts", str(path)],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize(("args", "runs", "line"), EDITS)
def test_set_writes_what_fdtput_writes(corpus: Path, tmp_path: Path, run: Run,
                                       args: list[str], runs: list[list[str]], line: str) -> None:
    for src in (corpus / PSERIES, SMALL):
        out = tmp_path / "ours.dtb"
        rc, text, err = run("dtb", "set", "-o", out, "--pack", src, *args)
        size = out.stat().st_size
        assert (rc, text.decode(), err) == (
            0, f"{out}: {line.format(out=out)} ({size} bytes)\n", b"")
        _same_as_fdtput(tmp_path, src, runs, out)


RMS: list[tuple[list[str], list[list[str]], str]] = [
    (["/memory@0", "device_type"], [["-d", "F", "/memory@0", "device_type"]],
     "/memory@0 device_type deleted"),
    (["/", "model", "#size-cells"], [["-d", "F", "/", "model", "#size-cells"]],
     "/ model, #size-cells deleted"),
    (["/cpus"], [["-r", "F", "/cpus"]], "node /cpus removed"),
    (["/memory"], [["-r", "F", "/memory"]], "node /memory removed"),  # as libfdt: memory@0
]


@pytest.mark.parametrize(("args", "runs", "line"), RMS)
def test_rm_writes_what_fdtput_writes(corpus: Path, tmp_path: Path, run: Run,
                                      args: list[str], runs: list[list[str]], line: str) -> None:
    for src in (corpus / PSERIES, SMALL):
        out = tmp_path / "ours.dtb"
        rc, text, err = run("dtb", "rm", "-o", out, "--pack", src, *args)
        size = out.stat().st_size
        assert (rc, text.decode(), err) == (
            0, f"{out}: {line.format(out=out)} ({size} bytes)\n", b"")
        _same_as_fdtput(tmp_path, src, runs, out)


def test_set_and_rm_not_found_exit_1_as_fdtput(tmp_path: Path, run: Run) -> None:
    out = tmp_path / "o.dtb"
    cases = [
        (["set", SMALL, "/nope", "p", "1"], ["F", "/nope", "p", "1"], "no node /nope"),
        (["set", "-c", SMALL, "/a/b", "p", "1"], ["-c", "F", "/a/b"], "no node /a"),
        (["rm", SMALL, "/chosen", "nope"], ["-d", "F", "/chosen", "nope"],
         "no property nope in /chosen"),
        (["rm", SMALL, "/nope"], ["-r", "F", "/nope"], "no node /nope"),
    ]
    for ours, theirs, what in cases:
        assert run("dtb", *ours, "-o", out) == (
            1, b"", f"kimagekit: error: {SMALL}: dtb: {what}\n".encode())
        assert not out.exists()
        copy = tmp_path / "c.dtb"
        shutil.copyfile(SMALL, copy)
        ref = subprocess.run([need_tool("fdtput"), *(str(copy) if a == "F" else a
                                                     for a in theirs)], capture_output=True,
                             check=False)
        assert (ref.returncode, copy.read_bytes()) == (1, SMALL.read_bytes())


def test_set_refuses_what_fdtput_would_garble(tmp_path: Path, run: Run) -> None:
    out = tmp_path / "o.dtb"
    cases = [
        # fdtput's default (%d) reads "IBM" as nothing and writes whatever its variable held
        (["/chosen", "n", "IBM pSeries"], "cannot encode 'IBM pSeries' as 32-bit cells: not a "
         "number for -t i (the default type; give --type, e.g. -t s for a string)"),
        (["/memory@0", "reg", "12abc"], "cannot encode '12abc' as 32-bit cells: not a number "
         "for -t i (the old value's type; give --type, e.g. -t s for a string)"),
        (["-t", "bx", "/chosen", "b", "1ff"], "cannot encode '1ff' as bytes: out of range "
         "[0, 255]"),
        (["-t", "u", "/chosen", "b", "--", "-1"], "cannot encode '-1' as 32-bit cells: not a "
         "number for -t u"),
        (["-t", "r", "/chosen", "b", "00"], "--type r is for reading (dtb get); give bytes as "
         "--type bytes HEX"),
    ]
    for args, msg in cases:
        assert run("dtb", "set", "-o", out, SMALL, *args) == (
            2, b"", f"kimagekit: error: {SMALL}: {msg}\n".encode())
        assert not out.exists()
    # h cells are 2 bytes each (fdtput -t hx writes one byte of each)
    assert run("dtb", "set", SMALL, "-t", "hx", "/chosen", "h", "1234", "abcd", "-o", out)[0] == 0
    assert run("dtb", "get", out, "/chosen", "h", "-t", "r")[1] == bytes.fromhex("1234abcd")
    assert _fdtget("-t", "hx", out, "/chosen", "h").stdout == b"1234 abcd\n"


def test_alias_paths_as_fdtget(corpus: Path, tmp_path: Path, run: Run) -> None:
    """A path not starting with / starts with an /aliases name, as libfdt reads it."""
    tree = tmp_path / "aliases.dtb"
    shutil.copyfile(corpus / PSERIES, tree)
    fdtput = need_tool("fdtput")
    for name, target in (("mem", "/memory@0"), ("cpus", "/cpus/"), ("rel", "memory@0")):
        subprocess.run([fdtput, "-p", "-t", "s", str(tree), "/aliases", name, target],
                       check=True)
    for args in (["mem", "reg"], ["cpus/PowerPC,POWER9@0", "reg"], ["mem", "device_type"]):
        rc, out, err = run("dtb", "get", tree, *args)
        ref = _fdtget(tree, *args)
        assert (rc, out, err) == (0, ref.stdout, b"") and ref.returncode == 0
    assert run("dtb", "ls", tree, "cpus")[1] == _fdtget("-l", tree, "cpus").stdout
    for args, msg in ((["nope", "reg"], "no alias 'nope' in /aliases (a node path starts with "
                       "'/')"), (["rel", "reg"], "alias 'rel' is not a path: 'memory@0'")):
        assert run("dtb", "get", tree, *args) == (
            1, b"", f"kimagekit: error: {tree}: dtb: {msg}\n".encode())
        assert _fdtget(tree, *args).returncode == 1
    out = tmp_path / "o.dtb"
    assert run("dtb", "rm", tree, "mem", "device_type", "-o", out, "--pack")[0] == 0
    subprocess.run([fdtput, "-d", str(tree), "mem", "device_type"], check=True)
    assert out.read_bytes() == tree.read_bytes()


def test_cells_print_as_c_prints_them(tmp_path: Path, run: Run) -> None:
    """fdtget prints a 32-bit cell through a C int: signed for the default and -t i."""
    tree = tmp_path / "t.dtb"
    assert run("dtb", "set", "-t", "x", "-o", tree, SMALL, "/chosen", "c", "ffffffff",
               "80000000", "7fffffff")[0] == 0
    want = {None: b"-1 -2147483648 2147483647\n", "i": b"-1 -2147483648 2147483647\n",
            "u": b"4294967295 2147483648 2147483647\n", "x": b"ffffffff 80000000 7fffffff\n",
            "bi": b"255 255 255 255 128 0 0 0 127 255 255 255\n",
            "hx": b"ffff ffff 8000 0 7fff ffff\n"}
    for kind, text in want.items():
        opt = [] if kind is None else ["-t", kind]
        assert run("dtb", "get", *opt, tree, "/chosen", "c") == (0, text, b"")
        assert _fdtget(*opt, tree, "/chosen", "c").stdout == text
