"""Issue 13, save side: the test kernel (scripts/build_test_kernel.py: IMA_KEXEC, 7.2's
execute-time hand-over, IMA_KEXEC_EXTRA_MEMORY_KB=12) adds its own IMA segment at
``kexec_file_load`` and fills it at reboot; kimagekit must predict both.

One guest boot (``ima_policy=tcb|critical_data``, TPM-bypass) runs ``rk_guest/ima_save.py``: the
list is let settle, files are read (root reads are measured), the test kernel loads itself
(KEXEC_FILE_DEBUG prints the segment table), more files are read, and it reboots into the
loaded kernel, whose script prints its own list. On the host:

- ``kimagekit build`` under the test kernel's ``--loader-config`` with the guest's RAM and the
  list read right before the load gives the kernel's segment table (mem, memsz, bufsz at load,
  entry), the IMA segment included: bufsz 0, memsz ``ALIGN(list + 24 + 12 KiB, PAGE_SIZE)``.
- the list right after the load is the one before plus the ``kexec_load`` entry kimagekit
  models, whose text (the kernel's own record of the list it sized from) names that list's size
  and count: the "before" read is the list the kernel sized from.
- the next kernel's list starts with ``build --ima-events execute``'s hand-over from the list
  read right before the reboot call, byte for byte: those entries, then ``kexec_execute``,
  which the reboot notifier measures just before it suspends measurement and the list is
  dumped. Its text names the list's size and count at that moment; the prediction carries the
  same numbers only when the "reboot" read was the whole list then, so a measurement slipping
  in between the read and the notifier fails the test instead of passing unseen.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from realkernel_harness import ROOT, guest_python, initramfs, run_in_guest, test_kernel

from kimagekit.cli import main as cli_main
from kimagekit.fileio import mapped
from kimagekit.ima_binary import encode_entry
from kimagekit.ima_kexec import HDR_SIZE, segment_size
from kimagekit.ima_kexec_events import kexec_event
from kimagekit.ima_log import iter_entries
from kimagekit.image import read_image
from kimagekit.segments import Role

pytestmark = pytest.mark.realkernel

GUEST_SCRIPT = ROOT / "tests" / "rk_guest" / "ima_save.py"
EXTRA_KB = 12  # scripts/build_test_kernel.py's CONFIG_IMA_KEXEC_EXTRA_MEMORY_KB
POLICY = "ima_policy=tcb|critical_data"
SEGMENT = re.compile(r"segment\[(\d+)\]: buf=0x[0-9a-f]+ bufsz=(0x[0-9a-f]+) "
                     r"mem=(0x[0-9a-f]+) memsz=(0x[0-9a-f]+)")
START = re.compile(r"kexec_file_load: type:0, start:(0x[0-9a-f]+)")


def files(folder: Path, tag: str, n: int) -> Path:
    """N small files of distinct content (each read measures one entry)."""
    folder.mkdir()
    for i in range(n):
        (folder / f"{tag}-{i}").write_bytes(f"{tag} {i}\n".encode() * (i + 1))
    return folder


@dataclass
class Run:
    """What one kernel's script printed."""
    ram: list[str] = field(default_factory=list)  # START-END, for --mem
    lists: dict[str, bytes] = field(default_factory=dict)  # before, after, reboot, next
    load: str = ""
    log: list[str] = field(default_factory=list)
    segments: list[tuple[int, int, int]] = field(default_factory=list)  # mem, memsz, bufsz
    start: int | None = None


def parse(output: str) -> Run:
    run = Run()
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word == "ram":
            a, b = rest.split("-")
            run.ram.append(f"{int(a, 16):#x}-{int(b, 16):#x}")
        elif word in ("before", "after", "reboot", "next"):
            run.lists[word] = bytes.fromhex(rest)
        elif word == "load":
            run.load = rest
        elif word == "log":
            run.log.append(rest)
            if m := SEGMENT.search(rest):
                run.segments.append((int(m[3], 16), int(m[4], 16), int(m[2], 16)))
            if m := START.search(rest):
                run.start = int(m[1], 16)
    return run


def table(image: Path) -> tuple[list[tuple[int, int, int]], int, bytes]:
    """An image's segments as the kernel's table shows them at load (mem, memsz, bufsz at load),
    its entry, and the hand-over's content (the list at execute)."""
    with mapped(image) as view:
        info = read_image(view)
        ho = info.segment(Role.HANDOVER)
        assert ho is not None
        content = bytes(view[ho.offset:ho.offset + ho.bufsz])
        return [(s.mem, s.memsz, s.bufsz_at_load) for s in info.segments], info.entry, content


def test_save_side_equals_kernel(tmp_path: Path) -> None:
    k = test_kernel()
    tmp_path.chmod(0o755)
    rd = initramfs(k)
    (tmp_path / "next.sh").write_text(guest_python("-c", (
        "print('next', open('/sys/kernel/security/ima/binary_runtime_measurements', 'rb')"
        ".read().hex())")) + "\n")
    cmdline = f"console=ttyS0 panic=-1 quiet {POLICY} rkscript={tmp_path / 'next.sh'}"
    (tmp_path / "cmdline").write_text(cmdline)
    first, second = files(tmp_path / "first", "a", 5), files(tmp_path / "second", "b", 7)
    script = guest_python(str(GUEST_SCRIPT), str(k.vmlinuz), str(rd), str(tmp_path / "cmdline"),
                          str(first), str(second)) + "\n"
    r = run_in_guest(k, script, mem="1G", cmdline=f"quiet {POLICY}", timeout=300,
                     quiet_timeout=120)
    assert not r.timed_out, r.console[-3000:]
    assert [(b.release, b.rc) for b in r.blocks] == [(k.version, None), (k.version, 0)], \
        r.console[-3000:]
    got = parse(r.blocks[0].output)
    nxt = parse(r.blocks[1].output).lists["next"]
    assert got.load == "rc=0 errno=0", got.log
    before, after, last = (got.lists[w] for w in ("before", "after", "reboot"))
    listed = list(iter_entries(before))

    # the load: kimagekit's table from the list the kernel sized from
    (tmp_path / "before.bin").write_bytes(before)
    image = tmp_path / "load.img"
    assert cli_main(["build", "--arch", "x86_64", "--kernel", str(k.vmlinuz), "--purgatory-from",
                     str(k.vmlinuz), "--initrd", str(rd), "--cmdline", cmdline,
                     "--mem", ",".join(got.ram),
                     "--loader-config", str(k.config), "--ima", str(tmp_path / "before.bin"),
                     "-o", str(image)]) == 0
    mine, entry, _ = table(image)
    assert mine == got.segments, "\n".join(got.log)
    assert entry == got.start
    memsz = segment_size(len(before) + HDR_SIZE, extra=EXTRA_KB * 1024)
    assert [s for s in mine if s[2] == 0] == [(mine[0][0], memsz, 0)]  # IMA's, added first
    assert f"ima: kexec measurement buffer for the loaded kernel at {mine[0][0]:#x}." in got.log

    # kexec_load, measured right after the sizing: its text is the list sized from
    load_event = kexec_event("kexec_load", memsz, len(before), len(listed))
    assert after == before + encode_entry(load_event)
    assert load_event.fields[2].data == (
        f"kexec_segment_size={memsz};ima_binary_runtime_size={len(before) + 24};"
        f"ima_runtime_measurements_count={len(listed)};").encode()

    # the reboot: the next kernel's list starts with kimagekit's hand-over, entry for entry
    assert last.startswith(after) and len(list(iter_entries(last))) == len(listed) + 1 + 7
    (tmp_path / "reboot.bin").write_bytes(last)
    predicted = tmp_path / "execute.img"
    assert cli_main(["build", "--arch", "x86_64", "--kernel", str(k.vmlinuz), "--purgatory-from",
                     str(k.vmlinuz), "--initrd", str(rd), "--cmdline", cmdline,
                     "--mem", ",".join(got.ram),
                     "--loader-config", str(k.config), "--ima", str(tmp_path / "reboot.bin"),
                     "--handover-size", str(memsz), "--ima-events", "execute",
                     "-o", str(predicted)]) == 0
    at_load, _, handover = table(predicted)
    assert at_load == mine  # the same load: only the list at execute differs
    version, _, _, used, count = struct.unpack_from("<HHIQQ", handover)
    assert (version, used, count) == (1, len(handover), len(list(iter_entries(last))) + 1)
    body = handover[HDR_SIZE:]
    assert nxt[:len(body)] == body
    execute = list(iter_entries(body))[-1]
    assert execute.fields[1].data == b"kexec_execute\0"
    assert execute.fields[2].data == (
        f"kexec_segment_size={memsz};ima_binary_runtime_size={len(last) + 24};"
        f"ima_runtime_measurements_count={count - 1};").encode()
    # then the next kernel's own: boot_aggregate first
    assert next(iter_entries(nxt[len(body):])).path == "boot_aggregate"
    print(f"ima-save: at load {len(listed)} entries ({len(before)} bytes), IMA segment "
          f"{mine[0][0]:#x}+{memsz:#x}; handed over {count} entries ({used} bytes with the "
          f"header); guest {r.seconds:.1f} s")
