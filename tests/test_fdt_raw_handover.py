"""The hand-over patch on the partial tree (fdt_raw.partial_tree) against the full model: same
bytes, same refusals."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import TESTDATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fdt_raw import CORRUPT, blobs

from kimagekit import dtb_file, fdt_raw, ppc_fdt
from kimagekit.devicetree import DeviceTree, Node, Opaque, Prop
from kimagekit.errors import KimageError

MiB = 1 << 20


@st.composite
def handover_blobs(draw: st.DrawFn) -> bytes:
    blob, _ = draw(blobs())
    tree = DeviceTree.parse(blob)
    root = tree.root
    if draw(st.booleans()):
        tree.set("/", "#address-cells", struct.pack(">I", 2))
        tree.set("/", "#size-cells", struct.pack(">I", draw(st.sampled_from([1, 2]))))
    ac, sc = ppc_fdt.root_cells(tree)
    if draw(st.integers(0, 4)):
        mem = Node("memory@0")
        root.items.append(mem)
        reg = (0).to_bytes(4 * ac, "big") + (256 * MiB).to_bytes(4 * sc, "big")
        mem.items += [Prop("device_type", b"memory\0", tree._nameoff("device_type")),
                      Prop("reg", reg, tree._nameoff("reg"))]
    if draw(st.booleans()):
        rsv = Node("reserved-memory")
        root.items.append(rsv)
        child = Node("fw@1000000", [Prop("reg", struct.pack(">QI", 16 * MiB, MiB),
                                         tree._nameoff("reg"))])
        rsv.items += [Prop("#address-cells", struct.pack(">I", 2), tree._nameoff("#address-cells")),
                      child]
    if draw(st.booleans()):
        tree.add_node("/", "chosen") if tree.find("/chosen") is None else None
        chosen = tree.need("/chosen")
        chosen.items.append(Node("sub", [Prop("late-name", b"x\0", tree._nameoff("late-name"))]))
        if draw(st.booleans()):
            start = draw(st.sampled_from([2 * MiB, 32 * MiB]))
            ppc_fdt.set_handover(tree, start, MiB, draw(st.sampled_from(["seed", "ima"])),
                                 check=False)
    deep = [n for p, n in tree.walk() if p != "/" and not p.startswith(("/chosen", "/reserved"))]
    # grandchildren of the root, kept as bytes by the partial read; their names may be the
    # strings table's last, which a delete must then keep
    names = ["only-here", ppc_fdt.IMA_BUFFER, ppc_fdt.SEED_END]
    for node in deep[:3]:
        name = draw(st.sampled_from(names))
        node.items.append(Node("g", [Prop(name, b"\1", tree._nameoff(name))]))
    if draw(st.booleans()) and tree.find("/chosen") is not None:
        start = draw(st.sampled_from([2 * MiB, 32 * MiB]))
        ppc_fdt.set_handover(tree, start, MiB, draw(st.sampled_from(["seed", "ima"])),
                             check=False)
    return tree.build()


def _patch(tree: DeviceTree, op: tuple[str, int, int, str], pack: bool) -> bytes | str:
    try:
        if op[0] == "set":
            ppc_fdt.set_handover(tree, op[1], op[2], op[3])
        elif not ppc_fdt.remove_handover(tree):
            return "nothing removed"
        return tree.build(pack=pack)
    except KimageError as exc:
        return f"{type(exc).__name__}: {exc}"


_ops = st.one_of(
    st.tuples(st.just("set"), st.sampled_from([0, 4 * MiB, 16 * MiB, 255 * MiB, 300 * MiB]),
              st.sampled_from([0, 4096, MiB, 2 * MiB]), st.sampled_from(["seed", "ima"])),
    st.just(("remove", 0, 0, "")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=handover_blobs(), ops=st.lists(_ops, min_size=1, max_size=3), pack=st.booleans())
def test_partial_tree_patches_like_the_model(blob: bytes, ops: list[tuple[str, int, int, str]],
                                            pack: bool) -> None:
    for op in ops:
        partial = fdt_raw.partial_tree(blob)
        assert partial is not None
        assert partial.build() == blob
        got = _patch(partial, op, pack)
        assert got == _patch(DeviceTree.parse(blob), op, pack)
        if isinstance(got, bytes):
            blob = got


def test_partial_tree_keeps_grandchildren_as_bytes() -> None:
    tree = DeviceTree.new()
    soc = tree.add_node("/", "soc")
    soc.items.append(Node("dev@0", [Prop("compatible", b"x\0", tree._nameoff("compatible"))]))
    tree.add_node("/", "chosen").items.append(Node("sub"))
    blob = tree.build()
    partial = fdt_raw.partial_tree(blob)
    assert partial is not None
    soc_items = partial.need("/soc").items
    assert len(soc_items) == 1 and isinstance(soc_items[0], Opaque)
    dev = blob.index(b"dev@0\0") - 4
    assert soc_items[0].raw == blob[dev:dev + 4 + 8 + 12 + 4 + 4]
    assert soc_items[0].max_nameoff == 0
    assert [n.name for n in partial.need("/chosen").children()] == ["sub"]


@pytest.mark.parametrize("name", CORRUPT)
def test_corrupt_samples_left_to_the_full_read(name: str, tmp_path: Path) -> None:
    # header and block defects are refused by the partial read itself, the struct block's by
    # the full read it then leaves the blob to: the same message either way
    blob = (TESTDATA / "dtb" / name).read_bytes()
    with pytest.raises(KimageError) as model:
        DeviceTree.parse(blob)
    try:
        partial = fdt_raw.partial_tree(blob)
    except KimageError as exc:
        assert str(exc) == str(model.value)
    else:
        assert partial is None
    src = tmp_path / "in.dtb"
    src.write_bytes(blob)
    with pytest.raises(KimageError) as via_file:
        dtb_file.patch_handover(src, tmp_path / "out.dtb", start=0, size=4096)
    assert str(via_file.value) == str(model.value)
