"""kimagekit's own DTS reader (no dtc): dtc's bytes for the plain subset, and every other
construct refused with its line and one exact message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need_tool

from kimagekit import dts
from kimagekit.cli import main
from kimagekit.dts_subset import compile_subset
from kimagekit.errors import ParseError

# case: (source, the error after "dts: "); NOT_SUBSET ends every refusal of a construct.
NOT_SUBSET = (": not in the DTS subset kimagekit compiles without dtc (install dtc, the "
              "reference compiler)")
REFUSED = {
    'ref-cells': ('/dts-v1/;\n/ {\n\tinterrupt-parent = <&gic>;\n};\n',
        "line 3: reference '&gic'" + NOT_SUBSET),
    'ref-path': ('/dts-v1/;\n/ {\n\tx = &{/cpus};\n};\n',
        "line 3: reference '&{/cpus}'" + NOT_SUBSET),
    'ref-string': ('/dts-v1/;\n/ {\n\tx = &gic;\n};\n',
        "line 3: reference '&gic'" + NOT_SUBSET),
    'label-node': ('/dts-v1/;\n/ {\n\tgic: intc {\n\t};\n};\n',
        "line 3: label 'gic:'" + NOT_SUBSET),
    'label-value': ('/dts-v1/;\n/ {\n\tx = <1 lbl: 2>;\n};\n',
        "line 3: label 'lbl:'" + NOT_SUBSET),
    'label-prop': ('/dts-v1/;\n/ {\n\tlbl: x;\n};\n',
        "line 3: label 'lbl:'" + NOT_SUBSET),
    'label-bytes': ('/dts-v1/;\n/ {\n\tx = [01 lbl: 02];\n};\n',
        "line 3: label 'lbl:'" + NOT_SUBSET),
    'bits': ('/dts-v1/;\n/ {\n\tx = /bits/ 16 <1>;\n};\n',
        "line 3: '/bits/'" + NOT_SUBSET),
    'char': ("/dts-v1/;\n/ {\n\tx = <'a'>;\n};\n",
        'line 3: character literal' + NOT_SUBSET),
    'delete-node': ('/dts-v1/;\n/ {\n\tn {\n\t};\n};\n/delete-node/ &n;\n',
        "line 6: '/delete-node/'" + NOT_SUBSET),
    'delete-prop': ('/dts-v1/;\n/ {\n\t/delete-property/ x;\n};\n',
        "line 3: '/delete-property/'" + NOT_SUBSET),
    'include': ('/dts-v1/;\n/include/ "other.dtsi"\n/ {\n};\n',
        "line 2: '/include/'" + NOT_SUBSET),
    'plugin': ('/dts-v1/;\n/plugin/;\n/ {\n};\n',
        "line 2: '/plugin/'" + NOT_SUBSET),
    'overlay-ref': ('/dts-v1/;\n/ {\n};\n&{/} {\n};\n',
        "line 4: reference '&{/}'" + NOT_SUBSET),
    'incbin': ('/dts-v1/;\n/ {\n\tx = /incbin/("f");\n};\n',
        "line 3: '/incbin/'" + NOT_SUBSET),
    'omit': ('/dts-v1/;\n/ {\n\t/omit-if-no-ref/ n {\n\t};\n};\n',
        "line 3: '/omit-if-no-ref/'" + NOT_SUBSET),
    'expr': ('/dts-v1/;\n/ {\n\tx = <(1 + 2)>;\n};\n',
        "line 3: integer expression '(...)'" + NOT_SUBSET),
    'wide': ('/dts-v1/;\n/ {\n\tx = <0x100000000>;\n};\n',
        "line 3: cell value '0x100000000' wider than 32 bits (dtc truncates it)" + NOT_SUBSET),
    'second-root': ('/dts-v1/;\n/ {\n};\n/ {\n};\n',
        "line 4: a second definition of '/' (dtc merges them)" + NOT_SUBSET),
    'dup-node': ('/dts-v1/;\n/ {\n\tn {\n\t};\n\tn {\n\t};\n};\n',
        "line 5: a second node 'n' (dtc merges them)" + NOT_SUBSET),
    'name-prop': ('/dts-v1/;\n/ {\n\tn {\n\t\tname = "n";\n\t};\n};\n',
        "line 4: a 'name' property (dtc checks it and drops it)" + NOT_SUBSET),
    'cpp-marker': ('/dts-v1/;\n# 1 "x.dts"\n/ {\n};\n',
        'line 2: a cpp line marker (\'# N "file"\')' + NOT_SUBSET),
    'hex-esc': ('/dts-v1/;\n/ {\n\tx = "\\xg";\n};\n',
        "line 3: '\\x' with no hex digit (dtc aborts)" + NOT_SUBSET),
    'no-header': ('/ {\n};\n',
        "line 1: syntax error: the source must start with '/dts-v1/;'"),
    'dup-prop': ('/dts-v1/;\n/ {\n\tx;\n\tx;\n};\n',
        "line 4: syntax error: duplicate property 'x'"),
    'prop-after-node': ('/dts-v1/;\n/ {\n\tn {\n\t};\n\tx;\n};\n',
        "line 5: syntax error: property 'x' after a subnode"),
    'bad-node-char': ('/dts-v1/;\n/ {\n\tn#1 {\n\t};\n};\n',
        "line 3: syntax error: bad character in node name 'n#1'"),
    'bad-prop-char': ('/dts-v1/;\n/ {\n\tx@1;\n};\n',
        "line 3: syntax error: bad character in property name 'x@1'"),
    'octal': ('/dts-v1/;\n/ {\n\tx = <08>;\n};\n',
        "line 3: syntax error: bad integer literal '08'"),
    'unquoted': ('/dts-v1/;\n/ {\n\tx = okay;\n};\n',
        "line 3: syntax error: unexpected 'o'"),
    'phandle-dup': ('/dts-v1/;\n/ {\n\ta {\n\t\tphandle = <1>;\n\t};\n'
                    '\tb {\n\t\tphandle = <1>;\n\t};\n};\n',
        'phandle: /b: duplicated phandle 0x00000001 (dtc refuses it)'),
    'bad-bytes': ('/dts-v1/;\n/ {\n\tx = [0 1];\n};\n',
        "line 3: syntax error: byte string needs pairs of hex digits, not '0'"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_with_line_and_construct(case: str) -> None:
    source, message = REFUSED[case]
    with pytest.raises(ParseError) as info:
        compile_subset(source)
    assert str(info.value) == f"dts: {message}"


# What users found the fdt package getting wrong, each compiled exactly as dtc does.
PLAIN = """/dts-v1/;
/* a comment */ /memreserve/ 0x1000 0x2000;
/memreserve/ 0x10000000 0x100;
/ {
\tcompatible = "a", "say \\"hi\\"", "x\\0";
\t\\#gpio-cells = <2>;
\tb = [0102 03], <010 0x10 12U>; // octal, as C reads it
\tesc = "\\a\\x41\\101\\777\\q\\\\";
\tempty;
\tnone = <>;
\tmulti = "line
two";
\tcpus { cpu@4 { reg = <4>; }; cpu@5 { reg = <5>; }; };
};
"""


def test_plain_subset_is_dtc_byte_for_byte(tmp_path: Path) -> None:
    src = tmp_path / "plain.dts"
    src.write_text(PLAIN, encoding="latin-1")
    ref = subprocess.run([need_tool("dtc"), "-q", "-I", "dts", "-O", "dtb", str(src)],
                         check=True, capture_output=True).stdout
    ours = compile_subset(PLAIN)
    assert ours.build() == ref
    assert ours.boot_cpuid_phys == 4  # dtc's guess: the first CPU's reg
    assert ours.get("/", "compatible") == b'a\0say "hi"\0x\0\0'
    assert ours.get("/", "#gpio-cells") == bytes.fromhex("00000002")
    assert ours.get("/", "b") == bytes.fromhex("010203" "00000008" "00000010" "0000000c")
    assert ours.get("/", "esc") == b"\x07AA\xffq\\\0"
    assert ours.get("/", "multi") == b"line\ntwo\0"
    assert [(r.address, r.size) for r in ours.reservations] == [(0x1000, 0x2000),
                                                                (0x10000000, 0x100)]


def test_dtc_path_and_fallback_path_agree(tmp_path: Path) -> None:
    src = tmp_path / "plain.dts"
    src.write_text(PLAIN, encoding="latin-1")
    with_dtc = dts.from_dts_file(src, dtc=need_tool("dtc")).build()
    assert dts.from_dts_file(src, dtc=None).build() == with_dtc
    assert dts.from_dts(PLAIN, dtc=None).build() == with_dtc


def test_dtc_diagnostics_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    need_tool("dtc")
    src = tmp_path / "bad.dts"
    src.write_text("/dts-v1/;\n/ {\n\tx = <&nowhere>;\n};\n")
    assert main(["dtb", "show", str(src)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {src}: dts: dtc: dtc refused it: {src}:2.3-4.3: ERROR "
        f"(phandle_references): /: Reference to non-existent node or label \"nowhere\"; "
        f"ERROR: Input tree has errors, aborting (use -f to force output)\n")


def test_env_forces_the_fallback(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "ref.dts"
    src.write_text("/dts-v1/;\n/ {\n\tinterrupt-parent = <&gic>;\n\tgic: intc {\n\t};\n};\n")
    monkeypatch.setenv("KIMAGEKIT_DTC", "")
    assert main(["dtb", "show", str(src)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {src}: dts: line 3: reference '&gic': not in the DTS subset "
        f"kimagekit compiles without dtc (install dtc, the reference compiler)\n")


def test_env_names_a_missing_dtc(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "a.dts"
    src.write_text("/dts-v1/;\n/ {\n};\n")
    monkeypatch.setenv("KIMAGEKIT_DTC", str(tmp_path / "no-dtc"))
    assert main(["dtb", "show", str(src)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {src}: dts: cannot run dtc ({tmp_path / 'no-dtc'}): "
        f"No such file or directory\n")


def test_text_is_read_as_its_utf8_bytes(tmp_path: Path) -> None:
    text = '/dts-v1/;\n/ {\n\tmodel = "caf\u00e9";\n};\n'
    assert dts.from_dts(text, dtc=None).get("/", "model") == "café".encode() + b"\0"
    src = tmp_path / "u.dts"
    src.write_text(text, encoding="utf-8")
    ref = subprocess.run([need_tool("dtc"), "-q", "-I", "dts", "-O", "dtb", str(src)],
                         check=True, capture_output=True).stdout
    assert dts.from_dts(text, dtc=need_tool("dtc")).build() == ref
    assert dts.from_dts(text, dtc=None).build() == ref


@pytest.mark.parametrize("dtc", ["dtc", None])
def test_piped_dts_is_read_as_its_bytes(dtc: str | None, tmp_path: Path) -> None:
    """DTS on stdin holds the same bytes as the file: a UTF-8 string value must come out as
    dtc writes it from the file (it was once decoded, then encoded a second time)."""
    src = tmp_path / "u.dts"
    src.write_bytes('/dts-v1/;\n/ { s = "café"; };\n'.encode())
    env = {**os.environ, "KIMAGEKIT_DTC": need_tool("dtc") if dtc else ""}
    run = [sys.executable, "-m", "kimagekit", "dtb", "get"]
    with src.open("rb") as f:
        piped = subprocess.run([*run, "-", "/", "s", "--type", "bytes"], stdin=f, env=env,
                               capture_output=True, check=False)
    named = subprocess.run([*run, str(src), "/", "s", "--type", "bytes"], env=env,
                           capture_output=True, check=False)
    assert named.returncode == 0 and named.stderr == b""
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, named.stdout, b"")
    assert bytes.fromhex("".join(c for c in named.stdout.decode() if c in "0123456789abcdef")
                         ) == "café".encode() + b"\0"
