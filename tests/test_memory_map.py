"""The memory map: RAM and reservations read from the image's own device tree (ppc64) or e820
table (x86-64), segments and free holes; drawn by ls, inspect and build (text in full) and as
SVG (well-formed, one rect per region, labels present)."""

from __future__ import annotations

import contextlib
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from image_helpers import PPC_INSPECTION, PURGATORY_CORPUS, gen
from kernel_helpers import kgen

from kimagekit.cli import main
from kimagekit.cli.memory_map import human_size
from kimagekit.memory_map import Region, RegionKind, file_map

ROOT = Path(__file__).resolve().parent.parent
SMALL_DTB = ROOT / "testdata" / "dtb" / "small.dtb"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def ppc_image(tmp_path: Path) -> Path:
    """A synthetic vmlinux on testdata's small tree (1 GiB of RAM, one /memreserve/), with an
    initrd and an IMA hand-over."""
    (tmp_path / "vmlinux").write_bytes(gen.make_vmlinux())
    (tmp_path / "initrd").write_bytes(gen.filler(0x1166, 7))
    ima = gen.restorable_list(tmp_path / "ima.bin")
    out = tmp_path / "ppc.img"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["build", "--arch", "ppc64le", "--no-purgatory",
                     "--kernel", str(tmp_path / "vmlinux"),
                     "--dtb", str(SMALL_DTB), "--initrd", str(tmp_path / "initrd"), "--ima",
                     str(ima), "-o", str(out)]) == 0
    return out


PPC_MAP = [
    "memory map (RAM and reservations: the device-tree segment):",
    "  0x0 |KI" + "." * 60 + "DH| 0x40000000",
    "  D device tree, H hand-over, I initrd, K kernel, # reserved, . free, blank: not RAM; "
    "one column 16 MiB",
    "  range                                             size  kind     label",
    "  [0x0, 0x40000000)                                1 GiB  ram      RAM /memory@0",
    "  [0x0, 0x10000)                                  64 KiB  segment  kernel #1",
    "  [0x10000, 0x11166)                            4.35 KiB  reserved /memreserve/ 1",
    "  [0x10000, 0x20000)                              64 KiB  segment  initrd #2",
    "  [0x20000, 0x400000)                           3.88 MiB  free     hole",
    "  [0x400000, 0x401000)                             4 KiB  reserved /memreserve/ 0",
    "  [0x401000, 0x3ffe0000)                     1019.87 MiB  free     hole",
    "  [0x3ffe0000, 0x3fff0000)                        64 KiB  segment  device tree #3",
    "  [0x3fff0000, 0x40000000)                        64 KiB  reserved /memreserve/ 2",
    "  [0x3fff0000, 0x40000000)                        64 KiB  segment  hand-over #0",
]


def test_library_map_of_a_ppc64_image(ppc_image: Path) -> None:
    m = file_map(ppc_image)
    assert m.ram_source == "the device-tree segment"
    assert m.ram == (Region(RegionKind.RAM, 0, 0x40000000, "RAM /memory@0"),)
    assert m.reserved == (Region(RegionKind.RESERVED, 0x400000, 0x401000, "/memreserve/ 0"),
                          Region(RegionKind.RESERVED, 0x10000, 0x11166, "/memreserve/ 1"),
                          Region(RegionKind.RESERVED, 0x3FFF0000, 0x40000000, "/memreserve/ 2"))
    assert [(r.start, r.end, r.label) for r in m.segments] == [
        (0x3FFF0000, 0x40000000, "hand-over #0"), (0, 0x10000, "kernel #1"),
        (0x10000, 0x20000, "initrd #2"), (0x3FFE0000, 0x3FFF0000, "device tree #3")]
    assert m.free == (Region(RegionKind.FREE, 0x20000, 0x400000, "hole"),
                      Region(RegionKind.FREE, 0x401000, 0x3FFE0000, "hole"))
    assert len(m.regions) == 1 + 3 + 4 + 2


def test_ls_and_inspect_draw_the_map(ppc_image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", str(ppc_image)]) == 0
    assert capsys.readouterr().out == (
        " # role                       mem      memsz      bufsz sum     offset\n"
        " 0 handover            0x3fff0000    0x10000      0x3b4 no     0x10000\n"
        " 1 kernel                     0x0    0x10000     0x3000 yes    0x20000\n"
        " 2 initrd                 0x10000    0x10000     0x1166 yes    0x30000\n"
        " 3 dtb                 0x3ffe0000    0x10000      0x21d yes    0x40000\n"
        f"{PPC_INSPECTION}\n\n" + "".join(f"{line}\n" for line in PPC_MAP))
    assert main(["inspect", str(ppc_image)]) == 0
    text = capsys.readouterr().out
    assert text.endswith("".join(f"  {line}\n" for line in PPC_MAP))


def test_build_prints_the_map_and_writes_svg(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "vmlinux").write_bytes(gen.make_vmlinux())
    out, svg = tmp_path / "ppc.img", tmp_path / "map.svg"
    assert main(["build", "--arch", "ppc64le", "--no-purgatory",
                 "--kernel", str(tmp_path / "vmlinux"), "--dtb",
                 str(SMALL_DTB), "-o", str(out), "--svg", str(svg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[3:] == [
        PPC_INSPECTION, "", "memory map (RAM and reservations: the device-tree segment):",
        "  0x0 |K" + "." * 62 + "D| 0x40000000",
        "  D device tree, K kernel, # reserved, . free, blank: not RAM; one column 16 MiB",
        "  range                                             size  kind     label",
        "  [0x0, 0x40000000)                                1 GiB  ram      RAM /memory@0",
        "  [0x0, 0x10000)                                  64 KiB  segment  kernel #0",
        "  [0x10000, 0x400000)                           3.94 MiB  free     hole",
        "  [0x400000, 0x401000)                             4 KiB  reserved /memreserve/ 0",
        "  [0x401000, 0x3fff0000)                     1019.93 MiB  free     hole",
        "  [0x3fff0000, 0x40000000)                        64 KiB  segment  device tree #1",
        lines[-1]]
    assert lines[-1].startswith(f"{out}: entry 0x0, digest ")
    _check_svg(svg.read_text(), file_map(out).regions)


def _check_svg(text: str, regions: tuple[Region, ...]) -> None:
    root = ET.fromstring(text)  # well-formed
    assert root.tag == f"{SVG}svg"
    rects = root.findall(f"{SVG}rect")
    assert len(rects) == len(regions)  # one element per region
    for rect, r in zip(rects, regions, strict=True):
        assert (rect.get("class"), rect.get("data-start"), rect.get("data-end"),
                rect.get("data-label")) == (r.kind.value, f"{r.start:#x}", f"{r.end:#x}",
                                            r.label)
        title = rect.find(f"{SVG}title")
        assert title is not None and title.text == (
            f"{r.kind.value} [{r.start:#x}, {r.end:#x}) {human_size(r.size)} {r.label}")
    labels = [t.text for t in root.findall(f"{SVG}text")]
    for r in regions:
        if r.kind == RegionKind.SEGMENT:
            assert r.label in labels


def test_svg_of_ls_and_inspect_and_to_stdout(ppc_image: Path, tmp_path: Path,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    regions = file_map(ppc_image).regions
    for cmd in ("ls", "inspect"):
        svg = tmp_path / f"{cmd}.svg"
        assert main([cmd, str(ppc_image), "--svg", str(svg)]) == 0
        capfd.readouterr()
        _check_svg(svg.read_text(), regions)
    assert main(["ls", str(ppc_image), "--svg", "-"]) == 0
    got = capfd.readouterr()
    _check_svg(got.out, regions)
    assert got.err.startswith(" # role ")  # the report moved to stderr


def test_svg_of_a_file_that_is_no_image_is_refused(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    svg = tmp_path / "x.svg"
    assert main(["inspect", str(SMALL_DTB), "--svg", str(svg)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: --svg draws a kexec image's memory map; {SMALL_DTB} is "
        "device-tree\n")
    assert not svg.exists()


def test_x86_map_comes_from_the_e820_table(corpus: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bzImage").write_bytes(kgen.make_bzimage())
    out = tmp_path / "x86.img"
    assert main(["build", "--arch", "x86_64", "--kernel", str(tmp_path / "bzImage"),
                 "--purgatory", str(corpus / PURGATORY_CORPUS), "--mem",
                 "0x1000-0x9ffff,0x100000+0x3ff00000", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["ls", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[4:] == [
        "", "memory map (RAM and reservations: the boot_params segment's e820 table):",
        "  0x1000 |" + "." * 61 + "KBP| 0x40000000",
        "  B boot_params, K kernel, P purgatory, . free, blank: not RAM; one column 16.00 MiB",
        "  range                                             size  kind     label",
        "  [0x1000, 0xa0000)                              636 KiB  ram      RAM e820 0",
        "  [0x1000, 0xa0000)                              636 KiB  free     hole",
        "  [0x100000, 0x40000000)                        1023 MiB  ram      RAM e820 1",
        "  [0x100000, 0x3fa00000)                        1017 MiB  free     hole",
        "  [0x3fa00000, 0x3fe00000)                         4 MiB  segment  kernel #2",
        "  [0x3fe00000, 0x3fff9000)                      1.97 MiB  free     hole",
        "  [0x3fff9000, 0x3fffb000)                         8 KiB  segment  boot_params #1",
        "  [0x3fffb000, 0x40000000)                        20 KiB  segment  purgatory #0"]


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1024, "1 KiB"),
                                         (1536, "1.50 KiB"), (64 << 20, "64 MiB"),
                                         ((1 << 30) - 1, "1024.00 MiB"), (3 << 40, "3 TiB")])
def test_human_sizes(n: int, text: str) -> None:
    assert human_size(n) == text


def test_a_tree_that_cannot_be_read_gives_segments_only(ppc_image: Path) -> None:
    from kimagekit.image import open_image
    from kimagekit.segments import Role

    with open_image(ppc_image) as (info, _):
        dtb = info.segment(Role.DTB)
        assert dtb is not None
    data = bytearray(ppc_image.read_bytes())
    data[dtb.offset:dtb.offset + 4] = b"\0\0\0\0"  # the FDT magic gone
    ppc_image.write_bytes(data)
    m = file_map(ppc_image)
    assert (m.ram, m.reserved, m.free) == ((), (), ())
    assert m.ram_source == ("the device-tree segment cannot be read: dtb: header.magic at "
                            "offset 0x0: bad magic 0x00000000 (a DTB starts with 0xd00dfeed)")
    assert len(m.segments) == 4
