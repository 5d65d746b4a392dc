"""Boot a real Debian amd64 kernel under QEMU (TCG) and run a shell script in it.

The guest is the kernel of one Debian suite (``scripts/fetch_artifacts.py kernel-SUITE``) with a
small initramfs built here: busybox-static, the kernel's 9p modules, and an init that mounts
proc, sys, devtmpfs, securityfs, a tmpfs on /tmp, and the host's ``/`` read-only over virtio-9p
at ``/host`` (with the guest's /proc, /sys and /dev bound into it, so ``chroot /host`` runs the
host's Python: :func:`guest_python`). Init runs the script named by ``rkscript=`` on the kernel
command line (a host path, read through /host), its output (stdout and stderr) going to the
second serial port between markers, then powers off.

The markers name the running kernel's release, so a script that kexecs into a next kernel booted
with the same initramfs (:func:`initramfs`) and ``rkscript=`` shows a second block:
:attr:`GuestResult.blocks` holds them in order. ``console`` is the first serial port (every
kernel's console=ttyS0 output) whole.

:func:`test_kernel` is issue 13's own build (``scripts/build_test_kernel.py``): everything built
in, so its initramfs has no modules and init loads none.

TCG, not KVM: on these machines KVM with ``-cpu host`` dies on an MSR assertion, and TCG boots
6.1 to userspace in seconds (``KIMAGEKIT_QEMU_ACCEL=kvm`` tries KVM elsewhere).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITES = ("bookworm", "trixie", "sid")
BEGIN = "@@rk-begin"
END = "@@rk-end"

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /host /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
mount -t tmpfs tmpfs /tmp
for m in $(cat /modules.order 2>/dev/null); do
    insmod /modules/$m || echo "rk: insmod $m failed"
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host \
    || echo "rk: 9p mount failed"
for d in proc sys dev; do mount --rbind /$d /host/$d; done
script=
for word in $(cat /proc/cmdline); do
    case "$word" in rkscript=*) script="${word#rkscript=}" ;; esac
done
release=$(uname -r)
if [ -n "$script" ]; then
    echo "@@rk-begin $release@@" > /dev/ttyS1
    sh "/host$script" > /dev/ttyS1 2>&1 < /dev/null
    rc=$?
    echo "@@rk-end $release rc=$rc@@" > /dev/ttyS1
else
    echo "@@rk-begin $release@@" > /dev/ttyS1
    echo "rk: no rkscript= on the command line" > /dev/ttyS1
    echo "@@rk-end $release rc=127@@" > /dev/ttyS1
fi
sync
poweroff -f
"""


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fetch_artifacts() -> ModuleType:
    return _script("fetch_artifacts")


def _missing(what: str) -> None:
    """Skipped locally, a failure in CI (never a silent skip there)."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}, and CI must provide it (.ci/run)")
    pytest.skip(what)


@dataclass(frozen=True)
class Kernel:
    suite: str            # a Debian suite, or "test" for the test kernel
    version: str          # the release (uname -r), e.g. 6.1.0-50-amd64
    dir: Path
    image: str = "vmlinuz"    # paths inside dir
    config_name: str = "config"

    @property
    def vmlinuz(self) -> Path:
        return self.dir / self.image

    @property
    def config(self) -> Path:
        return self.dir / self.config_name

    @property
    def modules(self) -> list[str]:
        """The modules init loads, in order (none for a kernel with everything built in)."""
        order = self.dir / "modules.order"
        return order.read_text().split() if order.is_file() else []

    @property
    def major_minor(self) -> tuple[int, int]:
        m = re.match(r"(\d+)\.(\d+)", self.version)
        assert m, self.version
        return int(m.group(1)), int(m.group(2))


def kernel(suite: str) -> Kernel:
    """The cached kernel of SUITE (skipped locally when not fetched, a failure under CI)."""
    d = _fetch_artifacts().kernel_dir(suite)
    if d is None:
        _missing(f"the {suite} kernel is not fetched (scripts/fetch_artifacts.py kernel-{suite})")
    assert d is not None
    return Kernel(suite, (d / "version").read_text().strip(), d)


def test_kernel() -> Kernel:
    """Issue 13's test kernel (``scripts/build_test_kernel.py``), when built (skipped locally
    when not, a failure under CI). Its release is the bzImage's version string's first word."""
    from kimagekit.fileio import mapped
    from kimagekit.kernels import read_bzimage

    d = _script("build_test_kernel").built()
    if d is None:
        _missing("the test kernel is not built (scripts/build_test_kernel.py)")
    assert d is not None
    k = Kernel("test", "", d, "arch/x86/boot/bzImage", ".config")
    with mapped(k.vmlinuz) as view:
        banner = read_bzimage(view).version_string
    assert banner, f"{k.vmlinuz}: no version string"
    return Kernel("test", banner.split()[0], d, k.image, k.config_name)


test_kernel.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test to collect


def qemu() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        _missing("qemu-system-x86_64 is not installed")
    assert path is not None
    return path


def _busybox() -> Path:
    for cand in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if cand.is_file():
            out = subprocess.run(["file", "-b", str(cand)], capture_output=True, text=True,
                                 check=False).stdout if shutil.which("file") else "static"
            if "dynamically" not in out:
                return cand
    _missing("busybox-static is not installed")
    raise AssertionError  # unreachable


def initramfs(k: Kernel, *, busybox: Path | None = None, init: str = INIT) -> Path:
    """The kernel's initramfs (uncompressed newc cpio), cached by the digest of its content:
    BUSYBOX (default: the host's busybox-static) and INIT."""
    busybox = busybox or _busybox()
    order = k.modules
    h = hashlib.sha256()
    for part in (init.encode(), busybox.read_bytes(), "\n".join(order).encode(),
                 *((k.dir / "modules" / m).read_bytes() for m in order)):
        h.update(hashlib.sha256(part).digest())
    cache = _fetch_artifacts().cache_dir() / "initramfs"
    out = cache / f"{h.hexdigest()[:32]}.cpio"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        stage = Path(tmp) / "root"
        (stage / "bin").mkdir(parents=True)
        (stage / "modules").mkdir()
        shutil.copyfile(busybox, stage / "bin" / "busybox")
        (stage / "bin" / "busybox").chmod(0o755)
        (stage / "init").write_text(init)
        (stage / "init").chmod(0o755)
        (stage / "modules.order").write_text("".join(f"{m}\n" for m in order))
        for m in order:
            shutil.copyfile(k.dir / "modules" / m, stage / "modules" / m)
        names = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
        cpio = shutil.which("cpio")
        if cpio is None:
            _missing("cpio is not installed")
        assert cpio is not None
        part = Path(tmp) / "out.cpio"
        with part.open("wb") as f:
            subprocess.run([cpio, "-o", "-H", "newc", "--quiet", "-R", "0:0"],
                           input="\n".join(names).encode(), stdout=f, cwd=stage, check=True)
        part.rename(out)
    return out


@dataclass(frozen=True)
class Block:
    """One run of a script: the kernel release that ran it, its output, its exit status (None
    when the end marker never came: the script kexec'd, or the guest died or timed out)."""
    release: str
    output: str
    rc: int | None


@dataclass(frozen=True)
class GuestResult:
    console: str                   # ttyS0: every kernel's console output
    blocks: list[Block] = field(default_factory=list)
    seconds: float = 0.0
    timed_out: bool = False

    @property
    def output(self) -> str:
        """The first kernel's script output (what most callers want)."""
        assert self.blocks, f"the guest ran no script; console tail:\n{self.console[-3000:]}"
        return self.blocks[0].output

    @property
    def rc(self) -> int | None:
        assert self.blocks, f"the guest ran no script; console tail:\n{self.console[-3000:]}"
        return self.blocks[0].rc


def parse_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    cur: tuple[str, list[str]] | None = None
    for line in text.replace("\r\n", "\n").split("\n"):
        m = re.fullmatch(r"@@rk-begin (\S+)@@", line)
        if m:
            if cur is not None:
                blocks.append(Block(cur[0], "\n".join(cur[1]), None))
            cur = (m.group(1), [])
            continue
        m = re.fullmatch(r"@@rk-end (\S+) rc=(\d+)@@", line)
        if m and cur is not None:
            blocks.append(Block(cur[0], "\n".join(cur[1]) + ("\n" if cur[1] else ""),
                                int(m.group(2))))
            cur = None
            continue
        if cur is not None:
            cur[1].append(line)
    if cur is not None:
        blocks.append(Block(cur[0], "\n".join(cur[1]), None))
    return blocks


def run_in_guest(k: Kernel, script: str, *, mem: str = "1G", cmdline: str = "",
                 timeout: float = 180.0, initrd: Path | None = None,
                 extra_qemu: tuple[str, ...] = (),
                 quiet_timeout: float | None = None) -> GuestResult:
    """Boot K with MEM of RAM under TCG, run SCRIPT (shell text) as root in its initramfs, and
    return what it printed. CMDLINE is added to the guest kernel's command line. The guest is
    killed after TIMEOUT seconds, or once neither serial port has printed anything for
    QUIET_TIMEOUT seconds (a kexec whose next kernel never comes up): ``timed_out``. A kernel
    that panics reboots, which ends QEMU (``-no-reboot``)."""
    binary = qemu()
    rd = initrd if initrd is not None else initramfs(k)
    with tempfile.TemporaryDirectory(prefix="rk-") as tmp:
        t = Path(tmp)
        t.chmod(0o755)
        (t / "script.sh").write_text(script)
        console, output = t / "console.log", t / "output.log"
        accel = os.environ.get("KIMAGEKIT_QEMU_ACCEL", "tcg")
        args = [binary, "-machine", "pc", "-accel", accel, "-cpu", "max", "-smp", "1",
                "-m", mem, "-nographic", "-monitor", "none", "-no-reboot",
                "-kernel", str(k.vmlinuz), "-initrd", str(rd),
                "-append", f"console=ttyS0 panic=-1 rkscript={t / 'script.sh'} {cmdline}".strip(),
                "-serial", f"file:{console}", "-serial", f"file:{output}",
                "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on",
                "-device", "virtio-rng-pci", *extra_qemu]
        return run_qemu(args, console, output, timeout=timeout, quiet_timeout=quiet_timeout)


def run_qemu(args: list[str], console: Path, output: Path, *, timeout: float,
             quiet_timeout: float | None = None,
             poll: Callable[[str], None] | None = None) -> GuestResult:
    """Run the QEMU command ARGS (its serial ports writing CONSOLE and OUTPUT) to its end, or
    kill it after TIMEOUT seconds or QUIET_TIMEOUT seconds without output. POLL, when given,
    is called about once a second with OUTPUT's text so far (a host side that answers the
    guest)."""
    start = time.monotonic()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    timed_out = False
    seen, quiet_since = -1, start
    while True:
        try:
            qemu_out = proc.communicate(timeout=1.0)[0]
            break
        except subprocess.TimeoutExpired:
            now = time.monotonic()
            size = sum(p.stat().st_size for p in (console, output) if p.exists())
            if size != seen:
                seen, quiet_since = size, now
            if poll is not None and output.exists():
                poll(output.read_text(errors="replace"))
            if now - start > timeout or (quiet_timeout is not None
                                         and now - quiet_since > quiet_timeout):
                proc.kill()
                qemu_out = proc.communicate()[0]
                timed_out = True
                break
    seconds = time.monotonic() - start
    con = console.read_text(errors="replace") if console.exists() else ""
    out = output.read_text(errors="replace") if output.exists() else ""
    if proc.returncode not in (0, -9) and not timed_out:
        raise RuntimeError(f"qemu failed ({proc.returncode}): "
                           f"{qemu_out.decode(errors='replace')[-2000:]}")
    return GuestResult(con, parse_blocks(out), seconds, timed_out)


def guest_python(*args: str, pythonpath: Path = ROOT) -> str:
    """A shell command line running the host's Python (this test process's interpreter) in the
    guest, with PYTHONPATH=PYTHONPATH (this checkout), over the read-only /host."""
    import shlex

    env = f"PYTHONDONTWRITEBYTECODE=1 PYTHONPATH={shlex.quote(str(pythonpath))}"
    return (f"chroot /host /usr/bin/env -i PATH=/usr/bin:/bin {env} "
            f"{shlex.quote(sys.executable)} " + " ".join(shlex.quote(a) for a in args))



def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def built_purgatory(arch: str) -> Path:
    """The kernel's own purgatory for ARCH as ``scripts/build_purgatory.py ARCH`` built it
    (cached; a missing build is skipped locally, a failure in CI)."""
    path: Path | None = _script("build_purgatory").purgatory_path(arch)
    if path is None:
        _missing(f"the {arch} purgatory is not built (scripts/build_purgatory.py {arch})")
    assert path is not None
    return path


def riscv64_kernel() -> Path:
    """Debian sid's riscv64 vmlinuz as ``scripts/fetch_riscv_kernel.py`` fetched it."""
    path: Path | None = _script("fetch_riscv_kernel").kernel_path()
    if path is None:
        _missing("Debian's riscv64 kernel is not fetched (scripts/fetch_riscv_kernel.py)")
    assert path is not None
    return path
