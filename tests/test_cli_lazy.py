"""Lazy command registration: each command's module is imported only when it runs, and the
help table lists every command with its own first paragraph."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from kimagekit import detect
from kimagekit.cli import COMMANDS, load_command
from kimagekit.formats import arm64, bzimage, elf
from kimagekit.formats.fdt import FDT_MAGIC

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "testdata" / "ima" / "small-le.bin"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_table_is_each_commands_first_paragraph(name: str) -> None:
    command = load_command(name)
    assert command.name == name
    # the loaded help has each paragraph on one line (cli/conventions.py)
    first = inspect.cleandoc(command.help or "").split("\n\n")[0]
    assert " ".join(COMMANDS[name][1].split()) == first


def test_help_table_lists_every_command_once_in_help_order() -> None:
    # inspect (any file) first, then kexec images (build to load), kernels, and the two groups
    assert list(COMMANDS) == ["inspect", "build", "verify", "ls", "extract", "patch-handover",
                              "load", "unload", "extract-purgatory", "verify-signature", "ima",
                              "dtb"]
    assert isinstance(load_command("ima"), typer.core.TyperGroup)
    assert sorted(load_command("ima").commands) == ["append", "check", "convert", "replay",
                                                    "show"]


def _modules_after(*argv: str) -> set[str]:
    code = ("import sys; from kimagekit.cli import main; code = main(sys.argv[1:]); "
            "sys.stderr.write('\\nMODULES ' + ' '.join(sorted(sys.modules)) + '\\n')")
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                       check=False)
    line = p.stderr.splitlines()[-1]
    assert line.startswith("MODULES "), p.stderr[-400:]
    return set(line.split()[1:])


def test_help_imports_no_command_module() -> None:
    mods = _modules_after("--help")
    assert sorted(m for m in mods if m.startswith("kimagekit")) == [
        "kimagekit", "kimagekit.cli", "kimagekit.cli.conventions", "kimagekit.errors",
        "kimagekit.output_files"]
    for heavy in ("kimagekit.ima_log", "kimagekit.devicetree", "kimagekit.arch.build",
                  "construct", "cryptography", "asn1crypto"):
        assert heavy not in mods


def test_inspect_of_an_ima_list_imports_only_the_ima_side() -> None:
    mods = _modules_after("inspect", str(SMALL))
    assert {"kimagekit.cli.inspect", "kimagekit.cli.ima_summary", "kimagekit.ima_log"} <= mods
    for other in ("kimagekit.cli.ima", "kimagekit.ima_batch", "kimagekit.cli.build",
                  "kimagekit.cli.dtb", "kimagekit.cli.kernel",
                  "kimagekit.cli.image", "kimagekit.kernels", "kimagekit.kernel_info",
                  "kimagekit.image_info", "kimagekit.dtb_file", "kimagekit.dts",
                  "kimagekit.devicetree", "kimagekit.handover", "kimagekit.sig.ima_sig",
                  "cryptography", "asn1crypto"):
        assert other not in mods


def test_detector_magics_are_the_formats_own() -> None:
    assert detect.MAGIC_BZIMAGE == (bzimage.HDRS_OFFSET, bzimage.HDRS_MAGIC)
    assert detect.MAGIC_ARM64[1] == arm64.ARM64_IMAGE_MAGIC
    assert detect.MAGIC_ELF == (0, elf.ELFMAG)
    assert FDT_MAGIC.to_bytes(4, "big") == detect.MAGIC_DTB


@pytest.mark.parametrize(("head", "kind"), [
    (b"  \n/* a */ /dts-v1/; / { };", "device-tree"),
    (b"// c\n/dts-v1/;\n/ { };", "device-tree"),
    (b"\t/dts-v1/;", "device-tree"),
])
def test_dts_heads_still_pass_the_prefilter(head: bytes, kind: str) -> None:
    found = [k.name for k in detect.KINDS if k.detect(head, len(head))]
    assert found[0] == kind


def test_a_typo_still_gets_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    from kimagekit.cli import main
    assert main(["insp"]) == 2
    err = capsys.readouterr().err
    assert "No such command 'insp'. Did you mean 'inspect'?" in err
