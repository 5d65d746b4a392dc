"""Boot Debian's ppc64el kernel under ``qemu-system-ppc64 -machine pseries`` (TCG) and run a
shell script in it, as :mod:`realkernel_harness` does for amd64.

The guest: the vmlinux of ``scripts/fetch_artifacts.py ppc64le-vmlinux``, an initramfs of
Debian's ``busybox-static:ppc64el`` (``ppc64le-busybox``) with the kernel's virtio-pci and 9p
modules from the same package, and the harness's init (the script's output on the second
console, ``hvc1``: pseries gives each ``-serial`` an spapr-vty). The host's ``/`` is mounted
read-only at ``/host``: the guest runs binaries cross-compiled for it from there
(``scripts/build_guest_loader.py``), never the host's Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from conftest import debian_artifact
from realkernel_harness import (
    INIT,
    ROOT,
    GuestResult,
    Kernel,
    _fetch_artifacts,
    _missing,
    initramfs,
    run_qemu,
)

VERSION = "6.1.0-50-powerpc64le"
INIT_PPC = INIT.replace("/dev/ttyS1", "/dev/hvc1")


def kernel() -> Kernel:
    """The ppc64el kernel with its 9p modules collected (once) beside it in the cache."""
    vmlinux = debian_artifact("ppc64le-vmlinux")
    fa = _fetch_artifacts()
    d = fa.cache_dir() / f"realkernel-{VERSION}"
    if not (d / "modules.order").is_file():
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tree = vmlinux.parent.parent / "lib" / "modules" / VERSION
        order = fa._collect_modules(tree, tmp / "modules")
        shutil.copyfile(vmlinux, tmp / "vmlinux")
        (tmp / "version").write_text(VERSION + "\n")
        (tmp / "modules.order").write_text("".join(f"{m}.ko\n" for m in order))
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)
    return Kernel("bookworm", VERSION, d)


def guest_initramfs(k: Kernel) -> Path:
    return initramfs(k, busybox=debian_artifact("ppc64le-busybox"), init=INIT_PPC)


def guest_loader() -> Path:
    """The static kexec_load(2) loader for the guest (built once, cached)."""
    if shutil.which("powerpc64le-linux-gnu-gcc") is None:
        _missing("powerpc64le-linux-gnu-gcc is not installed")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_guest_loader.py"),
                          "ppc64le"], check=True, capture_output=True, text=True).stdout
    return Path(out.strip())


def qemu() -> str:
    path = shutil.which("qemu-system-ppc64")
    if path is None:
        _missing("qemu-system-ppc64 is not installed")
    assert path is not None
    return path


def run_pseries(k: Kernel, script: str, *, mem: str = "1G", cmdline: str = "",
                timeout: float = 300.0, quiet_timeout: float | None = None,
                poll: Callable[[str], None] | None = None) -> GuestResult:
    """Boot K on a one-CPU pseries with MEM of RAM, run SCRIPT in its initramfs (see
    :func:`realkernel_harness.run_in_guest`; POLL as :func:`realkernel_harness.run_qemu`)."""
    binary = qemu()
    rd = guest_initramfs(k)
    with tempfile.TemporaryDirectory(prefix="rk-ppc-") as tmp:
        t = Path(tmp)
        t.chmod(0o755)
        (t / "script.sh").write_text(script)
        console, output = t / "console.log", t / "output.log"
        accel = os.environ.get("KIMAGEKIT_QEMU_ACCEL", "tcg")
        args = [binary, "-machine", "pseries", "-accel", accel, "-smp", "1", "-m", mem,
                "-nographic", "-monitor", "none", "-no-reboot", "-vga", "none",
                "-kernel", str(k.dir / "vmlinux"), "-initrd", str(rd),
                "-append", f"console=hvc0 panic=-1 rkscript={t / 'script.sh'} {cmdline}".strip(),
                "-serial", f"file:{console}", "-serial", f"file:{output}",
                "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on"]
        return run_qemu(args, console, output, timeout=timeout, quiet_timeout=quiet_timeout,
                        poll=poll)
