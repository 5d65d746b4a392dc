"""The one writer: never over an input, through symlinks, ``-`` to stdout, non-regular outputs
refused, ``0666 & ~umask``, in place keeps mode and owner under a lock, no temp file survives a
kill, and the read-back comparison before the rename."""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from image_helpers import PURGATORY_CORPUS, gen
from kernel_helpers import kgen

from kimagekit import ima_ascii, ima_log, output_files
from kimagekit.cli import main
from kimagekit.errors import OutputError
from kimagekit.fileio import atomic_write
from kimagekit.ima_kexec import build_buffer
from kimagekit.image import content, open_image, verify, write_image
from kimagekit.segments import Role

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "testdata" / "ima" / "small-le.bin"
SAME = "the same file as the input {}: refused (inputs are never overwritten; patch-handover " \
       "has --in-place)"
LOCKED = "--in-place: being rewritten in place by another process (locked): try again when it " \
         "has finished"


def cli(*argv: object, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kimagekit", *map(str, argv)],
                          capture_output=True, timeout=timeout, check=False)


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    got = capsys.readouterr()
    return code, got.out, got.err


@pytest.fixture
def image(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """An x86-64 image with an IMA hand-over that ``patch-handover`` accepts."""
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(kgen.make_bzimage())
    out = tmp_path / "x86.img"
    assert main(["build", "--arch", "x86_64", "--kernel", str(kernel), "--purgatory",
                 str(corpus / PURGATORY_CORPUS), "--ima",
                 str(gen.restorable_list(tmp_path / "ima.bin")), "-o", str(out)]) == 0
    capsys.readouterr()
    return out


def handover_bytes(path: Path) -> bytes:
    with open_image(path) as (info, view):
        ho = info.segment(Role.HANDOVER)
        assert ho is not None
        return bytes(content(view, ho))


def test_output_equal_to_an_input_is_refused(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    lst = tmp_path / "list.bin"
    lst.write_bytes(SMALL.read_bytes())
    (tmp_path / "hard").hardlink_to(lst)
    (tmp_path / "soft").symlink_to("list.bin")
    for name in ("list.bin", "hard", "soft"):
        out = tmp_path / name
        assert run(capsys, "ima", "convert", lst, "--to", "ascii", "-o", out) == (
            2, "", f"kimagekit: error: {out}: -o: {SAME.format(lst)}\n")
    assert run(capsys, "ima", "append", SMALL, lst, "-o", lst) == (
        2, "", f"kimagekit: error: {lst}: -o: {SAME.format(lst)}\n")
    assert lst.read_bytes() == SMALL.read_bytes()
    assert (tmp_path / "soft").is_symlink()
    dtb = tmp_path / "t.dtb"
    dtb.write_bytes((ROOT / "testdata" / "dtb" / "small.dtb").read_bytes())
    assert run(capsys, "dtb", "set", dtb, "/chosen", "bootargs", "x", "--type", "string",
               "-o", dtb) == (
        2, "", f"kimagekit: error: {dtb}: -o: {SAME.format(dtb)}\n")
    img = tmp_path / "x.img"
    write_image(img, gen.x86_like_image())
    before = img.read_bytes()
    assert run(capsys, "extract", img, "kernel", "-o", img) == (
        2, "", f"kimagekit: error: {img}: -o: {SAME.format(img)}\n")
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(kgen.make_bzimage())
    purg = tmp_path / "purgatory.ro"
    purg.write_bytes(gen.make_purgatory())
    assert run(capsys, "build", "--arch", "x86_64", "--kernel", kernel, "--purgatory", purg,
               "-o", purg) == (2, "", f"kimagekit: error: {purg}: -o: {SAME.format(purg)}\n")
    assert img.read_bytes() == before and purg.read_bytes() == gen.make_purgatory()


def test_patch_output_equal_to_the_image_needs_in_place(
        image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.write_bytes(gen.handover_buffer())
    before = image.read_bytes()
    assert run(capsys, "patch-handover", image, "--data", data, "-o", image) == (
        2, "", f"kimagekit: error: {image}: -o: {SAME.format(image)}\n")
    assert image.read_bytes() == before
    code, _, err = run(capsys, "patch-handover", image, "--data", data, "--in-place")
    assert (code, err) == (0, "")
    assert handover_bytes(image) == gen.handover_buffer()


def test_output_through_a_symlink_writes_its_target(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    real = tmp_path / "real" / "list.txt"
    real.parent.mkdir()
    real.write_bytes(b"old")
    real.chmod(0o640)
    link = tmp_path / "link"
    link.symlink_to("real/list.txt")
    code, _, _ = run(capsys, "ima", "convert", SMALL, "--to", "ascii", "-o", link)
    assert code == 0
    assert os.readlink(link) == "real/list.txt"
    assert real.read_bytes() == "".join(ima_ascii.render(ima_log.read_entries(SMALL))).encode()
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["link", "list.txt", "real"]


def test_dash_and_dev_stdout_write_to_stdout(tmp_path: Path) -> None:
    ascii_list = "".join(ima_ascii.render(ima_log.read_entries(SMALL))).encode()
    for name in ("-", "/dev/stdout"):
        p = cli("ima", "convert", SMALL, "--to", "ascii", "-o", name)
        assert (p.returncode, p.stdout, p.stderr.decode()) == (
            0, ascii_list, f"kimagekit: wrote {name}: 9 entries, {len(ascii_list)} bytes "
                           "(ascii)\n")
    img = tmp_path / "x.img"
    write_image(img, gen.x86_like_image())
    with open_image(img) as (info, view):
        kernel = info.segment(Role.KERNEL)
        assert kernel is not None
        expected = bytes(content(view, kernel))
    p = cli("extract", img, "kernel", "-o", "-")
    assert (p.returncode, p.stdout, p.stderr.decode()) == (
        0, expected, f"segment {kernel.index} (kernel): {len(expected)} bytes -> -\n")
    assert os.listdir(tmp_path) == ["x.img"]


def test_non_regular_outputs_and_verified_outputs_to_stdout_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for out in ("/dev/null", str(fifo), str(tmp_path)):
        assert run(capsys, "ima", "convert", SMALL, "--to", "ascii", "-o", out) == (
            2, "", f"kimagekit: error: {out}: -o: not a regular file: refused (-o writes files, "
                   "or - for stdout)\n")
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(kgen.make_bzimage())
    purg = tmp_path / "purgatory.ro"
    purg.write_bytes(gen.make_purgatory())
    assert run(capsys, "build", "--arch", "x86_64", "--kernel", kernel, "--purgatory", purg,
               "-o", "-") == (2, "", "kimagekit: error: -: -o: stdout is refused here: the output "
                                     "is re-read and verified after it is written, so it must be "
                                     "a file\n")


@pytest.mark.parametrize(("umask", "mode"), [(0o027, 0o640), (0o002, 0o664), (0o077, 0o600)])
def test_new_files_get_0666_less_the_umask(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           umask: int, mode: int) -> None:
    out = tmp_path / "out.txt"
    old = os.umask(umask)
    try:
        assert run(capsys, "ima", "convert", SMALL, "--to", "ascii", "-o", out)[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == mode


def test_in_place_keeps_mode_and_owner(image: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    image.chmod(0o604)
    owner = (1234, 5678) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(image, *owner)
    inode = image.stat().st_ino
    data = tmp_path / "data"
    data.write_bytes(gen.handover_buffer())
    assert run(capsys, "patch-handover", image, "--data", data, "--in-place")[0] == 0
    st = image.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o604, *owner)
    # the hand-over is outside the digest: its bytes are written where they lie (same inode)
    assert st.st_ino == inode
    assert handover_bytes(image) == gen.handover_buffer() and verify(image).ok


def test_a_locked_image_is_refused_in_place(image: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.write_bytes(SHORTER)
    before = image.read_bytes()
    with image.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert run(capsys, "patch-handover", image, "--data", data, "--in-place") == (
            2, "", f"kimagekit: error: {image}: {LOCKED}\n")
    assert image.read_bytes() == before
    assert run(capsys, "patch-handover", image, "--data", data, "--in-place")[0] == 0
    assert handover_bytes(image) == SHORTER


# two hand-overs the next kernel takes, told apart by their last entry
SHORTER = build_buffer(gen.restorable_entries()[:-1])

SLOW_PATCH = """
import sys, time
from kimagekit import image
from kimagekit.cli import main
real = image._rebuilt
def slow(*args, **kw):
    print("inside", flush=True)  # the image is read and locked; the write is to come
    time.sleep(1.5)
    return real(*args, **kw)
image._rebuilt = slow
sys.exit(main(sys.argv[1:]))
"""


def test_concurrent_in_place_patches_never_lose_an_update_silently(image: Path,
                                                                   tmp_path: Path) -> None:
    """A second process patching while the first is between its read and its rename gets the
    lock error; once the first has finished, the second lands on top of the first's result."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(SHORTER)
    second.write_bytes(gen.handover_buffer())
    slow = subprocess.Popen([sys.executable, "-c", SLOW_PATCH, "patch-handover", str(image),
                             "--data", str(first), "--in-place"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert slow.stdout is not None
        assert slow.stdout.readline() == b"inside\n"
        p = cli("patch-handover", image, "--data", second, "--in-place")
        assert (p.returncode, p.stdout, p.stderr.decode()) == (
            2, b"", f"kimagekit: error: {image}: {LOCKED}\n")
    finally:
        _, err = slow.communicate(timeout=60)
    assert (slow.returncode, err) == (0, b"")
    assert handover_bytes(image) == SHORTER
    p = cli("patch-handover", image, "--data", second, "--in-place")
    assert (p.returncode, p.stderr) == (0, b"")
    assert handover_bytes(image) == gen.handover_buffer() and verify(image).ok
    assert sorted(os.listdir(tmp_path)) == ["bzImage", "first", "ima.bin", "second", "x86.img"]


CHILD = """
import errno, os, sys, time
from kimagekit import output_files
from kimagekit.fileio import atomic_write
if sys.argv[2] == "named":
    real_open = os.open
    def no_tmpfile(path, flags, *a, **k):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "no O_TMPFILE here")
        return real_open(path, flags, *a, **k)
    os.open = no_tmpfile
def stall(fd):
    print("writing", flush=True)
    time.sleep(60)
os.fsync = stall
atomic_write(sys.argv[1], b"new" * 100000)
"""


@pytest.mark.parametrize("how", ["tmpfile", "named"])
def test_kill_9_mid_write_leaves_no_temp_file(tmp_path: Path, how: str) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"old")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(target), how],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"writing\n"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old"
    left = sorted(os.listdir(tmp_path))
    if how == "tmpfile":  # the unnamed file went with the process
        assert left == ["target"]
        return
    # without O_TMPFILE: a recognisable name, removed by the next write into the folder
    assert left == [f".target.kimagekit-tmp.{child.pid}", "target"]
    atomic_write(tmp_path / "other", b"x")
    assert sorted(os.listdir(tmp_path)) == ["other", "target"]


def test_read_back_mismatch_replaces_nothing(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"old")
    real = output_files._write_all

    def flipped(fd: int, data: memoryview) -> None:
        real(fd, memoryview(bytes([data[0] ^ 1]) + bytes(data[1:])))

    monkeypatch.setattr(output_files, "_write_all", flipped)
    with pytest.raises(OutputError) as err:
        atomic_write(target, b"new contents")
    assert (str(err.value), err.value.file) == ("-o: read-back differs from what was written",
                                                str(target))
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["target"]


def test_a_failing_stdout_is_one_line() -> None:
    """-o - onto a full device, or onto a closed stdout: one error line, exit 2."""
    cmd = [sys.executable, "-m", "kimagekit", "ima", "convert", str(SMALL), "--to", "ascii",
           "-o", "-"]
    with open("/dev/full", "wb") as full:
        p = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, timeout=60, check=False)
    assert (p.returncode, p.stderr.decode()) == (
        2, "kimagekit: error: -: -o: cannot write stdout: No space left on device\n")
    p = subprocess.run(" ".join(cmd) + " >&-", shell=True, stderr=subprocess.PIPE, timeout=60,
                       check=False)
    assert (p.returncode, p.stderr.decode()) == (
        2, "kimagekit: error: -: -o: cannot write stdout: Bad file descriptor\n")


def test_in_place_on_stdin_says_so(image: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(SHORTER)
    with image.open("rb") as f:
        p = subprocess.run([sys.executable, "-m", "kimagekit", "patch-handover", "-", "--data",
                            str(data), "--in-place"], stdin=f, capture_output=True, timeout=60,
                           check=False)
    assert (p.returncode, p.stdout, p.stderr.decode()) == (
        2, b"", "kimagekit: error: -: --in-place: an image on stdin cannot be patched in "
                "place (use -o OUT)\n")
