"""``kimagekit load``/``unload`` without root: the dry run's syscall arguments, every refusal
before the syscall, and the kernel's errors explained, through a fake system."""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from image_helpers import gen

from kimagekit import kexec_load
from kimagekit.cli import main
from kimagekit.errors import Refused
from kimagekit.handover import verify_image
from kimagekit.image import open_image, read_image, write_image
from kimagekit.segments import Role

ROOT = Path(__file__).resolve().parent.parent


class FakeSystem:
    """A system whose syscalls are recorded and answer ``load_errno`` / ``reboot_errno``;
    ``files`` stands for /proc and /sys."""

    def __init__(self, *, machine: str = "x86_64", root: bool = True, load_errno: int = 0,
                 reboot_errno: int = errno.EINVAL,
                 files: dict[str, str] | None = None) -> None:
        self._machine, self.root = machine, root
        self.load_errno, self.reboot_errno = load_errno, reboot_errno
        self.files = files or {}
        self.calls: list[tuple[object, ...]] = []
        self.buffers: list[bytes] = []

    def machine(self) -> str:
        return self._machine

    def can_boot(self) -> bool:
        return self.root

    def read(self, path: str) -> str | None:
        return self.files.get(path)

    def kexec_load(self, number: int, entry: int,
                   segments: Sequence[tuple[int, int, int, int]], flags: int) -> int:
        self.calls.append(("kexec_load", number, entry, list(segments), flags))
        # what the kernel copies: bufsz bytes from each buf, read while the call lasts
        self.buffers = [ctypes.string_at(buf, bufsz) for buf, bufsz, _, _ in segments]
        return self.load_errno

    def sync(self) -> None:
        self.calls.append(("sync",))

    def reboot_kexec(self) -> int:
        self.calls.append(("reboot",))
        return self.reboot_errno


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "x.img"
    write_image(p, gen.x86_like_image())
    return p


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSystem:
    """The CLI's system replaced by a fake x86-64 one (root, kexec_load succeeds)."""
    system = FakeSystem()
    monkeypatch.setattr(kexec_load, "LinuxSystem", lambda: system)
    return system


# (index, role, file offset, bufsz, mem, memsz): gen.x86_like_image's table (test_cli_image)
SEGMENTS = [(0, "purgatory", 0x1000, 0x1000, 0x7FFFE000, 0x2000),
            (1, "boot-params", 0x2000, 0x1800, 0x7FFFC000, 0x2000),
            (2, "kernel", 0x4000, 0x6000, 0x1000000, 0xC000),
            (3, "initrd", 0xA000, 0x5000, 0x7FFF7000, 0x5000),
            (4, "handover", 0xF000, 0x3B4, 0x7FFF3000, 0x4000)]
ENTRY = 0x7FFFE010


def _flip(path: Path, role: Role, at: int = 0, bit: int = 0x80) -> None:
    data = bytearray(path.read_bytes())
    seg = read_image(data).segment(role)
    assert seg is not None
    data[seg.offset + at] ^= bit
    path.write_bytes(data)


def test_dry_run_prints_the_exact_call(image: Path, fake: FakeSystem,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", "--dry-run", str(image)]) == 0
    assert capsys.readouterr() == (
        "kexec_load(entry=0x7fffe010, nr_segments=5, segments, flags=0x0 KEXEC_ARCH_DEFAULT): "
        "syscall 246 on x86_64\n"
        " # role               buf      bufsz                mem      memsz\n"
        " 0 purgatory       0x1000     0x1000         0x7fffe000     0x2000\n"
        " 1 boot-params     0x2000     0x1800         0x7fffc000     0x2000\n"
        " 2 kernel          0x4000     0x6000          0x1000000     0xc000\n"
        " 3 initrd          0xa000     0x5000         0x7fff7000     0x5000\n"
        " 4 handover        0xf000      0x3b4         0x7fff3000     0x4000\n"
        f"buf: offset in {image}, mapped privately at load time\n"
        "dry run: nothing loaded\n", "")
    assert fake.calls == []


def test_dry_run_json(image: Path, fake: FakeSystem, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", "--dry-run", "--json", str(image)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "plan": {"file": str(image), "machine": "x86_64", "syscall": "kexec_load",
                 "number": 246, "entry": ENTRY, "nr_segments": 5, "flags": 0,
                 "segments": [{"index": i, "role": r, "buf_offset": o, "bufsz": b, "mem": m,
                               "memsz": z} for i, r, o, b, m, z in SEGMENTS],
                 "warnings": []},
        "loaded": False}
    assert fake.calls == []


def test_dry_run_of_an_image_on_stdin(image: Path) -> None:
    def run(arg: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "kimagekit", "load", "--dry-run", arg],
                              input=stdin, capture_output=True, check=False,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})

    by_name, piped = run(str(image), b""), run("-", image.read_bytes())
    assert (by_name.returncode, by_name.stderr) == (0, b"")
    assert (piped.returncode, piped.stderr) == (0, b"")
    assert piped.stdout == by_name.stdout.replace(f"offset in {image},".encode(),
                                                  b"offset in -,")
    assert b"dry run: nothing loaded" in piped.stdout


def test_dry_run_needs_no_root(image: Path, fake: FakeSystem,
                               capsys: pytest.CaptureFixture[str]) -> None:
    fake.root = False
    assert main(["load", "--dry-run", str(image)]) == 0
    assert capsys.readouterr().out.endswith("dry run: nothing loaded\n")


def test_load_passes_the_image_segments(image: Path, fake: FakeSystem,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", str(image)]) == 0
    assert capsys.readouterr() == (
        f"{image}: loaded through kexec_load: 5 segments, entry 0x7fffe010; boot it with "
        "kexec -e or systemctl kexec\n", "")
    [(name, number, entry, segs, flags)] = fake.calls
    assert (name, number, entry, flags) == ("kexec_load", 246, ENTRY, 0)
    assert [(b, m, z) for _, b, m, z in segs] == [(b, m, z) for *_, b, m, z in SEGMENTS]
    # every buf points at its segment's bytes in the file
    data = image.read_bytes()
    assert fake.buffers == [data[o:o + b] for _, _, o, b, _, _ in SEGMENTS]


def test_loads_the_bytes_it_judged(image: Path, fake: FakeSystem) -> None:
    """The file rewritten after the checks (here: during the call) changes nothing loaded."""
    original = image.read_bytes()
    judged = fake.kexec_load

    def rewrite_then_load(*args: object) -> int:
        image.write_bytes(bytes(len(original)))
        return judged(*args)  # type: ignore[arg-type]

    fake.kexec_load = rewrite_then_load  # type: ignore[method-assign]
    assert kexec_load.load(image, system=fake).loaded
    assert fake.buffers == [original[o:o + b] for _, _, o, b, _, _ in SEGMENTS]


def test_exec_syncs_then_reboots(image: Path, fake: FakeSystem,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    fake.reboot_errno = errno.EPERM
    assert main(["load", "--exec", str(image)]) == 1
    assert [c[0] for c in fake.calls] == ["kexec_load", "sync", "reboot"]
    assert capsys.readouterr() == (
        f"{image}: loaded through kexec_load: 5 segments, entry 0x7fffe010; syncing and "
        "rebooting into it\n",
        f"kimagekit: error: {image}: load: reboot(LINUX_REBOOT_CMD_KEXEC) failed: EPERM: not "
        "permitted: not CAP_SYS_BOOT, kexec_load_disabled, kexec_load_limit_reboot nor "
        "lockdown explains it (a security module or seccomp filter?)\n")


def test_reboot_without_an_image_loaded() -> None:
    system = FakeSystem(reboot_errno=errno.EINVAL)
    with pytest.raises(Refused) as e:
        kexec_load.reboot(system)
    assert str(e.value) == ("load: reboot(LINUX_REBOOT_CMD_KEXEC) failed: EINVAL: no kexec "
                            "image is loaded")
    assert system.calls == [("sync",), ("reboot",)]
    system.reboot_errno = 0  # a reboot that came back
    with pytest.raises(Refused) as e:
        kexec_load.reboot(system)
    assert str(e.value) == ("load: reboot(LINUX_REBOOT_CMD_KEXEC) failed: it returned without "
                            "rebooting")


# --- refusals before the syscall ------------------------------------------------------------------

@pytest.mark.parametrize("machine", ["ppc64le", "aarch64"])
def test_refuses_another_architecture(image: Path, fake: FakeSystem, machine: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    fake._machine = machine
    assert main(["load", "--dry-run", "--force", str(image)]) == 1
    assert capsys.readouterr() == ("", (
        f"kimagekit: error: {image}: load: the image is for x86_64 but this system is "
        f"{machine} (kexec_load boots a kernel of the running architecture only); nothing "
        "loaded\n"))
    assert fake.calls == []


def test_refuses_more_than_16_segments(image: Path) -> None:
    with open_image(image) as (info, _):
        pass
    many = dataclasses.replace(info, segments=info.segments + tuple(
        dataclasses.replace(info.segments[3], index=i) for i in range(5, 17)))
    with pytest.raises(Refused) as e:
        kexec_load.plan_info(many, verify_image(image), str(image), machine="x86_64",
                             force=True)
    assert str(e.value) == ("load: the image has 17 segments, more than kexec_load takes "
                            "(KEXEC_SEGMENT_MAX 16); nothing loaded")


def test_an_image_file_with_17_segments_is_refused_as_it_is_read(
        image: Path, fake: FakeSystem, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(image.read_bytes())
    at = 64 + 6 * 56 + 12 + 12 + 4  # the note descriptor's nr_segments (after 5+1 phdrs)
    assert data[at] == 5
    data[at] = 17
    image.write_bytes(data)
    assert main(["load", "--dry-run", "--force", str(image)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {image}: image: note.nr_segments at offset 0x1ac: nr_segments 17 "
        "exceeds 16\n")


def test_refuses_an_image_that_does_not_verify(image: Path, fake: FakeSystem,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _flip(image, Role.KERNEL)
    why = "the image does not verify: segment 2 (kernel, region 1 at 0x1000000) differs from " \
          "what was sealed"
    assert main(["load", str(image)]) == 1
    assert capsys.readouterr() == ("", (
        f"kimagekit: error: {image}: load: {why}; nothing loaded (--force loads it anyway)\n"))
    assert main(["load", "--dry-run", str(image)]) == 1
    capsys.readouterr()
    assert fake.calls == []
    assert main(["load", "--force", str(image)]) == 0
    assert capsys.readouterr() == (
        f"{image}: loaded through kexec_load: 5 segments, entry 0x7fffe010; boot it with "
        "kexec -e or systemctl kexec\n", f"kimagekit: warning: {image}: --force: {why}\n")
    assert [c[0] for c in fake.calls] == ["kexec_load"]


def test_refuses_a_handover_the_next_kernel_refuses(image: Path, fake: FakeSystem,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _flip(image, Role.HANDOVER, bit=2)  # ima_kexec_hdr.version 1 -> 3
    why = ("hand-over segment 4: the next kernel would refuse it: ima-kexec-buffer: "
           "header.version at offset 0x0: version 3 is not 1: incompatible measurement list")
    assert main(["load", str(image)]) == 1
    assert capsys.readouterr() == ("", (
        f"kimagekit: error: {image}: load: {why}; nothing loaded (--force loads it anyway)\n"))
    assert fake.calls == []
    assert main(["load", "--dry-run", "--force", "--json", str(image)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["plan"]["warnings"] == [why]
    assert err == f"kimagekit: warning: {image}: --force: {why}\n"
    assert fake.calls == []


def test_refuses_without_cap_sys_boot(image: Path, fake: FakeSystem,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    fake.root = False
    assert main(["load", str(image)]) == 1
    assert capsys.readouterr() == ("", (
        f"kimagekit: error: {image}: load: kexec_load needs CAP_SYS_BOOT (run it as root); "
        "nothing loaded\n"))
    assert main(["unload"]) == 1
    assert capsys.readouterr().err == (
        "kimagekit: error: unload: kexec_load needs CAP_SYS_BOOT (run it as root); nothing "
        "unloaded\n")
    assert fake.calls == []


def test_cap_sys_boot_read_from_the_effective_set(monkeypatch: pytest.MonkeyPatch) -> None:
    system = kexec_load.LinuxSystem()
    status = "Name:\tx\nCapEff:\t{:016x}\n"
    monkeypatch.setattr(system, "read", lambda path: status.format(1 << 22))
    assert system.can_boot()
    monkeypatch.setattr(system, "read", lambda path: status.format(~(1 << 22) & (1 << 41) - 1))
    assert not system.can_boot()


# --- the kernel's errors --------------------------------------------------------------------------

EXPLAINED = [
    (errno.EBUSY, "EBUSY: the kexec lock is held: another kexec load, unload or reboot is in "
                  "progress (an image loaded before is simply replaced)"),
    (errno.EINVAL, "EINVAL: the kernel refused the segment list: segments overlap, a bufsz "
                   "exceeds its memsz, a segment is larger than half of RAM, or the flags or "
                   "architecture are not its own"),
    (errno.EADDRNOTAVAIL, "EADDRNOTAVAIL: a segment's mem or end is not page aligned or lies "
                          "past the memory the kernel can load into "
                          "(KEXEC_DESTINATION_MEMORY_LIMIT): not this machine's RAM"),
    (errno.ENOMEM, "ENOMEM: the kernel could not allocate pages to hold the segments until the "
                   "reboot (too large for its free memory)"),
    (errno.ENOSYS, "ENOSYS: no kexec_load here (a kernel built without CONFIG_KEXEC, or a "
                   "sandbox or seccomp filter that hides it)"),
    (errno.EIO, "EIO: Input/output error"),
    (4242, "errno 4242: Unknown error 4242"),
]


@pytest.mark.parametrize(("err", "text"), EXPLAINED)
def test_kernel_errors_explained(image: Path, err: int, text: str) -> None:
    system = FakeSystem(load_errno=err)
    with pytest.raises(Refused) as e:
        kexec_load.load(image, system=system)
    assert str(e.value) == f"load: kexec_load failed: {text}"
    assert [c[0] for c in system.calls] == ["kexec_load"]


@pytest.mark.parametrize(("files", "root", "reasons"), [
    ({"/proc/sys/kernel/kexec_load_disabled": "1\n"}, True,
     "/proc/sys/kernel/kexec_load_disabled is 1 (set once, it stays until reboot)"),
    ({"/proc/sys/kernel/kexec_load_disabled": "0\n",
      "/proc/sys/kernel/kexec_load_limit_reboot": "0\n"}, True,
     "/proc/sys/kernel/kexec_load_limit_reboot is 0 (no loads left until reboot)"),
    ({"/proc/sys/kernel/kexec_load_limit_reboot": "-1\n",
      "/sys/kernel/security/lockdown": "none [integrity] confidentiality\n"}, True,
     "the kernel is locked down (integrity): it takes only signed kernels through "
     "kexec_file_load"),
    ({"/sys/kernel/security/lockdown": "[none] integrity confidentiality\n"}, True,
     "not CAP_SYS_BOOT, kexec_load_disabled, kexec_load_limit_reboot nor lockdown explains it "
     "(a security module or seccomp filter?)"),
    ({"/proc/sys/kernel/kexec_load_disabled": "1\n"}, False,
     "this process lacks CAP_SYS_BOOT (not root); /proc/sys/kernel/kexec_load_disabled is 1 "
     "(set once, it stays until reboot)"),
])
def test_eperm_says_which_switch_forbids_it(image: Path, files: dict[str, str], root: bool,
                                            reasons: str) -> None:
    # root False: CAP_SYS_BOOT lost between the check and the call
    system = FakeSystem(load_errno=errno.EPERM, files=files)
    p = kexec_load.plan(image, system=system)
    system.root = root
    assert kexec_load.explain(errno.EPERM, system, "load") == f"EPERM: not permitted: {reasons}"
    assert p.nr_segments == 5


def test_eperm_through_load(image: Path) -> None:
    system = FakeSystem(load_errno=errno.EPERM,
                        files={"/proc/sys/kernel/kexec_load_disabled": "1\n"})
    with pytest.raises(Refused) as e:
        kexec_load.load(image, system=system)
    assert str(e.value) == ("load: kexec_load failed: EPERM: not permitted: "
                            "/proc/sys/kernel/kexec_load_disabled is 1 (set once, it stays "
                            "until reboot)")


# --- unload ---------------------------------------------------------------------------------------

def test_unload(fake: FakeSystem, capsys: pytest.CaptureFixture[str]) -> None:
    fake.files["/sys/kernel/kexec_loaded"] = "1\n"
    assert main(["unload"]) == 0
    assert capsys.readouterr() == ("unloaded (an image was loaded)\n", "")
    assert fake.calls == [("kexec_load", 246, 0, [], 0)]
    fake.files["/sys/kernel/kexec_loaded"] = "0\n"
    assert main(["unload", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "machine": "x86_64", "syscall": "kexec_load", "number": 246, "entry": 0,
        "nr_segments": 0, "flags": 0, "was_loaded": False, "unloaded": True}


def test_unload_dry_run_and_errors(fake: FakeSystem, capsys: pytest.CaptureFixture[str]) -> None:
    fake.root = False
    assert main(["unload", "--dry-run"]) == 0
    assert capsys.readouterr() == (
        "kexec_load(entry=0x0, nr_segments=0, segments=NULL, flags=0x0 KEXEC_ARCH_DEFAULT): "
        "syscall 246 on x86_64\ndry run: nothing unloaded\n", "")
    fake.root, fake.load_errno = True, errno.EBUSY
    assert main(["unload"]) == 1
    assert capsys.readouterr().err == (
        "kimagekit: error: unload: kexec_load failed: EBUSY: the kexec lock is held: another "
        "kexec load, unload or reboot is in progress\n")
    fake._machine = "s390x"
    assert main(["unload", "--dry-run"]) == 1
    assert capsys.readouterr().err == (
        "kimagekit: error: unload: kimagekit does not know kexec_load's system call number on "
        "s390x (it knows x86_64, ppc64le, ppc64, aarch64, riscv64); nothing unloaded\n")


@pytest.mark.parametrize(("machine", "number"), [("x86_64", 246), ("ppc64le", 268),
                                                 ("ppc64", 268), ("aarch64", 104),
                                                 ("riscv64", 104)])
def test_syscall_numbers(machine: str, number: int) -> None:
    assert kexec_load.unload(dry_run=True, system=FakeSystem(machine=machine)).number == number
