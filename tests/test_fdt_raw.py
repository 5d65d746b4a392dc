"""The raw get/set path (kimagekit.fdt_raw) against the model: same bytes, same values, same
errors wherever the raw walk reaches the defect."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import TESTDATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimagekit import dtb_file, fdt_raw
from kimagekit.devicetree import NOP, DeviceTree, Node, Prop
from kimagekit.errors import KimageError, NotFound, ParseError, UsageError

_NAMES = ["a", "b", "cpu", "cpu@0", "cpu@1", "reg", "compatible", "x@1", "bootargs"]
_name = st.sampled_from(_NAMES)
_value = st.binary(max_size=13)
_zero_or_junk = st.sampled_from([b"", b"\0" * 4, b"\0" * 12, b"\xaa" * 8])


@st.composite
def blobs(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A version-17 blob with NOPs, unusual padding, gaps and tails; and its node paths."""
    tree = DeviceTree.new(boot_cpuid_phys=draw(st.integers(0, 3)))
    for _ in range(draw(st.integers(0, 2))):
        tree.add_reservation(draw(st.integers(0, 2**40)), draw(st.integers(1, 2**20)))
    nodes = [("/", tree.root)]  # paths may be ambiguous ("cpu" finds "cpu@0"): on purpose
    for _ in range(draw(st.integers(0, 10))):
        parent, pnode = draw(st.sampled_from(nodes))
        name = draw(_name)
        if not any(c.name == name for c in pnode.children()):
            child = Node(name)
            pnode.items.append(child)
            nodes.append((parent.rstrip("/") + "/" + name, child))
    for _ in range(draw(st.integers(0, 16))):
        _, node = draw(st.sampled_from(nodes))
        name = draw(_name)
        node.items.insert(0, Prop(name, draw(_value), tree._nameoff(name)))
    paths = [p for p, _ in nodes]
    for _, node in list(tree.walk()):
        if draw(st.booleans()):
            node.items.insert(draw(st.integers(0, len(node.items))), NOP)
        if node.items and draw(st.integers(0, 4)) == 0:  # a property after the children
            node.items.append(Prop("late", draw(_value), tree._nameoff("late")))
        props = [i for i, p in enumerate(node.items) if isinstance(p, Prop) and len(p.value) % 4]
        if props and draw(st.booleans()):  # non-zero alignment bytes, kept by both paths
            i = props[0]
            p = node.items[i]
            assert isinstance(p, Prop)
            node.items[i] = Prop(p.name, p.value, p.nameoff, b"\x5a" * (-len(p.value) % 4))
    if draw(st.booleans()):
        tree.top.insert(0, NOP)
    tree.gap0 = draw(st.sampled_from([b"", b"\0" * 8]))
    tree.gap1 = draw(st.sampled_from([b"", b"\0" * 4]))
    tree.gap2 = draw(_zero_or_junk)
    tree.struct_tail = draw(st.sampled_from([b"", b"\0" * 4]))
    tree.pad = draw(st.sampled_from([b"", b"\0" * 3, b"\0" * 64, b"\x11" * 20]))
    return tree.build(), paths


def _model_set(blob: bytes, path: str, name: str, value: bytes, pack: bool) -> bytes:
    tree = DeviceTree.parse(blob)
    tree.set(path, name, value)
    return tree.build(pack=pack)


def _outcome(fn: object, *args: object, **kw: object) -> object:
    try:
        return fn(*args, **kw)  # type: ignore[operator]
    except KimageError as exc:
        return (type(exc).__name__, str(exc))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(made=blobs(), data=st.data(), pack=st.booleans())
def test_random_edits_give_the_models_bytes(made: tuple[bytes, list[str]], data: st.DataObject,
                                            pack: bool) -> None:
    blob, paths = made
    for _ in range(3):
        path = data.draw(st.sampled_from([*paths, "/nowhere", "/cpu", "/a/cpu"]))
        name = data.draw(st.sampled_from([*_NAMES, "late", "new-one"]))
        value = data.draw(_value)
        raw = _outcome(fdt_raw.set_property, blob, path, name, value, pack=pack)
        assert raw == _outcome(_model_set, blob, path, name, value, pack)
        got = _outcome(fdt_raw.get_property, blob, path, name)
        want = _outcome(dtb_file_get_by_model, blob, path, name)
        assert got == want
        if isinstance(raw, bytes):
            blob = raw  # the next edit starts from this one


def dtb_file_get_by_model(blob: bytes, path: str, name: str) -> bytes:
    tree = DeviceTree.parse(blob)
    tree.need(path)
    value = tree.get(path, name)
    if value is None:
        raise NotFound(f"no property {name} in {path}", fmt="dtb")
    return value


def test_corpus_edits_give_the_models_bytes(corpus: Path) -> None:
    files = sorted((corpus / "dtb").glob("*.dtb"))
    assert files
    for f in files:
        blob = f.read_bytes()
        for path, name, value in (("/chosen", "bootargs", b"quiet\0"),
                                  ("/chosen", "linux,initrd-start", b"\0" * 8),
                                  ("/", "model", b"kimagekit\0"), ("/", "new", b"")):
            for pack in (False, True):
                want = _model_set(blob, path, name, value, pack)
                assert fdt_raw.set_property(blob, path, name, value, pack=pack) == want, f.name


def test_unicode_names_and_old_versions_are_left_to_the_model() -> None:
    blob = (TESTDATA / "dtb" / "small.dtb").read_bytes()
    assert fdt_raw.get_property(blob, "/chosen", "b\u0101d") is None
    assert fdt_raw.set_property(blob, "/ch\u0101", "x", b"") is None
    v16 = (TESTDATA / "dtb" / "v16.dtb").read_bytes()
    assert struct.unpack_from(">I", v16, 20)[0] == 16
    assert fdt_raw.get_property(v16, "/", "#address-cells") is None
    assert fdt_raw.set_property(v16, "/", "x", b"") is None


def test_relative_path_refused_like_the_model() -> None:
    blob = (TESTDATA / "dtb" / "small.dtb").read_bytes()
    for fn in (lambda: fdt_raw.get_property(blob, "chosen", "x"),
               lambda: fdt_raw.set_property(blob, "chosen", "x", b"")):
        with pytest.raises(UsageError) as info:
            fn()
        assert str(info.value) == "node path must start with '/': 'chosen'"


CORRUPT = sorted(p.name for p in (TESTDATA / "dtb").glob("corrupt-*.dtb"))


@pytest.mark.parametrize("name", CORRUPT)
def test_corrupt_samples_same_error_as_the_model(name: str) -> None:
    # a lookup that fails walks the whole tree, so it meets every defect the model meets
    blob = (TESTDATA / "dtb" / name).read_bytes()
    with pytest.raises(ParseError) as model:
        DeviceTree.parse(blob)
    for fn in (lambda: fdt_raw.get_property(blob, "/no-such-node", "x"),
               lambda: fdt_raw.set_property(blob, "/no-such-node", "x", b"")):
        with pytest.raises(ParseError) as raw:
            fn()
        assert str(raw.value) == str(model.value)


def _small_with_bad_token_after_chosen() -> tuple[bytes, int]:
    tree = DeviceTree.new()
    tree.add_node("/", "chosen")
    tree.set("/chosen", "bootargs", b"quiet\0")
    tree.root.items.append(Node("later"))  # after /chosen (add_node would put it first)
    blob = bytearray(tree.build())
    later = blob.index(b"later\0") - 4
    blob[later:later + 4] = struct.pack(">I", 7)
    return bytes(blob), later


def test_defect_before_the_target_exact_error() -> None:
    blob, at = _small_with_bad_token_after_chosen()
    with pytest.raises(ParseError) as info:
        fdt_raw.get_property(blob, "/later", "x")
    assert str(info.value) == f"dtb: struct.node[/] at offset {at:#x}: bad token 0x00000007"
    with pytest.raises(ParseError) as model:
        DeviceTree.parse(blob)
    assert str(model.value) == str(info.value)


def test_defect_after_the_target_is_not_read(tmp_path: Path) -> None:
    # as fdtget/fdtput: the walk stops at the target, so what follows is neither read nor
    # checked; a set copies it through unchanged (the model path refuses the whole blob)
    blob, at = _small_with_bad_token_after_chosen()
    assert fdt_raw.get_property(blob, "/chosen", "bootargs") == b"quiet\0"
    out = fdt_raw.set_property(blob, "/chosen", "bootargs", b"loud\0")
    old_prop = struct.pack(">III", 3, 6, 0) + b"quiet\0\0\0"
    assert blob.count(old_prop) == 1
    assert out == blob.replace(old_prop, struct.pack(">III", 3, 5, 0) + b"loud\0\0\0\0")
    assert struct.unpack_from(">I", out, at)[0] == 7
    src = tmp_path / "in.dtb"
    src.write_bytes(blob)
    assert dtb_file.read_property(src, "/chosen", "bootargs") == b"quiet\0"


def test_node_with_unit_address_found_by_base_name() -> None:
    tree = DeviceTree.new()
    cpus = tree.add_node("/", "cpus")
    cpus.items.append(Node("cpu@0", [Prop("reg", b"\0\0\0\0", tree._nameoff("reg"))]))
    cpus.items.append(Node("cpu", [Prop("reg", b"\0\0\0\1", tree._nameoff("reg"))]))
    blob = tree.build()
    assert fdt_raw.get_property(blob, "/cpus/cpu", "reg") == b"\0\0\0\0"
    assert fdt_raw.get_property(blob, "/cpus/cpu@0", "reg") == b"\0\0\0\0"
    with pytest.raises(UsageError) as info:
        fdt_raw.get_property(blob, "/cpus/cpu@1", "reg")
    assert str(info.value) == "dtb: no node /cpus/cpu@1"


def test_defect_inside_the_target_node_named_by_its_path() -> None:
    tree = DeviceTree.new()
    tree.add_node("/", "chosen")
    tree.set("/chosen", "bootargs", b"quiet\0")
    chosen = tree.need("/chosen")
    chosen.items.append(Node("sub"))
    blob = bytearray(tree.build())
    at = blob.index(b"sub\0") - 4
    blob[at:at + 4] = struct.pack(">I", 0x10)
    with pytest.raises(ParseError) as info:
        fdt_raw.get_property(bytes(blob), "/chosen", "missing")
    assert str(info.value) == f"dtb: struct.node[/chosen] at offset {at:#x}: bad token 0x00000010"
    # the property comes before the defect: found, as fdtget finds it
    assert fdt_raw.get_property(bytes(blob), "/chosen", "bootargs") == b"quiet\0"


def test_every_truncation_same_error_as_the_model() -> None:
    good = (TESTDATA / "dtb" / "small.dtb").read_bytes()
    for n in range(len(good)):
        cut = good[:n]
        with pytest.raises(ParseError) as model:
            DeviceTree.parse(cut)
        with pytest.raises(ParseError) as raw:
            fdt_raw.get_property(cut, "/chosen", "bootargs")
        assert str(raw.value) == str(model.value)
