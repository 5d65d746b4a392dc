"""Check 1 of the real-kernel suite: kimagekit places an x86-64 image exactly where the running
kernel's own ``kexec_file_load`` places it.

For each Debian kernel (bookworm 6.1, trixie 6.12, sid) and each RAM size (1 GiB; 5 GiB, RAM
above 4 GiB), one guest boot runs five loads of the same kernel file through the kernel's
syscall (``rk_guest/kexec_file.py``): no initrd; a small initrd; a 200 MiB one; a command line of
the longest length the loader accepts, and one byte longer (refused by both). A third boot
reserves RAM (``memmap=``) so that the only range with room for the kernel ends below 16 MiB +
its size: 6.1 places the kernel under its ``pref_address``, 6.9+ refuse (EADDRNOTAVAIL), and so
must kimagekit under each kernel's profile. The kernel prints its segment table (KEXEC_FILE_DEBUG on
6.10+, dyndbg on 6.1); the guest reads the loaded image back through /proc/kcore (its entry,
each segment's bytes as the kernel will copy them, the boot parameters' pages). On the host,
``kimagekit build`` with the guest's System RAM and the kernel's loader profile must give the
same segments (mem, memsz, bufsz), the same entry, the same kernel and initrd bytes, and the same
boot parameters except the fields the running kernel copies from its own state.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from realkernel_harness import SUITES, Kernel, guest_python, kernel, run_in_guest

from kimagekit.cli import main as cli_main
from kimagekit.fileio import mapped
from kimagekit.formats import bzimage as bz
from kimagekit.image import read_image
from kimagekit.kernels import read_bzimage
from kimagekit.segments import Role

pytestmark = pytest.mark.realkernel

GUEST_SCRIPT = Path(__file__).resolve().parent / "rk_guest" / "kexec_file.py"
MEMS = ("1G", "5G")
CASES = ("plain", "initrd-small", "initrd-200M", "cmdline-max", "cmdline-over")
LOW = "low"  # the fragmented-RAM boot's one case
MiB = 1 << 20


def fragmented(k: Kernel) -> str:
    """Guest command line reserving RAM (1 GiB guest) so that the kernel (memsz M = its
    init_size) fits only in [1 MiB, E) with E = 16 MiB + M rounded down to 2 MiB, where top-down
    it lands below 16 MiB; above E, 8 MiB reserved every 28 MiB (20 MiB pieces). nokaslr keeps
    the running kernel at 16 MiB, inside [1 MiB, E): a randomized one lying across reservations
    is re-marked RAM and joins pieces."""
    with mapped(k.vmlinuz) as view:
        memsz = -(-read_bzimage(view).header.get("init_size") // 4096) * 4096
    end = (16 * MiB + memsz) // (2 * MiB) * 2 * MiB // MiB
    return "nokaslr " + " ".join(f"memmap=8M${at}M" for at in range(end, 1000, 28))
KEXEC_FILE_DEBUG = 0x8
MAX_ELFCOREHDR_STR_LEN = 30
# Segments whose buffer is bigger are not hashed in the guest (TCG hashes slowly): the 200 MiB
# initrd (the file itself) is left out.
HASH_LIMIT = 64 << 20


@dataclass
class Load:
    """What the guest's kernel did for one kexec_file_load."""
    rc: str = ""
    log: list[str] = field(default_factory=list)
    segments: list[tuple[int, int, int]] = field(default_factory=list)  # (mem, memsz, bufsz)
    start: int | None = None
    hashes: dict[int, str] = field(default_factory=dict)  # mem -> sha256 of memsz loaded bytes
    pages: dict[int, bytes] = field(default_factory=dict)  # the boot parameters' pages


SEGMENT = re.compile(r"segment\s*\[?(\d+)\]?:? buf=0x[0-9a-f]+ bufsz=(0x[0-9a-f]+) "
                     r"mem=(0x[0-9a-f]+) memsz=(0x[0-9a-f]+)")


def parse_loads(output: str) -> tuple[list[tuple[int, int]], dict[str, Load]]:
    """The guest's System RAM ranges (inclusive) and each case's load."""
    ram: list[tuple[int, int]] = []
    loads: dict[str, Load] = {}
    cur = Load()
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if m := re.fullmatch(r"\s*([0-9a-f]+)-([0-9a-f]+) : System RAM", line):
            ram.append((int(m.group(1), 16), int(m.group(2), 16)))
        elif word == "case":
            cur = loads[rest] = Load()
        elif word == "load":
            cur.rc = line
        elif word == "log":
            cur.log.append(rest)
            if m := SEGMENT.search(rest):
                cur.segments.append((int(m.group(3), 16), int(m.group(4), 16),
                                     int(m.group(2), 16)))
        elif word == "start":
            cur.start = int(rest, 16)
        elif word == "segment":
            mem, _, digest = rest.split()
            cur.hashes[int(mem, 16)] = digest
        elif word == "page":
            mem, data = rest.split()
            cur.pages[int(mem, 16)] = bytes.fromhex(data)
    return ram, loads


def max_cmdline(k: Kernel, over: int = 0) -> str:
    """The longest command line the bzImage loader takes (+ OVER bytes): with its NUL and the
    room it keeps for ``elfcorehdr=``, exactly the kernel's cmdline_size."""
    with mapped(k.vmlinuz) as view:
        limit = read_bzimage(view).header.get("cmdline_size")
    head = "console=ttyS0 rk.pad="
    return head + "x" * (limit - MAX_ELFCOREHDR_STR_LEN - 1 - len(head) + over)


def initrd_files(tmp: Path) -> dict[str, Path]:
    small = tmp / "initrd-small"
    small.write_bytes(bytes((i * 13 + i // 4099) & 0xFF for i in range(300_001)))
    big = tmp / "initrd-200M"
    with big.open("wb") as f:  # sparse: a patterned head and tail around a hole
        f.write(b"rk-initrd-head" * 1000)
        f.truncate(200 << 20)
        f.seek((200 << 20) - 4096)
        f.write(bytes(range(256)) * 16)
    return {"initrd-small": small, "initrd-200M": big}


def case_args(k: Kernel, case: str, files: dict[str, Path]) -> tuple[Path | None, str]:
    if case in ("plain", LOW):
        return None, "console=ttyS0"
    if case in ("cmdline-max", "cmdline-over"):
        return files["initrd-small"], max_cmdline(k, case == "cmdline-over")
    return files[case], "console=ttyS0 root=/dev/ram0"


@pytest.fixture(scope="module")
def guest_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    tmp = tmp_path_factory.mktemp("rk-placement")
    tmp.chmod(0o755)
    return tmp, initrd_files(tmp)


_RUNS: dict[tuple[str, str], tuple[Kernel, list[tuple[int, int]], dict[str, Load], float]] = {}


def guest_loads(suite: str, mem: str, guest_files: tuple[Path, dict[str, Path]]
                ) -> tuple[Kernel, list[tuple[int, int]], dict[str, Load], float]:
    """One boot of SUITE's kernel with MEM of RAM running every case (cached per module run)."""
    if (suite, mem) in _RUNS:
        return _RUNS[(suite, mem)]
    k = kernel(suite)
    tmp, files = guest_files
    new = k.major_minor >= (6, 10)
    flags = KEXEC_FILE_DEBUG if new else 0
    spec = []
    for case in (LOW,) if mem == LOW else CASES:
        rd, cmdline = case_args(k, case, files)
        cl = tmp / f"{k.suite}-{case}.cmdline"
        cl.write_text(cmdline)
        spec.append(f"{case}\t{k.vmlinuz}\t{rd or ''}\t{cl}\t{flags:#x}\n")
    spec_file = tmp / f"{k.suite}-{mem}.spec"
    spec_file.write_text("".join(spec))
    lines = ["grep 'System RAM' /proc/iomem",
             guest_python(str(GUEST_SCRIPT), str(spec_file), str(HASH_LIMIT))]
    # 6.1 prints its table with pr_debug: switched on for the two loader files
    extra = "" if new else 'dyndbg="file kexec_file.c +p; file kexec-bzimage64.c +p"'
    ram_args = (fragmented(k), "1G") if mem == LOW else ("", mem)
    r = run_in_guest(k, "\n".join(lines) + "\n", mem=ram_args[1],
                     cmdline=f"quiet {ram_args[0]} {extra}", timeout=600)
    assert not r.timed_out and r.blocks, r.console[-3000:]
    ram, loads = parse_loads(r.output)
    _RUNS[(suite, mem)] = (k, ram, loads, r.seconds)
    return _RUNS[(suite, mem)]


def build_like(k: Kernel, ram: list[tuple[int, int]], initrd: Path | None, cmdline: str,
               out: Path) -> int:
    """kimagekit build on the guest's RAM under the kernel's own profile (its config)."""
    mem = ",".join(f"{a:#x}-{b:#x}" for a, b in ram)
    argv = ["build", "--arch", "x86_64", "--kernel", str(k.vmlinuz), "--purgatory-from",
            str(k.vmlinuz), "--mem", mem, "--cmdline", cmdline,
            "--loader-config", str(k.config), "-o", str(out)]
    if initrd is not None:
        argv += ["--initrd", str(initrd)]
    return cli_main(argv)


# boot_params fields the running kernel fills from its own state (kimagekit writes them zero,
# or from --mem): screen_info but its ext_mem_k, acpi_rsdp_addr, the e820 table (the firmware
# map the kernel keeps, with page 0 and the reserved ranges), and the RNG seed setup_data the
# kernel chains in (its random bytes; kimagekit takes a seed only as an input)
def running_state_mask(params_len: int, setup_data_at: int | None) -> set[int]:
    mask = set(range(0x00, 0x40)) - {bz.OFF_SCREEN_EXT_MEM_K, bz.OFF_SCREEN_EXT_MEM_K + 1}
    mask |= set(range(0x70, 0x78))
    mask |= {bz.OFF_E820_ENTRIES}
    mask |= set(range(bz.OFF_E820_TABLE,
                      bz.OFF_E820_TABLE + bz.E820_ENTRY_SIZE * bz.E820_MAX_ENTRIES_ZEROPAGE))
    if setup_data_at is not None:
        head = bz.FIELD_OFFSET["setup_data"]
        mask |= set(range(head, head + 8))
        mask |= set(range(setup_data_at, min(params_len,
                                             setup_data_at + 16 + bz.RNG_SEED_LENGTH)))
    return mask


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mem", MEMS)
@pytest.mark.parametrize("suite", SUITES)
def test_placement_equals_kernel(suite: str, mem: str, case: str, tmp_path: Path,
                                 guest_files: tuple[Path, dict[str, Path]],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    k, ram, loads, _ = guest_loads(suite, mem, guest_files)
    load = loads[case]
    rd, cmdline = case_args(k, case, guest_files[1])
    out = tmp_path / "image"
    if case == "cmdline-over":
        # both refuse: the kernel with EINVAL, kimagekit naming the rule
        assert load.rc == "load rc=-1 errno=EINVAL"
        assert build_like(k, ram, rd, cmdline, out) == 2
        assert capsys.readouterr().err == (
            f"kimagekit: error: {k.vmlinuz}: bzImage: setup_header.cmdline_size at offset "
            f"0x238: command line is {len(cmdline) + 1} bytes with its NUL: with the 30 kept "
            f"for elfcorehdr= it exceeds cmdline_size {len(cmdline) + 30}\n")
        return
    assert load.rc == "load rc=0 errno=0", "\n".join(load.log)
    assert build_like(k, ram, rd, cmdline, out) == 0
    with mapped(out) as view:
        info = read_image(view)
        mine = [(s.mem, s.memsz, s.bufsz) for s in info.segments]
        assert mine == load.segments, "kernel log:\n" + "\n".join(load.log)
        assert info.entry == load.start
        for s in info.segments:
            if s.role in (Role.KERNEL, Role.INITRD) and load.hashes.get(s.mem) != "-":
                h = hashlib.sha256(view[s.offset:s.offset + s.bufsz]).hexdigest()
                assert load.hashes[s.mem] == h, f"{s.role} bytes differ"
        bp = info.segment(Role.BOOT_PARAMS)
        assert bp is not None
        params = bytes(view[bp.offset:bp.offset + bp.bufsz])
    theirs = b"".join(load.pages[p] for p in sorted(load.pages))[:len(params)]
    assert len(theirs) == len(params)
    (sd,) = struct.unpack_from("<Q", theirs, bz.FIELD_OFFSET["setup_data"])
    mask = running_state_mask(len(params), sd - bp.mem if sd else None)
    differ = [hex(i) for i in range(len(params)) if i not in mask and params[i] != theirs[i]]
    assert differ == []


@pytest.mark.parametrize("suite", SUITES)
def test_kernel_below_pref_address(suite: str, tmp_path: Path,
                                   guest_files: tuple[Path, dict[str, Path]],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """RAM where the kernel fits only below 16 MiB (its pref_address): 6.1 places it there,
    6.9+ refuse; kimagekit does the same under each kernel's profile."""
    k, ram, loads, _ = guest_loads(suite, LOW, guest_files)
    load = loads[LOW]
    out = tmp_path / "image"
    rc = build_like(k, ram, None, "console=ttyS0", out)
    if k.major_minor < (6, 9):
        assert load.rc == "load rc=0 errno=0", "\n".join(load.log)
        assert rc == 0
        with mapped(out) as view:
            info = read_image(view)
            assert [(s.mem, s.memsz, s.bufsz) for s in info.segments] == load.segments
            assert info.entry == load.start
            kseg = info.segment(Role.KERNEL)
            assert kseg is not None and kseg.mem < 0x1000000
        return
    assert load.rc == "load rc=-1 errno=EADDRNOTAVAIL", "\n".join(load.log)
    assert rc == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"kimagekit: error: kexec: segment\[2\]\(kernel\): no free memory for "
                        r"0x[0-9a-f]+ bytes aligned to 0x200000 in \[0x1000000, "
                        r"0xffffffffffffffff\] \(top-down\)\n", err), err
