"""Every command's --help follows the CLI conventions (issue 14): a one-line example, arguments
shown as NAME (never ``{name}``), options with a metavar (never a Python type such as ``<str>``,
``<bool>`` or ``list[Path]``), help on every option, and the named options as choices.

Parametrized per command, so a command that misses one shows up by name."""

from __future__ import annotations

import re
from typing import Any

import pytest
from typer.core import TyperArgument, TyperOption

from kimagekit.cli import COMMANDS, load_command, main

# options whose values are a fixed set: they must be choices wherever a command has them
CHOICE_OPTIONS = ("--to", "--type", "--style", "--arch", "--handover-style", "--digest-policy",
                  "--hole-search", "--endian")


def _leaves() -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name in COMMANDS:
        cmd = load_command(name)
        subs = getattr(cmd, "commands", None)
        if subs:
            out += [(name, sub) for sub in subs]
        else:
            out.append((name,))
    return out


LEAVES = _leaves()


def _command(path: tuple[str, ...]) -> Any:
    cmd = load_command(path[0])
    for part in path[1:]:
        cmd = cmd.commands[part]
    return cmd


def _help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str],
          monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "250")  # one help line per option: nothing split by wrapping
    assert main([*path, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("path", LEAVES, ids=[" ".join(p) for p in LEAVES])
def test_help_has_a_one_line_example(path: tuple[str, ...], capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    text = _help(path, capsys, monkeypatch)
    examples = [line.strip(" │") for line in text.splitlines() if "Example: " in line]
    assert examples, text
    assert all(e.startswith(f"Example: kimagekit {' '.join(path)} ") for e in examples), examples


@pytest.mark.parametrize("path", LEAVES, ids=[" ".join(p) for p in LEAVES])
def test_help_shows_no_python_types(path: tuple[str, ...], capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    text = _help(path, capsys, monkeypatch)
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage, usage
    for bad in ("<bool>", "<str>", "<path>", "<int>", "<float>", "list[", "Path]", "<text>",
                ":path", ":str"):
        assert bad not in text, (bad, text)
    for p in _command(path).params:
        if isinstance(p, TyperArgument):
            assert re.fullmatch(r"[A-Z][A-Z0-9_|-]*", p.metavar or ""), (p.name, p.metavar)
            assert p.metavar in usage


@pytest.mark.parametrize("path", LEAVES, ids=[" ".join(p) for p in LEAVES])
def test_every_option_and_argument_has_help(path: tuple[str, ...]) -> None:
    # hidden options (the old `patch-handover DTB` spelling's) are not shown, so need no help
    missing = [p.opts[0] for p in _command(path).params
               if isinstance(p, TyperOption | TyperArgument) and not getattr(p, "hidden", False)
               and not (p.help or "").strip()]
    assert missing == []


@pytest.mark.parametrize("path", LEAVES, ids=[" ".join(p) for p in LEAVES])
def test_fixed_value_options_are_choices(path: tuple[str, ...],
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    text = _help(path, capsys, monkeypatch)
    for p in _command(path).params:
        if isinstance(p, TyperOption) and set(p.opts) & set(CHOICE_OPTIONS) and not p.hidden:
            if path[0] == "dtb" and "--type" in p.opts:
                # fdtget's -t is a grammar (size prefix + letter): its metavar lists every value
                assert p.metavar and "|".join(("s", "i", "u", "x")) in p.metavar
                assert p.metavar in text
                continue
            assert p.type.name == "choice", (p.opts, p.type)
            shown = "|".join(str(getattr(c, "value", c)) for c in p.type.choices)
            assert f"<{shown}>" in text


def test_the_root_help_has_an_example_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "Example: kimagekit inspect vmlinuz" in text
    assert "--version" in text


def test_every_command_is_walked() -> None:
    # the root's commands and the groups' own: the walk above misses none
    assert {p[0] for p in LEAVES} == set(COMMANDS)
    assert ("ima", "show") in LEAVES and ("dtb", "set") in LEAVES
    assert ("inspect",) in LEAVES and ("build",) in LEAVES


def test_build_kernel_says_what_each_arch_takes(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = next(p for p in _command(("build",)).params if "--kernel" in p.opts)
    assert kernel.help == ("The kernel to load: ppc64le/ppc64 take the ELF vmlinux, x86_64 "
                           "the bzImage (/boot/vmlinuz), arm64 the Image (PE-wrapped or not; "
                           "not an EFI zboot, which 7.2's loader refuses), riscv64 the ELF "
                           "vmlinux or the Image (Debian's vmlinuz).")
    text = _help(("build",), capsys, monkeypatch)
    assert "<ppc64le|ppc64|x86_64|arm64|riscv64>" in text
