"""The real-kernel harness itself: each suite's kernel boots under QEMU, loads its 9p modules,
sees the host's root, and runs the host's Python (what every realkernel test relies on)."""

from __future__ import annotations

from pathlib import Path

import pytest
from realkernel_harness import (
    SUITES,
    guest_python,
    initramfs,
    kernel,
    parse_blocks,
    run_in_guest,
    test_kernel,
)

pytestmark = pytest.mark.realkernel


@pytest.mark.parametrize("suite", (*SUITES, "test"))
def test_guest_runs_script_and_host_python(suite: str) -> None:
    """Each Debian kernel (its 9p modules insmodded), and the test kernel (all built in)."""
    k = test_kernel() if suite == "test" else kernel(suite)
    script = ("uname -r\n"
              "grep -c 'System RAM' /proc/iomem\n"
              "ls /sys/kernel/security/ima/ascii_runtime_measurements\n"
              + guest_python("-c", "import kimagekit, os; print(os.getuid(), kimagekit.__name__)")
              + "\nexit 3\n")
    r = run_in_guest(k, script, mem="1G", timeout=120)
    assert not r.timed_out
    assert [(b.release, b.rc) for b in r.blocks] == [(k.version, 3)], r.console[-3000:]
    assert r.output == (f"{k.version}\n2\n/sys/kernel/security/ima/ascii_runtime_measurements\n"
                        "0 kimagekit\n")


def test_parse_blocks_keeps_order_and_unfinished_runs() -> None:
    text = ("noise\r\n@@rk-begin 6.1.0-50-amd64@@\r\na\r\nb\r\n@@rk-end 6.1.0-50-amd64 rc=0@@\r\n"
            "@@rk-begin 7.2.13+deb14-amd64@@\r\nhalf")
    blocks = parse_blocks(text)
    assert [(b.release, b.output, b.rc) for b in blocks] == [
        ("6.1.0-50-amd64", "a\nb\n", 0), ("7.2.13+deb14-amd64", "half", None)]


KEXEC_INTO_NEXT = '''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
kernel, initrd, cmdline = sys.argv[1:4]
c = cmdline.encode() + b"\\0"
kfd, ifd = os.open(kernel, os.O_RDONLY), os.open(initrd, os.O_RDONLY)
rc = libc.syscall(320, kfd, ifd, ctypes.c_ulong(len(c)), ctypes.c_char_p(c), ctypes.c_ulong(0))
print("loaded", rc, flush=True)
libc.sync()
libc.reboot(0x45584543)  # LINUX_REBOOT_CMD_KEXEC: returns only on failure
print("kexec failed", ctypes.get_errno(), flush=True)
'''


@pytest.mark.parametrize("suite", SUITES)
def test_a_script_follows_a_kexec_into_the_next_kernel(suite: str, tmp_path: Path) -> None:
    """What checks 2-5 build on: the script kexecs (here through kexec_file_load) into a next
    kernel booted with the same initramfs, whose own rkscript= runs: a second block."""
    k = kernel(suite)
    tmp_path.chmod(0o755)
    (tmp_path / "kx.py").write_text(KEXEC_INTO_NEXT)
    (tmp_path / "next.sh").write_text("echo next kernel\ncat /proc/cmdline\n")
    next_cmdline = f"console=ttyS0 panic=-1 quiet rkscript={tmp_path / 'next.sh'}"
    r = run_in_guest(k, "echo first\n" + guest_python(str(tmp_path / "kx.py"), str(k.vmlinuz),
                                                      str(initramfs(k)), next_cmdline) + "\n",
                     mem="1G", cmdline="quiet", timeout=120)
    assert not r.timed_out
    assert [(b.release, b.output, b.rc) for b in r.blocks] == [
        (k.version, "first\nloaded 0", None),
        (k.version, f"next kernel\n{next_cmdline}\n", 0)], r.console[-3000:]
