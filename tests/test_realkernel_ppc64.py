"""A kimagekit ppc64le image with the kernel's own purgatory booted on ``qemu-system-ppc64
-machine pseries`` (TCG), through ``kexec_load(2)``.

One QEMU run. The first kernel (Debian's ppc64el 6.1, the busybox initramfs of
:mod:`realkernel_ppc64`) prints the tree it booted with, ``/sys/firmware/fdt`` (its
``initial_boot_params``: the very tree its own kexec_file would copy, as
``of_kexec_alloc_and_setup_fdt`` does, and the one that matches this machine: prom_init's
flattening of SLOF's tree, with RTAS instantiated and the initrd reserved; QEMU's ``dumpdtb``
comes before both, without ``linux,rtas-base``), then waits. The host builds the image from
that tree as the running kernel's (``--dtb-from running``: ``setup_new_fdt_ppc64``'s edits too):
the same vmlinux, the same initramfs, the real purgatory (``scripts/build_purgatory.py
ppc64le``), an IMA hand-over (``linux,ima-kexec-buffer``), and a command line of its own; it
writes the flat description the guest's static loader reads (``tests/rk_guest/kexec_loader.c``).
The guest loads it and reboots into it. The next kernel must come up with the image's tree:

- its ``bootargs`` in ``/proc/cmdline``;
- ``/sys/firmware/fdt`` byte for byte the image's tree segment (the purgatory passed
  ``dt_offset`` in r3);
- the hand-over property in ``/proc/device-tree/chosen``, with the segment's address and size;
- the region reserved: ``memblock=debug`` shows ``memblock_reserve`` of exactly that range from
  the tree's ``/memreserve/`` (by ``early_init_fdt_scan_reserved_mem``, ``drivers/of/fdt.c``),
  and it lies inside a range of
  ``/sys/kernel/debug/memblock/reserved`` (Debian sets ``ARCH_KEEP_MEMBLOCK``).

Then the next kernel loads B, built the same way from the tree it runs on (A's), with one
letter of its kernel's utsname release changed after the build: ``kimagekit verify`` fails it
(exit 1), ``kexec_load`` takes it, and a third kernel comes up whose ``uname -r`` ends in the
changed letter. The ppc64 purgatory checks no digest, as ``verify`` and ``inspect`` say.

Debian's ppc64el config has no ``KEXEC_FILE`` and hence no ``HAVE_IMA_KEXEC`` (powerpc selects
it from ``KEXEC_FILE``): the next kernel does not restore the list (no ``ima_load_kexec_buffer``
is built), so the property stays in ``/chosen`` and the region stays reserved; a kernel built
with it would restore the list and free the region.

Placement: the loading kernel's exclude list holds its own image ``[0, __pa(_end))``
(``add_kernel_mem_range``, ``arch/powerpc/kexec/ranges.c:333``), which no tree shows, and
``kexec_load`` refuses a segment below ``__pa(_end)`` (``-ETXTBSY``,
``arch/powerpc/kexec/core_64.c:52``). The guest runs this very vmlinux, whose single PT_LOAD
ends at ``__pa(_end)``, so the build gets ``--exclude P_PADDR+P_MEMSZ``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tempfile
import time
from pathlib import Path

import pytest
from conftest import corpus_dir
from realkernel_harness import _missing, built_purgatory
from realkernel_ppc64 import guest_initramfs, guest_loader, kernel, run_pseries

from kimagekit import kexec_load
from kimagekit.arch.ppc64 import kernel_loads
from kimagekit.cli import main
from kimagekit.image import read_image
from kimagekit.segments import Role

pytestmark = pytest.mark.realkernel

LIST = "ima/binary/ibmtss-31443b7-ima-sha1.log"  # 362 ima-sig entries, one Fedora boot
QUIET = 60.0  # seconds without output after the kexec: the next kernel did not come up

SCRIPT = """\
stage=1
for w in $(cat /proc/cmdline); do case "$w" in rkstage=*) stage="${w#rkstage=}" ;; esac; done
echo "stage $stage"
if [ "$stage" = 1 ]; then
    echo @@fdt-begin
    base64 /sys/firmware/fdt
    echo @@fdt-end
    i=0
    while [ ! -e /host@DIR@/ready ] && [ ! -e /host@DIR@/failed ] && [ $i -lt 300 ]; do
        sleep 1; i=$((i+1))
    done
    [ -e /host@DIR@/ready ] && /host@LOADER@ /host@DIR@/image.kimg /host@DIR@/image.desc exec
    echo "not booted"
else
    echo "release $(uname -r)"
    echo "cmdline $(cat /proc/cmdline)"
    echo "chosen $(ls /proc/device-tree/chosen | tr '\\n' ' ')"
    echo "handover $(od -An -tx1 /proc/device-tree/chosen/linux,ima-kexec-buffer | tr -d ' \\n')"
    echo "fdt $(sha256sum /sys/firmware/fdt | cut -d' ' -f1) $(wc -c < /sys/firmware/fdt)"
    mount -t debugfs none /sys/kernel/debug
    sed 's/^/reserved /' /sys/kernel/debug/memblock/reserved
    dmesg | grep 'memblock_reserve:' | sed 's/^/dmesg /'
    if [ "$stage" = 2 ]; then
        /host@LOADER@ /host@DIR@/tampered.kimg /host@DIR@/tampered.desc exec
        echo "not booted"
    fi
fi
"""


class _Guest:
    """kexec_load's view of the guest, for :func:`kexec_load.plan` on the host."""

    def machine(self) -> str:
        return "ppc64le"


def write_description(image: Path, out: Path, *, force: bool = False) -> None:
    """The loader's flat description of IMAGE: the segments and entry ``kimagekit load`` would
    pass (after its checks: the digest, the hand-over as the next kernel reads it; FORCE lets
    a failed one through, as ``load --force``)."""
    p = kexec_load.plan(image, force=force, system=_Guest())  # type: ignore[arg-type]
    lines = [f"entry {p.entry:#x}"]
    lines += [f"segment {s.buf_offset:#x} {s.bufsz:#x} {s.mem:#x} {s.memsz:#x}"
              for s in p.segments]
    out.write_text("\n".join(lines) + "\n")


RELEASE = "6.1.0-50-powerpc64le"
# init_uts_ns (.data), whose release ``uname -r`` prints: sysname, nodename, release, 65 B each
UTS = b"Linux".ljust(65, b"\0") + b"(none)".ljust(65, b"\0") + RELEASE.encode() + b"\0"
TAMPERED = RELEASE[:-1] + "E"


def tamper(image: Path, vmlinux: bytes, p_offset: int) -> int:
    """Change the last letter of the kernel segment's utsname release (both copies .data holds)
    in IMAGE; return how many bytes changed."""
    info = read_image(image.read_bytes())
    kern = next(s for s in info.segments if s.role == Role.KERNEL)
    data = bytearray(image.read_bytes())
    at, n = vmlinux.find(UTS), 0
    while at >= 0:
        data[kern.offset + at - p_offset + 130 + len(RELEASE) - 1] = ord("E")
        at, n = vmlinux.find(UTS, at + 1), n + 1
    image.write_bytes(bytes(data))
    return n


def test_pseries_boots_the_image_with_its_tree() -> None:
    corpus = corpus_dir()
    if corpus is None:
        _missing("the real-file corpus (../shared/corpus) is not there")
    assert corpus is not None
    purgatory = built_purgatory("ppc64le")
    k = kernel()
    loader = guest_loader()
    rd = guest_initramfs(k)
    vmlinux = k.dir / "vmlinux"
    (load,) = kernel_loads(vmlinux.read_bytes(), "ppc64le")
    running_image = f"{load.p_paddr:#x}+{load.p_memsz:#x}"  # [0, __pa(_end))
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rk-ppc-img-") as tmp:
        d = Path(tmp)
        d.chmod(0o755)
        image = d / "image.kimg"
        built: dict[str, object] = {}
        times: dict[str, float] = {}

        def poll(text: str) -> None:
            if built or "@@fdt-end" not in text:
                return
            times["dumped"] = time.monotonic() - began  # the first kernel is up
            try:
                b64 = text.split("@@fdt-begin\n", 1)[1].split("@@fdt-end", 1)[0]
                (d / "running.dtb").write_bytes(base64.b64decode(b64))
                cmdline = (f"console=hvc0 panic=-1 rkscript={d / 'stage.sh'} rkstage=2 "
                           "memblock=debug "
                           "kimagekit.proof=ppc64le")
                t0 = time.monotonic()
                built["rc"] = main([
                    "build", "--arch", "ppc64le", "--kernel", str(vmlinux), "--dtb",
                    str(d / "running.dtb"), "--purgatory", str(purgatory), "--initrd", str(rd),
                    "--cmdline", cmdline, "--ima", str(corpus / LIST), "--handover-style",
                    "ima", "--dtb-from", "running", "--exclude", running_image,
                    "-o", str(image)])
                built["cmdline"] = cmdline
                times["build"] = time.monotonic() - t0
                write_description(image, d / "image.desc")
                # B, for the next kernel: built from the tree it will run on (A's), then one
                # letter of its kernel changed; kexec_load takes it as it is
                a_info = read_image(image.read_bytes())
                a_tree = next(s for s in a_info.segments if s.role == Role.DTB)
                (d / "a.dtb").write_bytes(
                    image.read_bytes()[a_tree.offset:a_tree.offset + a_tree.bufsz])
                built["rc_b"] = main([
                    "build", "--arch", "ppc64le", "--kernel", str(vmlinux), "--dtb",
                    str(d / "a.dtb"), "--purgatory", str(purgatory), "--initrd", str(rd),
                    "--cmdline", cmdline.replace("rkstage=2", "rkstage=3"), "--dtb-from",
                    "running", "--exclude", running_image, "-o", str(d / "tampered.kimg")])
                built["flipped"] = tamper(d / "tampered.kimg", vmlinux.read_bytes(),
                                          load.p_offset)
                built["verify_b"] = main(["verify", str(d / "tampered.kimg")])
                write_description(d / "tampered.kimg", d / "tampered.desc", force=True)
                (d / "ready").touch()
            except Exception as exc:
                built["error"] = exc
                (d / "failed").touch()

        # the next kernel runs the same script (rkstage=2) from here
        script = SCRIPT.replace("@DIR@", str(d)).replace("@LOADER@", str(loader))
        (d / "stage.sh").write_text(script)
        res = run_pseries(k, script, timeout=420, quiet_timeout=QUIET, poll=poll)
        if "error" in built:
            raise built["error"]  # type: ignore[misc]
        assert built["rc"] == 0
        info = read_image(image.read_bytes())
        tree_seg = next(s for s in info.segments if s.role == Role.DTB)
        ho = next(s for s in info.segments if s.role == Role.HANDOVER)
        tree = image.read_bytes()[tree_seg.offset:tree_seg.offset + tree_seg.bufsz]
    # kexec_load took it: nothing below the running kernel's __pa(_end)
    assert min(s.mem for s in info.segments) >= load.p_paddr + load.p_memsz
    wall = time.monotonic() - began
    print(f"pseries proof: the first kernel's tree at {times.get('dumped', 0):.1f} s, host "
          f"build {times.get('build', 0):.1f} s, QEMU ends at {res.seconds:.1f} s (the load, "
          f"the kexec, the next kernel's boot and script after the build), test {wall:.1f} s")
    assert [b.release for b in res.blocks] == [RELEASE, RELEASE, TAMPERED], \
        res.console[-4000:]
    first, second, third = res.blocks
    assert "kexec_load rc=0" in first.output, first.output[-2000:]
    assert "kexec_load rc=0" in second.output and third.rc == 0
    # B: kimagekit's verify fails it; the machine boots it (the ppc64 purgatory checks no
    # digest): the changed letter is in the running kernel's utsname
    assert built["rc_b"] == 0 and built["flipped"] == 2 and built["verify_b"] == 1
    assert f"release {TAMPERED}\n" in third.output
    out = second.output
    print(*(ln for ln in out.splitlines()
            if not ln.startswith(("dmesg", "reserved")) or f"{ho.mem:x}" in ln), sep="\n")
    assert f"cmdline {built['cmdline']}\n" in out
    chosen = re.search(r"^chosen (.*)$", out, re.M)
    assert chosen is not None and "linux,ima-kexec-buffer" in chosen[1].split()
    want = ho.mem.to_bytes(8, "big") + ho.memsz.to_bytes(8, "big")
    assert f"handover {want.hex()}\n" in out
    size = int.from_bytes(tree[4:8], "big")
    assert f"fdt {hashlib.sha256(tree[:size]).hexdigest()} {size}\n" in out
    last = ho.mem + ho.memsz - 1
    # drivers/of/fdt.c: early_init_fdt_scan_reserved_mem reserves each /memreserve/ entry
    assert re.search(rf"memblock_reserve: \[{ho.mem:#018x}-{last:#018x}\] "
                     r"early_init_fdt_scan_reserved_mem\+", out), out
    covered = [(int(a, 16), int(b, 16)) for a, b in
               re.findall(r"reserved +\d+: (0x[0-9a-f]+)\.\.(0x[0-9a-f]+)", out)]
    assert any(a <= ho.mem and last <= b for a, b in covered), covered
