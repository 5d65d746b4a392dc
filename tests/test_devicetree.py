"""The byte-exact DTB layer: round trips, schema agreement, edits vs fdtput, DTS vs dtc."""

from __future__ import annotations

import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import TESTDATA, need_module, need_tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimagekit import dts
from kimagekit.devicetree import NOP, DeviceTree, Node, Prop, decode, encode
from kimagekit.errors import UsageError
from kimagekit.formats import fdt as F

SAMPLES = ["small.dtb", "odd-layout.dtb", "v16.dtb", "padded.dtb"]


def corpus_dtbs(corpus: Path) -> list[Path]:
    found = sorted((corpus / "dtb").glob("*.dtb"))
    assert len(found) == 7
    return found


def test_corpus_round_trips_byte_for_byte(corpus: Path) -> None:
    for path in corpus_dtbs(corpus):
        data = path.read_bytes()
        assert DeviceTree.parse(data).build() == data, path.name


@pytest.mark.parametrize("name", SAMPLES)
def test_synthetic_round_trips(name: str) -> None:
    data = (TESTDATA / "dtb" / name).read_bytes()
    assert DeviceTree.parse(data).build() == data


def test_odd_layout_kept() -> None:
    tree = DeviceTree.parse((TESTDATA / "dtb" / "odd-layout.dtb").read_bytes())
    h = tree.header()
    assert (h.boot_cpuid_phys, len(tree.gap1), len(tree.gap2), len(tree.pad)) == (1, 8, 8, 64)
    assert tree.gap1 == b"\xa5" * 8
    model = tree.root.prop("model")
    assert model is not None and model.pad == b"\xee"  # 15-byte value: one kept non-zero byte
    assert sum(1 for i in tree.root.items if i is NOP) == 1


def _tokens(tree: DeviceTree) -> list[tuple[int, object]]:
    out: list[tuple[int, object]] = []

    def node(n: Node) -> None:
        out.append((F.FDT_BEGIN_NODE, n.name.encode("latin-1")))
        for it in n.items:
            if isinstance(it, Prop):
                out.append((F.FDT_PROP, (len(it.value), it.nameoff, it.value)))
            elif isinstance(it, Node):
                node(it)
            else:
                out.append((F.FDT_NOP, None))
        out.append((F.FDT_END_NODE, None))

    for it in tree.top:
        node(it) if isinstance(it, Node) else out.append((F.FDT_NOP, None))
    out.append((F.FDT_END, None))
    return out


def _schema_tokens(data: bytes) -> list[tuple[int, object]]:
    h = F.fdt_header.parse(data)
    toks = F.fdt_struct_block.parse(data[h.off_dt_struct:])
    out: list[tuple[int, object]] = []
    for t in toks:
        if t.tag == F.FDT_BEGIN_NODE:
            out.append((t.tag, t.body.name))
        elif t.tag == F.FDT_PROP:
            out.append((t.tag, (t.body.len, t.body.nameoff, t.body.data)))
        else:
            out.append((t.tag, None))
    return out


def test_fast_walk_agrees_with_schemas(corpus: Path) -> None:
    files = [*corpus_dtbs(corpus), *(TESTDATA / "dtb" / n for n in SAMPLES[:2])]
    for path in files:
        data = path.read_bytes()
        tree = DeviceTree.parse(data)
        assert _tokens(tree) == _schema_tokens(data), path.name
        h = F.fdt_header.parse(data)
        assert {k: getattr(tree.header(), k) for k in F.HEADER_FIELDS} == \
            {k: h[k] for k in F.HEADER_FIELDS}
        rsv = F.fdt_rsvmap.parse(data[h.off_mem_rsvmap:])
        assert [(r.address, r.size) for r in tree.reservations] == \
            [(e.address, e.size) for e in rsv][:-1]


def test_struct_block_built_by_schema_is_ours() -> None:
    # small.dtb has zero alignment bytes (the schema writes zeros; QEMU's trees do not).
    data = (TESTDATA / "dtb" / "small.dtb").read_bytes()
    h = F.fdt_header.parse(data)
    toks = F.fdt_struct_block.parse(data[h.off_dt_struct:])
    assert F.fdt_struct_block.build(toks) == data[h.off_dt_struct:][:h.size_dt_struct]


def test_v16_stays_v16_and_packs() -> None:
    data = (TESTDATA / "dtb" / "v16.dtb").read_bytes()
    tree = DeviceTree.parse(data)
    assert tree.header().size_dt_struct is None
    tree.set("/chosen", "bootargs", b"quiet\0")  # 16 -> 8 bytes once aligned
    out = tree.build()
    assert len(out) == len(data)  # a padded blob keeps its totalsize, padding grows by 8
    assert out[20:24] == struct.pack(">I", 16)
    assert out[-40:] == bytes(40)
    assert DeviceTree.parse(out).get("/chosen", "bootargs") == b"quiet\0"
    assert len(tree.build(pack=True)) == len(data) - 32 - 8


def test_set_then_delete_restores_padded_blob() -> None:
    data = (TESTDATA / "dtb" / "padded.dtb").read_bytes()
    tree = DeviceTree.parse(data)
    tree.set("/chosen", "linux,new", b"\x01\x02\x03\x04\x05")
    grown = tree.build()
    assert len(grown) == len(data)
    assert DeviceTree.parse(grown).get("/chosen", "linux,new") == b"\x01\x02\x03\x04\x05"
    again = DeviceTree.parse(grown)
    assert again.delete("/chosen", "linux,new")
    assert again.build() == data


def test_growth_without_padding_is_exact() -> None:
    data = (TESTDATA / "dtb" / "small.dtb").read_bytes()
    tree = DeviceTree.parse(data)
    tree.set("/chosen", "bootargs", b"console=hvc0 quiet\0")  # 16 -> 20 bytes once aligned
    out = tree.build()
    assert len(out) == len(data) + 4
    assert struct.unpack_from(">I", out, 4)[0] == len(out)


def test_edit_places_like_libfdt() -> None:
    tree = DeviceTree.parse((TESTDATA / "dtb" / "small.dtb").read_bytes())
    tree.set("/chosen", "a", b"")
    tree.add_node("/", "zz")
    chosen = tree.need("/chosen")
    assert [p.name for p in chosen.props()] == ["a", "bootargs"]
    assert [c.name for c in tree.root.children()] == ["zz", "memory@0", "chosen", "cpus"]
    assert tree.remove_node("/zz") and not tree.remove_node("/zz")
    assert tree.find("/cpus/cpu") is tree.find("/cpus/cpu@0") is not None
    with pytest.raises(UsageError) as exists:
        tree.add_node("/", "chosen")
    assert str(exists.value) == "dtb: node /chosen already exists"
    with pytest.raises(UsageError) as missing:
        tree.set("/nope", "x", b"")
    assert str(missing.value) == "dtb: no node /nope"


def _fdtput_pair(src: bytes, tmp: Path, args: list[str]) -> bytes:
    path = tmp / "fdtput.dtb"
    path.write_bytes(src)
    subprocess.run([need_tool("fdtput"), str(path), *args], check=True)
    return path.read_bytes()


def test_set_and_pack_match_fdtput(corpus: Path, tmp_path: Path) -> None:
    for path in corpus_dtbs(corpus):
        data = path.read_bytes()
        theirs = _fdtput_pair(data, tmp_path, ["-t", "x", "/chosen", "kimagekit,test", "1", "2"])
        tree = DeviceTree.parse(data)
        tree.set("/chosen", "kimagekit,test", encode("u32", [1, 2]))
        assert tree.build(pack=True) == theirs, path.name
        theirs = _fdtput_pair(data, tmp_path, ["-c", "/chosen/kimagekit"])
        tree = DeviceTree.parse(data)
        tree.add_node("/chosen", "kimagekit")
        assert tree.build(pack=True) == theirs, path.name


def test_dts_out_is_dtcs_text(corpus: Path) -> None:
    for path in corpus_dtbs(corpus):
        ours = dts.to_dts(DeviceTree.parse(path.read_bytes()))
        assert ours == path.with_suffix(".dts").read_text(), path.name


@pytest.mark.parametrize("name", SAMPLES)
def test_dts_out_matches_dtc_on_samples(name: str) -> None:
    dtc = need_tool("dtc")
    path = TESTDATA / "dtb" / name
    ref = subprocess.run([dtc, "-q", "-I", "dtb", "-O", "dts", str(path)], check=True,
                         capture_output=True, text=True).stdout
    assert dts.to_dts(DeviceTree.parse(path.read_bytes())) == ref


def test_dts_in_compiles_like_dtc(corpus: Path, tmp_path: Path) -> None:
    dtc = need_tool("dtc")
    for src in sorted((corpus / "dtb").glob("*.dts")):
        ref = subprocess.run([dtc, "-q", "-I", "dts", "-O", "dtb", str(src)], check=True,
                             capture_output=True).stdout
        assert dts.from_dts(src.read_text()).build(pack=True) == ref, src.name


def test_typed_values() -> None:
    assert encode("u32", [1, "0x10"]) == bytes.fromhex("0000000100000010")
    assert encode("u64", [2]) == bytes.fromhex("0000000000000002")
    assert encode("strings", ["a", "bc"]) == b"a\0bc\0"
    assert encode("bytes", ["0a0b"]) == b"\n\x0b"
    assert decode("u32", bytes.fromhex("0000000100000010")) == (1, 16)
    assert decode("u64", bytes.fromhex("0000000000000002")) == (2,)
    assert decode("strings", b"a\0bc\0") == ("a", "bc")
    assert decode("string", b"abc\0") == "abc"
    with pytest.raises(UsageError) as ragged:
        decode("u32", bytes(6))
    assert str(ragged.value) == "6 bytes are not a whole number of u32 values"
    with pytest.raises(UsageError) as unknown:
        encode("u16", [1])
    assert str(unknown.value) == "unknown type 'u16' (one of u32, u64, string, strings, bytes)"


# -- random trees: write them, and dtc and kimagekit must read the same tree back ------------
_name = st.text("abcdefghijklmnopqrstuvwxyz0123456789,-_", min_size=1, max_size=12)
# dtc checks a property called "name" (a string equal to the node's name) and drops it from its
# DTS: a random value there is a tree dtc refuses, not one to compare
_prop_name = _name.filter(lambda n: n != "name")
_value = st.one_of(
    st.binary(max_size=24),
    st.lists(st.integers(0, 2**32 - 1), max_size=5).map(lambda v: encode("u32", v)),
    st.lists(st.text("abcxyz =/.", min_size=1, max_size=8), min_size=1, max_size=3)
    .map(lambda v: encode("strings", v)),
)


@st.composite
def trees(draw: st.DrawFn) -> DeviceTree:
    tree = DeviceTree.new(boot_cpuid_phys=draw(st.integers(0, 7)))
    for _ in range(draw(st.integers(0, 3))):
        tree.add_reservation(draw(st.integers(0, 2**48)), draw(st.integers(1, 2**32)))
    paths = ["/"]
    for _ in range(draw(st.integers(0, 12))):
        parent = draw(st.sampled_from(paths))
        name = draw(_name)
        if tree.need(parent).child(name) is None and "@" not in name:
            tree.add_node(parent, name)
            paths.append(parent.rstrip("/") + "/" + name)
    for _ in range(draw(st.integers(0, 20))):
        tree.set(draw(st.sampled_from(paths)), draw(_prop_name), draw(_value))
    return tree


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), pack=st.booleans())
def test_random_trees_read_the_same_by_dtc(tree: DeviceTree, pack: bool) -> None:
    dtc = need_tool("dtc")
    blob = tree.build(pack=pack)
    again = DeviceTree.parse(blob)
    assert again.build(pack=pack) == blob
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.dtb"
        path.write_bytes(blob)
        run = subprocess.run([dtc, "-I", "dtb", "-O", "dts", str(path)], capture_output=True,
                             check=False)
    assert run.returncode == 0
    assert dts.to_dts(again) == run.stdout.decode("latin-1")
    assert libfdt_full_check(blob) == 0


def libfdt_full_check(blob: bytes) -> int:
    libfdt = need_module("libfdt")
    return int(libfdt.fdt_check_full(bytearray(blob), len(blob)))


def test_dts_in_without_dtc_compiles_like_dtc(corpus: Path) -> None:
    dtc = need_tool("dtc")
    for src in sorted((corpus / "dtb").glob("*.dts")):
        ref = subprocess.run([dtc, "-q", "-I", "dts", "-O", "dtb", str(src)], check=True,
                             capture_output=True).stdout
        assert dts.from_dts_file(src, dtc=None).build() == ref, src.name
