"""``setup_new_fdt_ppc64`` (kimagekit/arch/ppc64_fdt.py) on the corpus pseries/powernv dumps:
``/cpus`` rebuilt as ``update_cpus_node`` does (replayed with libfdt), ``/memreserve/`` for the
reserved ranges (read back with dtc and fdtget). Line numbers: linux-source 7.2.13."""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import need_module, need_tool

from kimagekit.arch import ppc64_dt, ppc64_fdt
from kimagekit.arch.ppc64 import DtRequest
from kimagekit.devicetree import DeviceTree, Prop
from kimagekit.errors import RuleError
from kimagekit.image import HandoverStyle
from kimagekit.ppc_fdt import Range

PAGE = 0x10000
PSERIES = "qemu-7.2-ppc64-pseries-smp4-4G-maxmem8G-initrd.dtb"
POWERNV = "qemu-7.2-ppc64-powernv9-kernel-initrd.dtb"
RTAS_BASE = 0x1FFF0000  # what prom_init would have recorded; QEMU's dump has none


def _running(corpus: Path, tmp_path: Path, name: str = PSERIES) -> Path:
    """The corpus dump with what the running kernel adds at boot: /rtas/linux,rtas-base
    (arch/powerpc/kernel/prom_init.c:1882), written with fdtput."""
    out = tmp_path / name
    shutil.copyfile(corpus / "dtb" / name, out)
    if "pseries" in name:
        subprocess.run([need_tool("fdtput"), "-t", "x", str(out), "/rtas", "linux,rtas-base",
                        f"{RTAS_BASE:x}"], check=True)
    return out


def _fdtget(path: Path, node: str, prop: str, kind: str = "x") -> str:
    return subprocess.run([need_tool("fdtget"), "-t", kind, str(path), node, prop],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_firmware_dump_refused(corpus: Path) -> None:
    """ranges.c:340-356: /rtas without linux,rtas-base fails get_reserved_memory_ranges, so
    the load; a firmware dump lacks what prom_init.c:1882 records: refused, not guessed."""
    tree = DeviceTree.parse((corpus / "dtb" / PSERIES).read_bytes())
    with pytest.raises(RuleError) as e:
        ppc64_fdt.reserved_memory_ranges(tree)
    assert str(e.value) == (
        "dtb: /rtas/linux,rtas-base: /rtas has no readable linux,rtas-base: the running kernel "
        "records RTAS there at boot (arch/powerpc/kernel/prom_init.c:1882) and fails the load "
        "without it (ranges.c:351-353); this looks like a firmware dump, not the running "
        "kernel's tree (/sys/firmware/fdt)")


def test_reserved_ranges_rtas_tce_and_reserved_ranges(corpus: Path, tmp_path: Path) -> None:
    """ranges.c:437-453: RTAS, then each pci node's TCE table (ranges.c:248-273; a pci node
    without one is skipped), then the root's reserved-ranges (390-425), merged by
    add_mem_range (199-236: a strict overlap widens the listed range; no sorting)."""
    tree = DeviceTree.parse(_running(corpus, tmp_path).read_bytes())
    assert ppc64_fdt.reserved_memory_ranges(tree) == (Range(RTAS_BASE, 0x85C, "reserved"),)
    pci = next(p for p, n in tree.walk() if tree.get(p, "device_type") == b"pci\0")
    tree.set(pci, "linux,tce-base", struct.pack(">Q", 0x30000000))
    tree.set(pci, "linux,tce-size", struct.pack(">I", 0x200000))
    tree.set("/", "reserved-ranges", struct.pack(">QQQQ", 0x30100000, 0x200000,
                                                 0x8000000, 0x1000))
    assert ppc64_fdt.reserved_memory_ranges(tree) == (
        Range(RTAS_BASE, 0x85C, "reserved"), Range(0x30000000, 0x300000, "reserved"),
        Range(0x8000000, 0x1000, "reserved"))
    tree.set(pci, "linux,tce-size", b"\0\0")
    with pytest.raises(RuleError, match=r"too short: the kernel fails the load \(ranges.c:267"):
        ppc64_fdt.reserved_memory_ranges(tree)


def _libfdt_update_cpus(blob: bytes, rmem: tuple[Range, ...]) -> bytes:
    """core_64.c:491-560 with libfdt: cpu subnodes deleted, each added again with its live
    properties (blob order + the "name" drivers/of/fdt.c:161-182 makes), then the reserve
    entries (file_load_64.c:786-797); fdt_pack."""
    libfdt = need_module("libfdt")
    f = libfdt.Fdt(bytearray(blob))
    f.resize(len(blob) + 0x10000)
    cpus = f.path_offset("/cpus")
    live = []
    off = f.first_subnode(cpus, libfdt.QUIET_NOTFOUND)
    while off >= 0:
        name = f.get_name(off)
        props = []
        p = f.first_property_offset(off, libfdt.QUIET_NOTFOUND)
        while p >= 0:
            prop = f.get_property_by_offset(p)
            props.append((prop.name, bytes(prop)))
            p = f.next_property_offset(p, libfdt.QUIET_NOTFOUND)
        if dict(props).get("device_type") == b"cpu\0":
            live.append((name, [*props, ("name", name.split("@")[0].encode() + b"\x00")]))
            f.del_node(off)
            off = f.first_subnode(cpus, libfdt.QUIET_NOTFOUND)  # simplest: restart
            continue
        off = f.next_subnode(off, libfdt.QUIET_NOTFOUND)
    for name, props in live:
        node = f.add_subnode(cpus, name)
        for pname, value in props:
            f.setprop(node, pname, value)
    for r in rmem:
        assert libfdt.fdt_add_mem_rsv(f._fdt, r.start, r.size) == 0
    f.pack()
    return _zero_pads(bytes(f.as_bytearray()))


def _zero_pads(blob: bytes) -> bytes:
    """libfdt leaves stale bytes in a new value's alignment padding; kimagekit writes zeros."""
    tree = DeviceTree.parse(blob)
    for _, node in tree.walk():
        node.items = [replace(it, pad=b"") if isinstance(it, Prop) else it
                      for it in node.items]
    return tree.build(pack=True)


@pytest.mark.parametrize("name", [PSERIES, POWERNV, "qemu-7.2-ppc64-powernv10.dtb"])
def test_update_cpus_node_is_libfdts(corpus: Path, tmp_path: Path, name: str) -> None:
    """core_64.c:491-560 and file_load_64.c:773-797 on the corpus trees, exact bytes."""
    blob = _running(corpus, tmp_path, name).read_bytes()
    tree = DeviceTree.parse(blob)
    tree.keep_deleted_names = True
    rmem = ppc64_fdt.reserved_memory_ranges(tree)
    assert ppc64_fdt.setup_new_fdt_ppc64(tree, rmem) == ()
    # alignment padding compared as zeros on both sides (libfdt leaves stale bytes there)
    assert _zero_pads(tree.build(pack=True)) == _libfdt_update_cpus(blob, rmem)


def test_new_tree_read_back_with_dtc_and_fdtget(corpus: Path, tmp_path: Path) -> None:
    """The hook (elf_64.c:114-126) on a running pseries tree: the /memreserve/ for RTAS
    (file_load_64.c:786-797) after the initrd's (drivers/of/kexec.c:394); cpu nodes in reverse
    order (fdt_add_subnode puts each first), each with the name the live tree carries."""
    blob = _running(corpus, tmp_path).read_bytes()
    hook = ppc64_dt.chosen_hook(PAGE, running=True)
    out = tmp_path / "new.dtb"
    out.write_bytes(hook(DtRequest(blob, (0x3000000, 0x1000), None, HandoverStyle.IMA, "ro")))
    dts = subprocess.run([need_tool("dtc"), "-I", "dtb", "-O", "dts", str(out)],
                         capture_output=True, text=True, check=True).stdout
    assert [ln for ln in dts.splitlines() if ln.startswith("/memreserve/")] == [
        "/memreserve/\t0x0000000000400000 0x000000000287c918;",  # QEMU's, for its kernel
        "/memreserve/\t0x0000000003000000 0x0000000000001000;",
        f"/memreserve/\t0x{RTAS_BASE:016x} 0x000000000000085c;"]
    listed = subprocess.run([need_tool("fdtget"), "-l", str(out), "/cpus"], capture_output=True,
                            text=True, check=True).stdout.split()
    assert listed == [f"PowerPC,POWER9@{i}" for i in (3, 2, 1, 0)]
    assert _fdtget(out, "/cpus/PowerPC,POWER9@2", "name", "s") == "PowerPC,POWER9"
    assert _fdtget(out, "/cpus/PowerPC,POWER9@2", "reg") == "2"
    assert _fdtget(out, "/chosen", "bootargs", "s") == "ro"


def test_cpu_children_dropped_and_no_cpus_refused() -> None:
    """core_64.c:488-489 copies properties only (a cpu node's children are not copied); no
    /cpus fails the load (core_64.c:528-532)."""
    t = DeviceTree.new()
    t.add_node("/", "cpus")
    t.add_node("/cpus", "cpu@0")
    t.set("/cpus/cpu@0", "device_type", b"cpu\0")
    t.set("/cpus/cpu@0", "name", b"cpu\0")
    t.add_node("/cpus/cpu@0", "l2-cache")
    t.add_node("/cpus", "interrupt-controller")
    assert ppc64_fdt.update_cpus_node(t) == (
        "/cpus/cpu@0: its child nodes are dropped, as update_cpus_node copies properties only",)
    assert [c.name for c in t.need("/cpus").children()] == ["cpu@0", "interrupt-controller"]
    assert [c.name for c in t.need("/cpus/cpu@0").children()] == []
    assert [p.name for p in t.need("/cpus/cpu@0").props()] == ["device_type", "name"]
    t.remove_node("/cpus")
    with pytest.raises(RuleError, match=r"no /cpus node: the kernel fails the load"):
        ppc64_fdt.update_cpus_node(t)


def test_build_dtb_from_running(ppc64le_vmlinux: Path, corpus: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """``build --dtb-from running``: the image's tree carries the RTAS /memreserve/
    (file_load_64.c:786-797); a firmware dump is refused in one line (ranges.c:351-353)."""
    from kimagekit.cli import main
    from kimagekit.image import content, open_image
    from kimagekit.segments import Role

    argv = ["build", "--arch", "ppc64le", "--no-purgatory", "--kernel", str(ppc64le_vmlinux),
            "--dtb-from", "running", "-o", str(tmp_path / "k.img")]
    assert main([*argv, "--dtb", str(corpus / "dtb" / PSERIES)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no readable linux,rtas-base" in err[0]
    assert main([*argv, "--dtb", str(_running(corpus, tmp_path))]) == 0
    with open_image(tmp_path / "k.img") as (info, view):
        seg = info.segment(Role.DTB)
        assert seg is not None
        tree = DeviceTree.parse(bytes(content(view, seg)))
    assert [(r.address, r.size) for r in tree.reservations][-1] == (RTAS_BASE, 0x85C)
    assert next(c.name for c in tree.need("/cpus").children()) == "PowerPC,POWER9@3"
