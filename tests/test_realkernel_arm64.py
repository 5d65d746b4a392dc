"""Proof on QEMU ``virt``: Debian's arm64 kernel boots with the device tree ``build --arch arm64``
wrote, the initrd and the IMA hand-over sitting where that tree says.

QEMU stands in for the kernel's relocation code: ``-kernel`` loads the Image (QEMU picks its
place: 2 MiB into RAM; the kernel relocates itself), ``-dtb`` the built tree (packed, as the
kernel packs it; a tree padded to QEMU's 1 MiB dump hangs the boot), and ``-device loader``
each other segment at its address. No ``-append``/``-initrd``: QEMU would rewrite ``/chosen``.
The base tree is QEMU's own (``-machine virt,dumpdtb=``, same options), with a ``/memreserve/``
standing for what the running kernel holds at the bottom of RAM (QEMU's kernel and tree), so no
segment lands on them. Debian's arm64 config has no KEXEC_FILE, hence no HAVE_IMA_KEXEC: the
kernel leaves the list alone (the property stays in ``/chosen``, nothing is restored).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from realkernel_harness import ROOT, _fetch_artifacts, _missing

from kimagekit.arch.build import BuildInputs, build_arm64
from kimagekit.devicetree import DeviceTree
from kimagekit.image import extract
from kimagekit.segments import Role

pytestmark = pytest.mark.realkernel

QEMU = "qemu-system-aarch64"
MACHINE = ("-machine", "virt", "-cpu", "max", "-m", "1G")
# QEMU's direct boot: the Image 2 MiB into RAM, its tree 128 MiB in (no -initrd)
HELD = (0x40000000, 0x08200000)
# rodata=on: block mappings, so memblock=debug's page-table lines do not overflow the early
# log before the console starts (the /memreserve/ lines would be dropped)
CMDLINE = "console=ttyAMA0 memblock=debug rodata=on rdinit=/init panic=-1"
INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
echo "@@a64-begin@@"
echo "cmdline: $(/bin/busybox cat /proc/cmdline)"
for p in linux,ima-kexec-buffer linux,initrd-start linux,initrd-end linux,booted-from-kexec; do
    if [ -e "/proc/device-tree/chosen/$p" ]; then
        echo "chosen $p: $(/bin/busybox od -An -tx1 -v "/proc/device-tree/chosen/$p" \
            | /bin/busybox tr -d ' \n')"
    else
        echo "chosen $p: absent"
    fi
done
echo "@@a64-end@@"
/bin/busybox poweroff -f
"""


def _artifact(name: str) -> Path:
    fa = _fetch_artifacts()
    path = Path(fa.artifact_path(name))
    if not path.is_file():
        _missing(f"{name} is not fetched (scripts/fetch_artifacts.py {name})")
    return path


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _missing(f"{name} is not installed")
    assert path is not None
    return path


def _initramfs(tmp: Path, busybox: Path) -> Path:
    stage = tmp / "rd"
    (stage / "bin").mkdir(parents=True)
    shutil.copyfile(busybox, stage / "bin" / "busybox")
    (stage / "bin" / "busybox").chmod(0o755)
    (stage / "init").write_text(INIT)
    (stage / "init").chmod(0o755)
    out = tmp / "initramfs.cpio"
    with out.open("wb") as f:
        subprocess.run([_tool("cpio"), "-o", "-H", "newc", "--quiet", "-R", "0:0"],
                       input=b"bin\nbin/busybox\ninit\n", stdout=f, cwd=stage, check=True)
    return out


def test_debian_arm64_boots_with_the_built_tree(tmp_path: Path) -> None:
    qemu = _tool(QEMU)
    kernel = _artifact("arm64-vmlinuz")
    rd = _initramfs(tmp_path, _artifact("arm64-busybox"))
    dump = tmp_path / "virt.dtb"
    subprocess.run([qemu, "-machine", f"virt,dumpdtb={dump}", *MACHINE[2:], "-nographic"],
                   check=True, capture_output=True)
    tree = DeviceTree.parse(dump.read_bytes())
    tree.add_reservation(*HELD)
    base = tmp_path / "base.dtb"
    base.write_bytes(tree.build(pack=True))

    start = time.monotonic()
    built = build_arm64(BuildInputs(kernel, tmp_path / "kexec.img", initrd=rd, cmdline=CMDLINE,
                                    ima=ROOT / "testdata" / "ima" / "small-le.kexec"), dtb=base)
    build_s = time.monotonic() - start
    info = built.image
    segs = {s.role: s for s in info.segments}
    ho, rd_seg, dt = segs[Role.HANDOVER], segs[Role.INITRD], segs[Role.DTB]
    files = {}
    for role in (Role.HANDOVER, Role.INITRD, Role.DTB):
        files[role] = tmp_path / f"seg-{role.value}"
        extract(tmp_path / "kexec.img", role.value, files[role])
    # the kernel segment sits above the held range; QEMU's own copy is what runs
    assert segs[Role.KERNEL].mem == HELD[0] + HELD[1]

    console = tmp_path / "console.log"
    start = time.monotonic()
    run = subprocess.run(
        [qemu, *MACHINE, "-nographic", "-monitor", "none", "-no-reboot", "-kernel", str(kernel),
         "-dtb", str(files[Role.DTB]),
         "-device", f"loader,file={files[Role.INITRD]},addr={rd_seg.mem:#x},force-raw=on",
         "-device", f"loader,file={files[Role.HANDOVER]},addr={ho.mem:#x},force-raw=on",
         "-serial", f"file:{console}"],
        capture_output=True, timeout=300, check=False)
    boot_s = time.monotonic() - start
    log = console.read_text(errors="replace")
    assert run.returncode == 0, run.stdout.decode(errors="replace")[-2000:]
    assert "@@a64-end@@" in log, log[-3000:]
    out = log[log.index("@@a64-begin@@"):log.index("@@a64-end@@")]
    print(f"arm64 build {build_s:.2f} s, boot to poweroff {boot_s:.1f} s; dtb at {dt.mem:#x}")

    # the kernel booted with the image's bootargs, initrd and hand-over property
    assert f"cmdline: {CMDLINE}\n" in out
    cells = f"{ho.mem:016x}{ho.memsz:016x}"
    assert f"chosen linux,ima-kexec-buffer: {cells}\n" in out
    assert f"chosen linux,initrd-start: {rd_seg.mem:016x}\n" in out
    assert f"chosen linux,initrd-end: {rd_seg.mem + rd_seg.bufsz:016x}\n" in out
    assert "chosen linux,booted-from-kexec: \n" in out
    # and reserved the hand-over from the tree's /memreserve/ before anything could use it
    last = ho.mem + ho.memsz - 1
    assert (f"memblock_reserve: [{ho.mem:#018x}-{last:#018x}] "
            "early_init_fdt_scan_reserved_mem") in log
