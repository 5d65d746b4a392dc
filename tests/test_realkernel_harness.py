"""The real-kernel harness itself: each suite's kernel boots under QEMU, loads its 9p modules,
sees the host's root, and runs the host's Python (what every realkernel test relies on)."""

from __future__ import annotations

import pytest
from realkernel_harness import SUITES, guest_python, kernel, parse_blocks, run_in_guest

pytestmark = pytest.mark.realkernel


@pytest.mark.parametrize("suite", SUITES)
def test_guest_runs_script_and_host_python(suite: str) -> None:
    k = kernel(suite)
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
