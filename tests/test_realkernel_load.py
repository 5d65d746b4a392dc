"""``kimagekit load --exec`` on real kernels (issue 10, checks 2-5): images built on the host
with the same Debian kernel and the harness's initramfs are loaded in the guest by the product
itself (the host's Python and this checkout over 9p) and booted through ``kexec_load(2)``.

One QEMU run per kernel chains every check: each next kernel (same initramfs, ``rkstage=N`` on
its command line) prints its ``ascii_runtime_measurements`` and the kernel's IMA lines, then
loads the following image:

1. the first kernel loads A, unloads it, loads it again and boots it (a load over a loaded
   image replaces it);
2. A (100 real entries handed over): the list starts with exactly those, then boot_aggregate;
3. B (built with the 100, then ``patch-handover --ima`` the whole 362-entry list): all 362;
4. C (a hand-over whose header version the restore rules refuse, forced in): nothing restored;
5. D (a real list whose 7th entry has the ``ima`` template, forced in): ``inspect`` says the
   restore fails; the kernel keeps the 6 entries before that one;
6. E (one byte of the kernel segment flipped, ``verify`` FAILED, loaded with ``--force``): the
   purgatory finds the digest wrong and the next kernel never comes up (the guest is killed
   after QUIET seconds without output).

The load/unload/load of stage 1 and image D run on bookworm only (EXTRAS_ON): the rest is
required of every kernel, and each kexec costs about 25 s under TCG.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import corpus_dir
from realkernel_harness import SUITES, Kernel, guest_python, initramfs, kernel, run_in_guest

from kimagekit.cli import main
from kimagekit.ima_binary import encode_list
from kimagekit.ima_kexec import build_buffer
from kimagekit.ima_log import read_entries
from kimagekit.image import read_image
from kimagekit.segments import Role

pytestmark = pytest.mark.realkernel

MEM = "1G"
REAL_LIST = "ima/binary/ibmtss-31443b7-ima-sha1.log"  # 362 ima-sig entries, one Fedora boot
MIXED_LIST = "ima/binary/ibmtss-0ab80cc-imatest.log"  # entry[6] has the "ima" template
FIRST = 100
KEPT_BEFORE_IMA = 6
QUIET = 30.0  # seconds without output after the last kexec: the next kernel did not come up
EXTRAS_ON = "bookworm"

STAGE_SCRIPT = """\
stage=1
for w in $(cat /proc/cmdline); do case "$w" in rkstage=*) stage="${w#rkstage=}" ;; esac; done
echo "stage $stage"
if [ "$stage" = 1 ]; then
    for d in /sys/firmware/memmap/*; do
        echo "memmap $(cat $d/start) $(cat $d/end) $(cat $d/type)"
    done
    @FIRST@
else
    echo "@@ima"
    cat /sys/kernel/security/ima/ascii_runtime_measurements
    echo "@@dmesg"
    dmesg | grep -E "ima: |kexec" | sed 's/^\\[[ 0-9.]*\\] //'
    echo "@@load"
fi
case "$stage" in
@CASES@
esac
echo "load exit $?"
"""


def _kimagekit(*args: str) -> int:
    return main(list(args))


def _guest_ram(memmap: list[str]) -> str:
    """``--mem`` from the guest's firmware memory map lines (``memmap START END TYPE``)."""
    ranges = []
    for line in memmap:
        _, start, end, kind = line.split(" ", 3)
        if kind == "System RAM":
            ranges.append(f"{start}-{end}")
    return ",".join(ranges)


@pytest.fixture(scope="module")
def guest_memmap() -> list[str]:
    """The firmware memory map of a MEM guest (SeaBIOS's e820, the same whichever kernel
    boots): the RAM the images are laid out in, probed once."""
    r = run_in_guest(kernel("bookworm"), 'for d in /sys/firmware/memmap/*; do '
                     'echo "memmap $(cat $d/start) $(cat $d/end) $(cat $d/type)"; done\n',
                     mem=MEM, timeout=120)
    assert r.rc == 0, r.console[-3000:]
    lines = r.output.splitlines()
    assert lines and all(line.startswith("memmap ") for line in lines), r.output
    return lines


def _ascii(list_path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    capsys.readouterr()
    assert _kimagekit("ima", "show", str(list_path), "--ascii") == 0
    return capsys.readouterr().out.splitlines()


def _build(k: Kernel, tmp: Path, stage: int, ram: str, ima: Path, name: str,
           *extra: str) -> Path:
    out = tmp / name
    cmdline = (f"console=ttyS0 panic=-1 rkscript={tmp / 'stage.sh'} rkstage={stage} "
               "ima_policy=tcb")
    assert _kimagekit("build", "--arch", "x86_64", "--kernel", str(k.vmlinuz),
                      "--purgatory", str(tmp / "purgatory.ro"), "--initrd", str(initramfs(k)),
                      "--cmdline", cmdline, "--ima", str(ima), "--mem", ram,
                      "-o", str(out), *extra) == 0
    return out


def _split(output: str) -> dict[str, list[str]]:
    """A stage's output by section: head (before @@ima), ima, dmesg, load."""
    parts: dict[str, list[str]] = {"head": []}
    cur = "head"
    for line in output.splitlines():
        if line in ("@@ima", "@@dmesg", "@@load"):
            cur = line[2:]
            parts[cur] = []
        else:
            parts[cur].append(line)
    return parts


def _has_run(lines: list[str], run: list[str]) -> bool:
    """``run`` appears in ``lines`` as consecutive lines."""
    return any(lines[i:i + len(run)] == run for i in range(len(lines)))


def _restore_verdict(image: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert _kimagekit("inspect", "--json", str(image)) == 1  # the hand-over is damage
    ima: dict[str, object] = json.loads(capsys.readouterr().out)["summary"]["handover"]["ima"]
    return ima


@pytest.mark.parametrize("suite", SUITES)
def test_images_boot_through_kimagekit_load(suite: str, tmp_path: Path, guest_memmap: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    k = kernel(suite)
    corpus = corpus_dir()
    if corpus is None:
        pytest.fail("the real-file corpus (../shared/corpus) is missing")
    extras = suite == EXTRAS_ON  # load/unload/load, and the refusal at entry[6]
    tmp_path.chmod(0o755)  # QEMU's 9p server reads it for the guest
    ram = _guest_ram(guest_memmap)
    assert _kimagekit("extract-purgatory", str(k.vmlinuz), "-o",
                      str(tmp_path / "purgatory.ro")) == 0

    real = corpus / REAL_LIST
    first = tmp_path / "first.bin"
    first.write_bytes(encode_list(read_entries(real)[:FIRST], "<"))
    expect_first, expect_all = _ascii(first, capsys), _ascii(real, capsys)
    assert (len(expect_first), len(expect_all)) == (FIRST, 362)
    expect_mixed = _ascii(corpus / MIXED_LIST, capsys)[:KEPT_BEFORE_IMA]

    # the images, in the order the chain boots them (stage n + 1 boots images[n])
    images: list[Path] = []

    def build(*extra: str) -> Path:
        out = _build(k, tmp_path, len(images) + 2, ram, first, "ABCDE"[len(images)], *extra)
        images.append(out)
        return out

    a = build()
    b = build("--handover-size", "0x10000")  # room for the longer list
    assert _kimagekit("patch-handover", str(b), "--ima", str(real), "--in-place") == 0
    c = build()
    bad_header = bytearray(build_buffer(read_entries(first)))
    bad_header[0] = 2  # ima_kexec_hdr.version
    (tmp_path / "bad-header").write_bytes(bad_header)
    assert _kimagekit("patch-handover", str(c), "--data", str(tmp_path / "bad-header"),
                      "--in-place", "--force") == 0
    if extras:
        d = build()
        assert _kimagekit("patch-handover", str(d), "--ima", str(corpus / MIXED_LIST),
                          "--in-place", "--force") == 0
    e = build()
    data = bytearray(e.read_bytes())
    kseg = read_image(bytes(data)).segment(Role.KERNEL)
    assert kseg is not None
    data[kseg.offset + 0x1000] ^= 0x01
    e.write_bytes(data)

    # what the host predicts: verify fails E; inspect says the restore rules refuse C and D
    capsys.readouterr()
    assert _kimagekit("verify", str(e)) == 1
    tamper = f"segment 3 (kernel, region 1 at {kseg.mem:#x}) differs from what was sealed"
    assert capsys.readouterr().out == f"FAILED: {tamper}\n"
    verdict = {c: _restore_verdict(c, capsys)}
    assert (verdict[c]["restored"], verdict[c]["restore_error"]) == (
        None, "ima-kexec-buffer: header.version at offset 0x0: version 2 is not 1: "
              "incompatible measurement list")
    if extras:
        verdict[d] = _restore_verdict(d, capsys)
        # refused at entry[6]: the kernel stops there and keeps the six before it
        assert verdict[d]["restored"] == KEPT_BEFORE_IMA
        assert re.fullmatch(r'ima-kexec-buffer: entry\[6\]\.template_name at offset 0x[0-9a-f]+: '
                            r'template "ima" cannot be restored \(it keeps the 6 entries before '
                            r'it\)', str(verdict[d]["restore_error"]))

    def load(*args: str) -> str:
        return guest_python("-m", "kimagekit", *args) + " 2>&1"

    loaded_flag = 'echo "kexec_loaded $(cat /sys/kernel/kexec_loaded)"'
    # load, unload, load again: the load --exec that follows replaces a loaded image
    first_stage = [load("load", str(a)), loaded_flag, load("unload"), loaded_flag,
                   load("load", str(a)), loaded_flag]
    forced = {img for img in images if img not in (a, b)}  # the hand-over or digest fails
    cases = [f"{i}) " + load("load", "--exec", *(["--force"] if img in forced else []),
                             str(img)) + " ;;" for i, img in enumerate(images, start=1)]
    script = (STAGE_SCRIPT.replace("@FIRST@", "\n    ".join(first_stage) if extras else ":")
              .replace("@CASES@", "\n".join(cases)))
    (tmp_path / "stage.sh").write_text(script)

    r = run_in_guest(k, script, mem=MEM, timeout=900, quiet_timeout=QUIET)
    n = len(images)  # kernels that boot: the first, then every image but E
    print(f"{suite}: {n} kernels and one that never came up: {r.seconds:.1f} s")
    assert [(b.release, b.rc) for b in r.blocks] == [(k.version, None)] * n, r.console[-4000:]
    stages = [_split(b.output) for b in r.blocks]
    assert [s["head"][0] for s in stages] == [f"stage {i}" for i in range(1, n + 1)]

    def loaded(img: Path) -> str:
        entry = read_image(img.read_bytes()).entry
        return f"{img}: loaded through kexec_load: 5 segments, entry {entry:#x}"

    def warned(img: Path, problems: list[str]) -> list[str]:
        return [f"kimagekit: warning: {img}: --force: {p}" for p in problems]

    def handover_damage(img: Path) -> list[str]:
        return [f"hand-over segment 0: {x}" for x in verdict[img]["damage"]]  # type: ignore

    # stage 1: the guest's RAM is what the images were laid out in
    one = stages[0]["head"]
    assert one[1:1 + len(guest_memmap)] == guest_memmap
    rest = one[1 + len(guest_memmap):]
    if extras:  # loaded, unloaded, loaded: then the load --exec over it (no EBUSY)
        just = f"{loaded(a)}; boot it with kexec -e or systemctl kexec"
        assert rest[:6] == [just, "kexec_loaded 1", "unloaded (an image was loaded)",
                            "kexec_loaded 0", just, "kexec_loaded 1"]
        rest = rest[6:]
    assert rest == [f"{loaded(a)}; syncing and rebooting into it"]
    # each later stage loaded the next image (warnings: what --force let through)
    problems = {c: handover_damage(c), e: [f"the image does not verify: {tamper}"]}
    if extras:
        problems[d] = handover_damage(d)
    for i, img in enumerate(images[1:], start=1):
        assert stages[i]["load"] == [*warned(img, problems.get(img, [])),
                                     f"{loaded(img)}; syncing and rebooting into it"]

    def measured(img: Path) -> list[str]:  # the list of the kernel that img booted
        return stages[images.index(img) + 1]["ima"]

    def boot_aggregate(line: str) -> bool:
        return line.split(" ")[4:5] == ["boot_aggregate"]

    def dmesg(img: Path) -> list[str]:
        return stages[images.index(img) + 1]["dmesg"]

    # check 2: exactly the handed-over entries first, then this kernel's own boot_aggregate
    assert measured(a)[:FIRST] == expect_first
    assert boot_aggregate(measured(a)[FIRST]), measured(a)[FIRST]
    # check 3: the longer list patch-handover put in
    assert measured(b)[:362] == expect_all
    assert boot_aggregate(measured(b)[362]), measured(b)[362]
    # check 5: a header the restore rules refuse: nothing restored, as inspect said
    assert boot_aggregate(measured(c)[0]), measured(c)[0]
    assert _has_run(dmesg(c), ["ima: attempting to restore a incompatible measurement list",
                               "ima: Failed to restore the measurement list: -22"]), dmesg(c)
    if extras:
        # refused at entry[6]: the kernel keeps the six entries before it, as inspect said
        assert measured(d)[:KEPT_BEFORE_IMA] == expect_mixed
        assert boot_aggregate(measured(d)[KEPT_BEFORE_IMA]), measured(d)[KEPT_BEFORE_IMA]
        assert _has_run(dmesg(d), ['ima: attempting to restore an unsupported template "ima" '
                                   "failed", "ima: Failed to restore the measurement list: -22"]
                        ), dmesg(d)
    # check 4: E, loaded with --force over verify's verdict, never came up: the purgatory
    # found the digest wrong (no kernel after the last kexec; the guest killed when quiet)
    assert r.timed_out
    assert r.console.count("kexec_core: Starting new kernel") == n
    assert r.console.count("Linux version") == n
    assert "Linux version" not in r.console.rsplit("kexec_core: Starting new kernel", 1)[1]
