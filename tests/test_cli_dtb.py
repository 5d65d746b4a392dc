"""``kimagekit dtb ...``, ``patch-handover`` and ``inspect`` on device trees: exact output."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from conftest import TESTDATA, need_tool

from kimagekit.cli import main

SMALL = TESTDATA / "dtb" / "small.dtb"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_show_text(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "dtb", "show", SMALL)
    assert rc == 0
    assert out.splitlines()[:6] == [
        "/memreserve/ 0x400000 0x1000", "/", "  #address-cells = <0x02>",
        "  #size-cells = <0x02>", '  model = "kimagekit,test"', "/memory@0"]


def test_show_dts_matches_dtc(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "dtb", "show", "--dts", SMALL)
    ref = subprocess.run([need_tool("dtc"), "-I", "dtb", "-O", "dts", str(SMALL)], check=True,
                         capture_output=True, text=True).stdout
    assert (rc, out) == (0, ref)


def test_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "dtb", "show", "--json", SMALL)
    doc = json.loads(out)
    assert rc == 0 and doc["header"]["totalsize"] == SMALL.stat().st_size
    assert doc["reservations"] == [{"address": 0x400000, "size": 0x1000}]
    assert doc["nodes"][2] == {"path": "/chosen", "properties": [
        {"name": "bootargs", "length": 13, "value": b"console=hvc0\0".hex()}]}


def test_get(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "dtb", "get", SMALL, "/chosen", "bootargs") == (0, "console=hvc0\n", "")
    assert run(capsys, "dtb", "get", "--dts", SMALL, "/chosen", "bootargs") == (
        0, '"console=hvc0"\n', "")
    assert run(capsys, "dtb", "get", SMALL, "/memory@0", "reg", "--type", "u64") == \
        (0, "0x0\n0x40000000\n", "")
    rc, _, err = run(capsys, "dtb", "get", SMALL, "/chosen", "nope")
    assert (rc, err) == (1, f"kimagekit: error: {SMALL}: dtb: no property nope in /chosen\n")


def test_set_then_fdtget(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "o.dtb"
    before = hashlib.sha256(SMALL.read_bytes()).hexdigest()
    rc, text, _ = run(capsys, "dtb", "set", SMALL, "/chosen", "kimagekit,cells", "1", "0x20",
                      "-o", out)
    assert (rc, text) == (0, f"{out}: /chosen kimagekit,cells set as 32-bit cells (410 bytes)\n")
    assert hashlib.sha256(SMALL.read_bytes()).hexdigest() == before
    fdtget = need_tool("fdtget")
    got = subprocess.run([fdtget, "-t", "x", str(out), "/chosen", "kimagekit,cells"],
                         check=True, capture_output=True, text=True).stdout
    assert got == "1 20\n"
    rc, _, _ = run(capsys, "dtb", "set", SMALL, "/chosen", "bootargs", "quiet", "--type",
                   "string", "-o", out, "--pack")
    got = subprocess.run([fdtget, str(out), "/chosen", "bootargs"], check=True,
                         capture_output=True, text=True).stdout
    assert (rc, got) == (0, "quiet\n")


def test_dts_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = tmp_path / "t.dts"
    src.write_text("/dts-v1/;\n/ {\n\t#address-cells = <2>;\n\t#size-cells = <2>;\n"
                   '\tmemory@0 { device_type = "memory"; reg = <0 0 0 0x40000000>; };\n'
                   "\tchosen { };\n};\n")
    out = tmp_path / "o.dtb"
    rc, text, _ = run(capsys, "dtb", "handover", src, "--start", "0x1000000", "--size", "4096",
                      "-o", out)
    assert (rc, text) == (0, f"{out}: hand-over ima [0x1000000, 0x1001000) set, "
                             "with its reservation\n")
    dts = subprocess.run([need_tool("dtc"), "-I", "dtb", "-O", "dts", str(out)], check=True,
                         capture_output=True, text=True)
    assert "/memreserve/\t0x0000000001000000 0x0000000000001000;" in dts.stdout
    assert "linux,ima-kexec-buffer = <0x00 0x1000000 0x00 0x1000>;" in dts.stdout
    assert dts.stderr == ""


def test_patch_handover_round_trip(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                   corpus: Path) -> None:
    src = corpus / "dtb" / "qemu-7.2-ppc64-powernv.dtb"
    one, two = tmp_path / "1.dtb", tmp_path / "2.dtb"
    assert run(capsys, "patch-handover", src, "--start", "0x2000000", "--size", "0x10000",
               "-o", one)[0] == 0
    rc, text, _ = run(capsys, "patch-handover", one, "--remove", "-o", two, "--json")
    doc = json.loads(text)
    assert rc == 0 and doc["action"] == "removed"
    assert doc["handovers"] == [{"style": "seed", "start": 0x2000000, "size": 0x10000,
                                 "reserved": True}]
    assert two.read_bytes() == src.read_bytes()


def test_patch_handover_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                 corpus: Path) -> None:
    src = corpus / "dtb" / "qemu-7.2-ppc64-pseries.dtb"
    out = tmp_path / "o.dtb"
    rc, _, err = run(capsys, "dtb", "handover", src, "--start", "0x30000000", "--size", "16",
                     "-o", out)
    assert (rc, err) == (2, f"kimagekit: error: {src}: dtb: chosen: hand-over buffer "
                            "[0x30000000, 0x30000010) is not inside RAM ([0x0, 0x20000000))\n")
    assert not out.exists()
    rc, _, err = run(capsys, "patch-handover", TESTDATA / "make_dtb.py", "--remove", "-o", out)
    assert (rc, err) == (2, f"kimagekit: error: {TESTDATA / 'make_dtb.py'}: patch-handover: "
                            "patch-handover reads a kexec image (a device tree: kimagekit dtb "
                            "handover)\n")
    rc, _, err = run(capsys, "dtb", "handover", src, "--remove", "-o", out)
    assert (rc, err) == (2, f"kimagekit: error: {src}: dtb: no hand-over buffer to remove\n")


def test_inspect(capsys: pytest.CaptureFixture[str], corpus: Path) -> None:
    src = corpus / "dtb" / "qemu-7.2-ppc64-powernv9-kernel-initrd.dtb"
    rc, out, _ = run(capsys, "inspect", src)
    lines = out.splitlines()
    assert rc == 0 and lines[:5] == [
        f"{src}: device-tree",
        "  version 17 (last compatible 16), totalsize 0xe00, boot_cpuid_phys 0",
        "  blocks: reservations 0x28, struct 0x38+0xba8, strings 0xbe0+0x220",
        "  nodes: 26",
        "  RAM: [0x0, 0x80000000) (/memory@0)"]
    assert "  /chosen linux,initrd-start = <0x28000000>" in lines
    rc, out, _ = run(capsys, "inspect", "--json", SMALL)
    doc = json.loads(out)
    assert doc["format"] == "device-tree" and doc["summary"]["node_count"] == 5
    assert doc["summary"]["ram"] == [{"start": 0, "size": 0x40000000, "source": "/memory@0"}]


def test_corrupt_input_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    bad = TESTDATA / "dtb" / "corrupt-bad-token.dtb"
    rc, out, err = run(capsys, "dtb", "show", bad)
    assert (rc, out) == (2, "")
    assert err == (f"kimagekit: error: {bad}: dtb: struct.node[/] at offset 0x50: "
                   "bad token 0x00000007\n")


NOTICE = ("kimagekit: notice: `patch-handover DTB` is now `kimagekit dtb handover DTB` (whose "
          "--style defaults to ima; this spelling keeps seed)\n")


def test_dtb_handover_default_style_and_the_old_spelling(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, corpus: Path) -> None:
    """``dtb handover`` defaults to upstream's ima; ``patch-handover DTB`` still runs the old
    job (seed by default) with a one-line notice, writing the same bytes as the new spelling."""
    src = corpus / "dtb" / "qemu-7.2-ppc64-powernv.dtb"
    new, seed, old = tmp_path / "new.dtb", tmp_path / "seed.dtb", tmp_path / "old.dtb"
    args = ["--start", "0x2000000", "--size", "0x10000"]
    assert run(capsys, "dtb", "handover", src, *args, "-o", new) == (
        0, f"{new}: hand-over ima [0x2000000, 0x2010000) set, with its reservation\n", "")
    fdtget = need_tool("fdtget")
    got = subprocess.run([fdtget, "-t", "x", str(new), "/chosen", "linux,ima-kexec-buffer"],
                         check=True, capture_output=True, text=True).stdout
    assert got == "0 2000000 0 10000\n"
    assert run(capsys, "dtb", "handover", src, *args, "--style", "seed", "-o", seed)[0] == 0
    assert run(capsys, "patch-handover", src, *args, "-o", old) == (
        0, f"{old}: hand-over seed [0x2000000, 0x2010000) set, with its reservation\n", NOTICE)
    assert old.read_bytes() == seed.read_bytes()
    rc, _, err = run(capsys, "dtb", "handover", src, *args, "--style", "x", "-o", old)
    assert rc == 2 and "'x' is not one of 'ima', 'seed'" in err


def _help(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
          *argv: str) -> str:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERM", "dumb")
    assert main([*argv, "--help"]) == 0
    return capsys.readouterr().out


def test_each_command_shows_only_its_own_options(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    image = _help(capsys, monkeypatch, "patch-handover")
    for opt in ("--ima", "--data", "--in-place", "--reseal", "--force", "--continuation"):
        assert opt in image
    for opt in ("--start", "--size", "--style", "--remove", "--pack"):
        assert opt not in image
    assert "Example: kimagekit patch-handover kexec.img --ima new.bin -o patched.img" in image
    tree = _help(capsys, monkeypatch, "dtb", "handover")
    for opt in ("--start", "--size", "--style", "--remove", "--pack", "<ima|seed>",
                "[default: ima]", "the 2016"):
        assert opt in tree
    for opt in ("--ima", "--data", "--in-place", "--reseal"):
        assert opt not in tree
    assert "Example: kimagekit dtb handover board.dtb --start 0x2000000 --size 0x10000 -o " \
        "new.dtb" in tree
    build = _help(capsys, monkeypatch, "build")
    assert "<ima|seed>" in build and "the 2016" in build
    examples = {
        "get": "Example: kimagekit dtb get -t x board.dtb /memory@0 reg",
        "ls": "Example: kimagekit dtb ls -p board.dtb /chosen",
        "set": 'Example: kimagekit dtb set board.dtb / model "IBM pSeries" -o new.dtb',
        "rm": "Example: kimagekit dtb rm board.dtb /chosen bootargs -o new.dtb",
        "show": "Example: kimagekit dtb show --dts board.dtb",
    }
    for cmd, example in examples.items():
        text = _help(capsys, monkeypatch, "dtb", cmd)
        assert example in text
        if cmd in ("get", "set"):
            choices = "[s|i|u|x|r|bi|bu|bx|hi|hu|hx|u32|u64|string|strings|bytes]" \
                if cmd == "get" else "[s|i|u|x|bi|bu|bx|hi|hu|hx|u32|u64|string|strings|bytes]"
            assert choices in text
