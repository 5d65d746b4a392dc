"""``build --crash`` for ppc64 (kimagekit/arch/ppc64_crash.py): the kdump load of linux 7.2
(``arch/powerpc/kexec/elf_64.c``, ``file_load_64.c``, ``ranges.c``, ``crash.c``, ``file_load.c``;
``kernel/crash_core.c``). Line numbers: linux-source 7.2.13."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import need_tool
from image_helpers import ppc_gen

from kimagekit.arch import ppc64_crash as pc
from kimagekit.arch.ppc64_crash import CrashInputs
from kimagekit.cli import main
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import RuleError, UsageError
from kimagekit.image import content, open_image
from kimagekit.segments import Role

GiB, MiB = 1 << 30, 1 << 20
PSERIES = "qemu-7.2-ppc64-pseries-smp4-4G-maxmem8G-initrd.dtb"
RTAS = 0x1FFF0000
NOTES = (0x3FF0000, 0x3FF1000, 0x3FF2000, 0x3FF3000)
CRASH = CrashInputs((512 * MiB, 512 * MiB), ((0, 4 * GiB),), NOTES, 0x218, (0x1F00000, 0x1000))


def _tree(rtas: bool = True) -> DeviceTree:
    t = DeviceTree.new()
    t.set("/", "#address-cells", struct.pack(">I", 2))
    t.set("/", "#size-cells", struct.pack(">I", 2))
    t.add_node("/", "chosen")
    t.add_node("/", "cpus")
    t.add_node("/", "memory@0")
    t.set("/memory@0", "device_type", b"memory\0")
    t.set("/memory@0", "reg", struct.pack(">QQ", 0, 2 * GiB))
    t.add_node("/", "memory@100000000")
    t.set("/memory@100000000", "device_type", b"memory\0")
    t.set("/memory@100000000", "reg", struct.pack(">QQ", 4 * GiB, 2 * GiB))
    if rtas:
        t.add_node("/", "rtas")
        t.set("/rtas", "linux,rtas-base", struct.pack(">I", RTAS))
        t.set("/rtas", "rtas-size", struct.pack(">I", 0x1000))
    return t


def test_crashkernel_as_parse_crashkernel_simple_reads_it() -> None:
    """kernel/crash_reserve.c parse_crashkernel_simple with lib/cmdline.c:153-196 memparse
    (0x hex, 0 octal, K..E suffixes); without @BASE the kernel picks the base: refused."""
    assert pc.parse_crashkernel("512M@0x20000000") == (0x20000000, 512 * MiB)
    assert pc.parse_crashkernel("0x1000@010") == (8, 0x1000)
    assert pc.parse_crashkernel("1G@1G") == (GiB, GiB)
    with pytest.raises(UsageError, match="give SIZE@BASE"):
        pc.parse_crashkernel("256M")
    with pytest.raises(UsageError, match="not SIZE@BASE"):
        pc.parse_crashkernel("256M@1G,high")


def test_crash_memory_ranges() -> None:
    """ranges.c:578-633: memblock's regions with the first 64 KiB cut off (588-594), the crash
    region excluded (crash_core.c:289-345 splits a range), RTAS added (merged into the range
    holding it), the backup region [0, 0xffff] added, sorted."""
    mem = ((0, 2 * GiB), (4 * GiB, 2 * GiB))
    crash = CrashInputs((512 * MiB, 512 * MiB), mem, NOTES, 0x218, (0x1F00000, 0x1000))
    assert pc.crash_memory_ranges(_tree(), crash) == [
        (0, 0xFFFF), (0x10000, 512 * MiB - 1), (GiB, 2 * GiB - 1), (4 * GiB, 6 * GiB - 1)]
    # a first region of at most 64 KiB is the backup region only (ranges.c:588-594)
    small = CrashInputs(crash.crashkernel, ((0, 0x10000), (GiB, GiB)), NOTES, 0x218, (0, 1))
    assert pc.crash_memory_ranges(_tree(rtas=False), small) == [(0, 0xFFFF), (GiB, 2 * GiB - 1)]
    with pytest.raises(UsageError, match="ascending, disjoint"):
        pc.crash_memory_ranges(_tree(), CrashInputs(crash.crashkernel, ((GiB, 1), (0, 1)),
                                                    NOTES, 0x218, (0, 1)))


def test_usable_memory_ranges_rtas_opal_tce() -> None:
    """ranges.c:514-546: [0, crashk_res.end], then RTAS, OPAL (opal-base-address,
    opal-runtime-size: 369-386) and TCE, each merged by add_mem_range (no sorting)."""
    t = _tree()
    t.add_node("/", "ibm,opal")
    t.set("/ibm,opal", "opal-base-address", struct.pack(">Q", 0x30000000))
    t.set("/ibm,opal", "opal-runtime-size", struct.pack(">Q", 0x1000000))
    assert pc.usable_memory_ranges(t, CRASH) == [(0, GiB - 1)]  # both inside [0, 1 GiB)
    t.set("/ibm,opal", "opal-base-address", struct.pack(">Q", 0x7F000000))
    assert pc.usable_memory_ranges(t, CRASH) == [(0, GiB - 1), (0x7F000000, 0x7FFFFFFF)]
    t.delete("/ibm,opal", "opal-runtime-size")
    with pytest.raises(RuleError, match=r"opal-runtime-size: the kernel fails the crash load"):
        pc.usable_memory_ranges(t, CRASH)


def test_elf_headers_bytes() -> None:
    """crash_core.c:174-272: Ehdr, a PT_NOTE per possible CPU (221-228), the vmcoreinfo
    PT_NOTE (231-235), a PT_LOAD per range with vaddr __va (249-268); room for one more phdr
    (197), rounded to ELF_CORE_HEADER_ALIGN; EI_DATA is ELFDATA2LSB even big-endian (209)."""
    ranges = [(0, 0xFFFF), (0x10000, 0x1FFFFFFF)]
    for little in (True, False):
        e = "<" if little else ">"
        h = pc.elf_headers(ranges, CRASH, little)
        assert len(h) == 4096 and h[56 * 9 + 64:] == bytes(4096 - 64 - 56 * 9)
        assert h[:16] == b"\x7fELF\x02\x01\x01" + bytes(9)
        assert struct.unpack_from(e + "HHIQQQIHHHHHH", h, 16) == (
            4, 21, 1, 0, 64, 0, 0, 64, 56, 7, 0, 0, 0)
        assert struct.unpack_from(e + "IIQQQQQQ", h, 64) == (
            4, 0, 0x3FF0000, 0, 0x3FF0000, 0x218, 0x218, 0)
        assert struct.unpack_from(e + "IIQQQQQQ", h, 64 + 56 * 4) == (
            4, 0, 0x1F00000, 0, 0x1F00000, 0x1000, 0x1000, 0)
        assert struct.unpack_from(e + "IIQQQQQQ", h, 64 + 56 * 6) == (
            1, 7, 0x10000, 0xC000000000010000, 0x10000, 0x1FFF0000, 0x1FFF0000, 0)
        # crash.c:420-438: the backup region's phdr points at the backup copy
        synced = pc.sync_backup_region_phdr(h, 0x22880000, little)
        assert struct.unpack_from(e + "Q", synced, 64 + 56 * 5 + 8) == (0x22880000,)
        assert synced[:64 + 56 * 5 + 8] == h[:64 + 56 * 5 + 8]


def test_elfcorehdr_memsz_and_cmdline() -> None:
    """file_load_64.c:377-400: CRASH_MAX_MEMORY_RANGES (8192) minus the ranges, 56 bytes
    each, under CRASH_HOTPLUG; file_load.c:36-58: "elfcorehdr=0x%lx " first, refused past
    COMMAND_LINE_SIZE (2048, arch/powerpc/include/uapi/asm/setup.h:5)."""
    assert pc.elfcorehdr_memsz(4096, 3, CRASH) == 4096
    hot = CrashInputs(CRASH.crashkernel, CRASH.memory, NOTES, 0x218, CRASH.vmcoreinfo, True)
    assert pc.elfcorehdr_memsz(4096, 3, hot) == 4096 + 8189 * 56
    assert pc.kdump_cmdline(0x22890000, "ro") == "elfcorehdr=0x22890000 ro"
    assert pc.kdump_cmdline(0x22890000, "") == "elfcorehdr=0x22890000 "
    with pytest.raises(RuleError) as e:
        pc.kdump_cmdline(0x22890000, "x" * 2026)
    assert str(e.value) == ("kexec: cmdline: elfcorehdr=0x22890000 and the 2027-byte command "
                            "line exceed COMMAND_LINE_SIZE (2048): the kernel fails the load")
    assert pc.kdump_cmdline(0x22890000, "x" * 2025).endswith("x")


def _drconf(t: DeviceTree, v2: bool) -> None:
    t.add_node("/", "ibm,dynamic-reconfiguration-memory")
    d = "/ibm,dynamic-reconfiguration-memory"
    t.set(d, "ibm,lmb-size", struct.pack(">Q", 256 * MiB))
    if v2:  # one set of 3 LMBs from 2 GiB: seq, base, drc, aa, flags
        t.set(d, "ibm,dynamic-memory-v2", struct.pack(">IIQIII", 1, 3, 2 * GiB, 0x80, 0, 8))
    else:  # count, then base, drc, reserved, aa, flags
        t.set(d, "ibm,dynamic-memory", struct.pack(">I" + "QIIII" * 3, 3, *(
            v for i in range(3) for v in (2 * GiB + i * 256 * MiB, 0x80 + i, 0, 0, 8))))


@pytest.mark.parametrize("v2", [False, True])
def test_drconf_and_memory_usable_properties(v2: bool) -> None:
    """file_load_64.c:147-270: per LMB a count then the usable (base, size) pairs in it
    (linux,drconf-usable-memory; drmem.c walks v1 or else v2); per memory node its usable
    pairs or (0, 0) (linux,usable-memory, 248-254); u64 values. Usable here: [0, 1 GiB) and
    the RTAS (merged) and a stray range at 2.25 GiB (an OPAL region)."""
    t = _tree()
    _drconf(t, v2)
    t.add_node("/", "ibm,opal")
    t.set("/ibm,opal", "opal-base-address", struct.pack(">Q", 0x90000000))
    t.set("/ibm,opal", "opal-runtime-size", struct.pack(">Q", 0x100000))
    pc.setup_crash_fdt(t, CRASH, 0x22880000)
    d = "/ibm,dynamic-reconfiguration-memory"
    assert t.get(d, "linux,drconf-usable-memory") == struct.pack(
        ">5Q", 0, 1, 0x90000000, 0x100000, 0)  # LMBs at 2, 2.25, 2.5 GiB
    assert t.get("/memory@0", "linux,usable-memory") == struct.pack(">2Q", 0, GiB)
    assert t.get("/memory@100000000", "linux,usable-memory") == bytes(16)
    # file_load_64.c:753-767: the crashed kernel's memory from 64 KiB, then the backup region
    assert [(r.address, r.size) for r in t.reservations] == [
        (0x10000, 512 * MiB - 0x10000), (0x22880000, 0x10000)]
    with pytest.raises(RuleError, match=r"already has linux,drconf-usable-memory"):
        pc.setup_crash_fdt(t, CRASH, 0x22880000)  # file_load_64.c:156-159


def test_kdump_extra_fdt_size() -> None:
    """file_load_64.c:602-645: (memory_hotplug_max / lmb + 2 * crash size / lmb) u64 entries
    with dynamic memory (numa.c:1337-1368: /rtas ibm,lrdr-capacity, else the last LMB's end,
    at least memblock's end); under CRASH_HOTPLUG, cpu_node_size (569-600) for each possible
    core (crash_notes / threads) not in /cpus."""
    t = _tree()
    assert pc.kdump_extra_fdt_size(t, CRASH) == 0
    _drconf(t, v2=True)
    # max(memblock end 4 GiB, last LMB end 2.75 GiB) / 256 MiB = 16, + 2 * 2
    assert pc.kdump_extra_fdt_size(t, CRASH) == 20 * 8
    t.set("/rtas", "ibm,lrdr-capacity", struct.pack(">QI", 8 * GiB, 8))
    assert pc.kdump_extra_fdt_size(t, CRASH) == 36 * 8
    t.add_node("/cpus", "PowerPC,POWER9@0")
    t.set("/cpus/PowerPC,POWER9@0", "device_type", b"cpu\0")
    t.set("/cpus/PowerPC,POWER9@0", "ibm,ppc-interrupt-server#s", struct.pack(">II", 0, 1))
    hot = CrashInputs(CRASH.crashkernel, CRASH.memory, NOTES, 0x218, CRASH.vmcoreinfo, True)
    # 4 possible CPUs / 2 threads = 2 cores, 1 present; size: "PowerPC,POWER9" (14) + 5 +
    # device_type 11+4, ibm,ppc-interrupt-server#s 26+8, name 4+15
    assert pc.kdump_extra_fdt_size(t, hot) == 36 * 8 + 14 + 5 + 15 + 34 + 19


# --- the whole load through the CLI ------------------------------------------------------------

def _argv(vmlinux: Path, tmp: Path, corpus: Path, *extra: str) -> list[str]:
    dtb = tmp / "running.dtb"
    shutil.copyfile(corpus / "dtb" / PSERIES, dtb)
    subprocess.run([need_tool("fdtput"), "-t", "x", str(dtb), "/rtas", "linux,rtas-base",
                    f"{RTAS:x}"], check=True)
    purg = tmp / "purgatory.o"
    purg.write_bytes(ppc_gen.make_ppc64_purgatory())
    return ["build", "--arch", "ppc64le", "--kernel", str(vmlinux), "--dtb", str(dtb),
            "--purgatory", str(purg), "-o", str(tmp / "kdump.img"), "--cmdline", "ro",
            "--dtb-from", "running", "--crash", "--crashkernel", "512M@0x20000000",
            "--crash-mem", "0-0xffffffff", "--crash-notes", ",".join(map(hex, NOTES)),
            "--crash-notes-size", "0x218", "--vmcoreinfo", "0x1f00000,0x1000", *extra]


def test_build_crash(ppc64le_vmlinux: Path, corpus: Path, tmp_path: Path) -> None:
    """elf_64.c:42-126 on the Debian vmlinux: kernel, purgatory (top-down), backup and ELF core
    headers (bottom-up after the kernel), tree (top-down), all in the crash region
    (kexec_file.c:596); purgatory run_at_load = 1 and backup_start (file_load_64.c:514-534);
    /chosen as drivers/of/kexec.c:409-461; the reservations of file_load_64.c:753-767."""
    assert main(_argv(ppc64le_vmlinux, tmp_path, corpus)) == 0
    with open_image(tmp_path / "kdump.img") as (info, view):
        segs = [(s.role, s.mem, s.memsz, s.bufsz) for s in info.segments]
        assert segs == [(Role.KERNEL, 0x20000000, 0x2880000, 0x2714EA4),
                        (Role.PURGATORY, 0x3FFF0000, 0x10000, 0x2C8),
                        (Role.OTHER, 0x22880000, 0x10000, 0x10000),
                        (Role.OTHER, 0x22890000, 0x10000, 0x1000),
                        (Role.DTB, 0x3FFE0000, 0x10000, segs[4][3])]
        purg = bytes(content(view, info.segments[1]))
        (tmp_path / "new.dtb").write_bytes(bytes(content(view, info.segments[4])))
        (tmp_path / "ehdr").write_bytes(bytes(content(view, info.segments[3])))
        assert bytes(content(view, info.segments[2])) == bytes(0x10000)
    assert struct.unpack_from("<I", purg, 0x5C) == (1,)  # run_at_load
    data = 0x180  # .data follows the 0x180-byte .text in the generated purgatory
    assert struct.unpack_from("<3Q", purg, data) == (0x20000000, 0x3FFE0000, 0x22880000)
    dts = subprocess.run([need_tool("dtc"), "-I", "dtb", "-O", "dts", str(tmp_path / "new.dtb")],
                         capture_output=True, text=True, check=True).stdout
    assert [ln for ln in dts.splitlines() if ln.startswith("/memreserve/")] == [
        "/memreserve/\t0x0000000000400000 0x000000000287c918;",  # QEMU's own
        "/memreserve/\t0x0000000022890000 0x0000000000010000;",  # elfcorehdr (kexec.c:421)
        "/memreserve/\t0x0000000000010000 0x000000001fff0000;",  # crashed kernel's memory
        "/memreserve/\t0x0000000022880000 0x0000000000010000;",  # backup region
        "/memreserve/\t0x000000001fff0000 0x000000000000085c;"]  # RTAS
    chosen = dts[dts.index("\tchosen {"):]
    chosen = chosen[:chosen.index("};")]
    assert "linux,usable-memory-range = <0x00 0x20000000 0x00 0x20000000>;" in chosen
    assert "linux,elfcorehdr = <0x00 0x22890000 0x00 0x10000>;" in chosen
    assert 'bootargs = "elfcorehdr=0x22890000 ro";' in chosen
    got = subprocess.run([need_tool("fdtget"), "-t", "x", str(tmp_path / "new.dtb"),
                          "/memory@0", "linux,usable-memory"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert got == ["0", "0", "0", "40000000"]
    loads = [ln.split() for ln in subprocess.run(
        [need_tool("readelf"), "-W", "-l", str(tmp_path / "ehdr")], capture_output=True,
        text=True, check=True).stdout.splitlines() if ln.strip().startswith(("LOAD", "NOTE"))]
    assert [ln[:4] for ln in loads] == [
        *[["NOTE", f"{n:#08x}", "0x0000000000000000", f"{n:#018x}"] for n in NOTES],
        ["NOTE", "0x1f00000", "0x0000000000000000", "0x0000000001f00000"],
        ["LOAD", "0x22880000", "0xc000000000000000", "0x0000000000000000"],
        ["LOAD", "0x010000", "0xc000000000010000", "0x0000000000010000"],
        ["LOAD", "0x40000000", "0xc000000040000000", "0x0000000040000000"]]


def test_build_crash_hotplug_keeps_the_tree_unpacked(ppc64le_vmlinux: Path, corpus: Path,
                                                     tmp_path: Path) -> None:
    """elf_64.c:122-123: no fdt_pack for a crash load under CRASH_HOTPLUG: the tree keeps the
    buffer size of drivers/of/kexec.c:317-320 (totalsize + cmdline + 0x1000 + the extra of
    file_load_64.c:647-671); the headers' memsz grows (file_load_64.c:377-400)."""
    assert main(_argv(ppc64le_vmlinux, tmp_path, corpus, "--crash-hotplug")) == 0
    dtb_in = (tmp_path / "running.dtb").read_bytes()
    with open_image(tmp_path / "kdump.img") as (info, view):
        dtb = bytes(content(view, info.segments[4]))
        assert info.segments[3].memsz == -(-(0x1000 + (8192 - 3) * 56) // 0x10000) * 0x10000
    # 4 possible CPUs, 1 thread each, 4 present: no CPU room; one reserve entry (RTAS)
    want = len(dtb_in) + len("elfcorehdr=0x22890000 ro") + 0x1000 + 16
    assert struct.unpack_from(">I", dtb, 4) == (want,) and len(dtb) == want


def test_build_crash_refusals(ppc64le_vmlinux: Path, corpus: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """What cannot be known offline is an option or a refusal; no IMA buffer for a crash load
    (ima_kexec.c:169)."""
    argv = _argv(ppc64le_vmlinux, tmp_path, corpus)
    cases = [
        ([a for a in argv if a not in {"--dtb-from", "running"}],
         "--crash needs --dtb-from running"),
        (argv[:argv.index("--vmcoreinfo")], "--crash needs --vmcoreinfo: the running system's "
         "crash facts cannot be known offline"),
        ([*argv, "--ima", str(corpus / "ima/binary/ibmtss-31443b7-ima-sha1.log")],
         "ima_add_kexec_buffer skips KEXEC_TYPE_CRASH"),
        ([*argv[:argv.index("--crash")], "--crashkernel", "1G@1G"], "--crashkernel need --crash"),
    ]
    for args, msg in cases:
        assert main(args) == 2, msg
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
