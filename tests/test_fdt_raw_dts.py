"""DTS text written straight from the tokens (dts.blob_to_dts) against the model's to_dts."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import TESTDATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fdt_raw import CORRUPT, blobs

from kimagekit import dtb_file, dts
from kimagekit.devicetree import DeviceTree, Node, Prop
from kimagekit.errors import ParseError


def _prop_after_child(tree: DeviceTree) -> bool:
    for _, node in tree.walk():
        kinds = [isinstance(i, Node) for i in node.items if isinstance(i, Node | Prop)]
        if True in kinds and False in kinds[kinds.index(True):]:
            return True
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(made=blobs())
def test_random_blobs_same_text_as_the_model(made: tuple[bytes, list[str]]) -> None:
    blob, _ = made
    tree = DeviceTree.parse(blob)
    text = dts.blob_to_dts(blob)
    if text is None:
        assert _prop_after_child(tree)
    else:
        assert text == dts.to_dts(tree)


def _value_by_the_rule(v: bytes) -> str:
    # dtc's guess, byte by byte, as the writer did before it was made fast
    if not v:
        return ";"
    printable = set(range(0x20, 0x7F)) | {0, 7, 8, 9, 10, 11, 12, 13}
    nul = v.count(0)
    if v[-1] == 0 and all(b in printable for b in v) and nul <= len(v) - nul:
        esc = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r",
               0x5C: "\\\\", 0x22: '\\"', 0: "\\0"}
        return ' = "' + "".join(esc.get(b, chr(b)) for b in v[:-1]) + '";'
    if len(v) % 4 == 0:
        cells = struct.unpack(f">{len(v) // 4}I", v)
        return " = <" + " ".join(f"0x{c:02x}" for c in cells) + ">;"
    return " = [" + " ".join(f"{b:02x}" for b in v) + "];"


_stringish = st.lists(st.sampled_from(b'ab \\"\0\t\n\x07\x7e\x7f\x1f\x80'), max_size=12).map(bytes)


@settings(max_examples=400, deadline=None)
@given(v=st.one_of(st.binary(max_size=16), _stringish, _stringish.map(lambda b: b + b"\0")))
def test_value_text_follows_dtcs_rule(v: bytes) -> None:
    assert dts._value(v) == _value_by_the_rule(v)


def test_corpus_same_text(corpus: Path) -> None:
    for f in sorted((corpus / "dtb").glob("*.dtb")):
        blob = f.read_bytes()
        assert dts.blob_to_dts(blob) == dts.to_dts(DeviceTree.parse(blob)), f.name


def test_prop_after_child_falls_back_to_the_model(tmp_path: Path) -> None:
    tree = DeviceTree.new()
    tree.root.items.append(Node("c"))
    tree.root.items.append(Prop("late", b"x\0", tree._nameoff("late")))
    blob = tree.build()
    assert dts.blob_to_dts(blob) is None
    src = tmp_path / "t.dtb"
    src.write_bytes(blob)
    assert dtb_file.dts_text(src) == '/dts-v1/;\n\n/ {\n\tlate = "x";\n\n\tc {\n\t};\n};\n'


@pytest.mark.parametrize("name", CORRUPT)
def test_corrupt_samples_same_error(name: str) -> None:
    blob = (TESTDATA / "dtb" / name).read_bytes()
    with pytest.raises(ParseError) as model:
        DeviceTree.parse(blob)
    with pytest.raises(ParseError) as raw:
        dts.blob_to_dts(blob)
    assert str(raw.value) == str(model.value)


@pytest.mark.parametrize("cells", [1, 2, 63, 64, 65, 300])
def test_cells_text_any_count(cells: int) -> None:
    v = b"".join(struct.pack(">I", (i * 0x01010101) & 0xFFFFFFFF | 0x80) for i in range(cells))
    assert dts._value(v) == _value_by_the_rule(v)
    assert dts._value(v) == " = <" + " ".join(f"0x{c:02x}" for c in
                                               struct.unpack(f">{cells}I", v)) + ">;"
