"""KHO on issue 13's test kernel (7.2 with ``CONFIG_KEXEC_HANDOVER`` and its debugfs, built by
``scripts/build_test_kernel.py``), under QEMU: the kernel's own ``kexec_file_load`` of itself
with KHO inactive (booted without ``kho=``) and active (``kho=on``), read back through
/proc/kcore (``rk_guest/kexec_file.py``), equals ``kimagekit build`` for the same inputs: the
segments (mem, memsz, bufsz at load; the scratch segment's bytes) and the boot parameters,
the SETUP_KEXEC_KHO bytes included, except what the running kernel copies from its own state.
The guest's KHO tree (``/sys/kernel/debug/kho/out/fdt``) is read by ``kimagekit inspect``, in
the guest with ``--memory /proc/kcore`` (its preserved pages hold the tree's own page and the
kexec-metadata blob) and on the host from its bytes. The active boot then execs the kernel's
own load: the next kernel finds the hand-over and shows the same tree in ``kho/in/fdt``.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import pytest
from realkernel_harness import ROOT, Kernel, _missing, guest_python, initramfs, run_in_guest
from test_realkernel_placement import parse_loads, running_state_mask

from kimagekit import kho
from kimagekit.arch import x86_64
from kimagekit.cli import main as cli_main
from kimagekit.devicetree import DeviceTree
from kimagekit.fileio import mapped
from kimagekit.formats import bzimage as bz
from kimagekit.image import read_image
from kimagekit.loader_profile import resolve
from kimagekit.segments import Role

pytestmark = pytest.mark.realkernel

GUEST = ROOT / "tests" / "rk_guest"
KEXEC_FILE_DEBUG = 0x8
DEBUGFS = "/sys/kernel/debug/kho/out"
MODES = ("inactive", "active")


def test_kernel() -> Kernel:
    """The test kernel as a harness Kernel (a local stand-in for tk's ``test_kernel()`` in
    realkernel_harness: a folder with ``vmlinuz``, ``config``, no modules)."""
    import importlib.util

    from realkernel_harness import _fetch_artifacts

    script = ROOT / "scripts" / "build_test_kernel.py"
    built: Path | None = None
    if script.is_file():
        spec = importlib.util.spec_from_file_location("build_test_kernel", script)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        built = mod.built()
    else:  # before tk's script is merged: the newest finished build in the cache
        done = sorted(_fetch_artifacts().cache_dir().glob("testkernel-x86_64-*/.done"),
                      key=lambda p: p.stat().st_mtime)
        built = done[-1].parent if done else None
    if built is None:
        _missing("the test kernel is not built (python3 scripts/build_test_kernel.py)")
    assert built is not None
    src = Path(built)
    stage = src / "harness"
    if not (stage / "modules.order").is_file():
        (stage / "modules").mkdir(parents=True, exist_ok=True)
        for name, target in (("vmlinuz", src / "arch/x86/boot/bzImage"),
                             ("config", src / ".config")):
            if not (stage / name).exists():
                (stage / name).symlink_to(target)
        (stage / "version").write_text((src / "source-version").read_text().split("-")[0])
        (stage / "modules.order").write_text("")
    return Kernel("test", (stage / "version").read_text().strip(), stage)


test_kernel.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


_RUNS: dict[str, tuple[Kernel, str]] = {}


def guest_run(mode: str, tmp: Path) -> tuple[Kernel, str]:
    """One boot: KHO state, the IMA list at load, the load read back, the tree inspected."""
    if mode in _RUNS:
        return _RUNS[mode]
    k = test_kernel()
    tmp.chmod(0o755)
    cl = tmp / "cmdline"
    cl.write_text("console=ttyS0")
    spec = tmp / f"{mode}.spec"
    spec.write_text(f"{mode}\t{k.vmlinuz}\t\t{cl}\t{KEXEC_FILE_DEBUG:#x}\n")
    lines = ["mount -t debugfs none /sys/kernel/debug",
             "mount -t debugfs none /host/sys/kernel/debug",  # the chroot's /sys is a copy
             # the next kernel (after the exec below): what it took over
             f"if [ -e {DEBUGFS.replace('out', 'in')}/fdt ]; then",
             f"  echo in-fdt $(od -An -v -tx1 {DEBUGFS.replace('out', 'in')}/fdt | tr -d ' \\n')",
             "  dmesg | grep 'KHO: ' | sed -e 's/^\\[[^]]*\\] //' -e 's/^/dmesg /'",
             "  exit 0",
             "fi",
             "grep 'System RAM' /proc/iomem",
             "echo ima $(od -An -v -tx1 /sys/kernel/security/ima/binary_runtime_measurements"
             " | tr -d ' \\n')"]
    if mode == "active":
        lines += [guest_python(str(GUEST / "kho_state.py")),
                  f"echo fdt $(od -An -v -tx1 {DEBUGFS}/fdt | tr -d ' \\n')",
                  "echo inspect-begin",
                  guest_python("-m", "kimagekit", "inspect", f"{DEBUGFS}/fdt", "--memory",
                               "/proc/kcore", "--json"),
                  "echo inspect-end"]
    lines.append(guest_python(str(GUEST / "kexec_file.py"), str(spec), str(64 << 20)))
    if mode == "active":  # then boot the next kernel through the kernel's own load
        lines.append(guest_python(str(GUEST / "kho_state.py"), "exec", str(k.vmlinuz),
                                  str(initramfs(k))))
    r = run_in_guest(k, "\n".join(lines) + "\n", mem="1G",
                     cmdline="kho=on" if mode == "active" else "", timeout=400,
                     quiet_timeout=60)
    assert not r.timed_out and r.blocks, r.console[-3000:]
    out = r.output.rstrip("\n") + "\n"
    if mode == "active":
        assert len(r.blocks) == 2, r.console[-3000:]
        out += "".join(f"next {line}\n" for line in r.blocks[1].output.splitlines())
    _RUNS[mode] = (k, out)
    return _RUNS[mode]


def _word(output: str, key: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in output.splitlines() if line.startswith(key + " ")]


@pytest.fixture(scope="module")
def guest_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rk-kho")


@pytest.mark.parametrize("mode", MODES)
def test_load_equals_kernel(mode: str, guest_tmp: Path, tmp_path: Path) -> None:
    k, output = guest_run(mode, guest_tmp)
    ram, loads = parse_loads(output)
    load = loads[mode]
    assert load.rc == "load rc=0 errno=0", "\n".join(load.log)
    ima = tmp_path / "ima.bin"
    ima.write_bytes(bytes.fromhex(_word(output, "ima")[0]))
    out = tmp_path / "image"
    argv = ["build", "--arch", "x86_64", "--kernel", str(k.vmlinuz), "--purgatory-from",
            str(k.vmlinuz), "--mem", ",".join(f"{a:#x}-{b:#x}" for a, b in ram), "--cmdline",
            "console=ttyS0", "--loader-config", str(k.config), "--ima", str(ima), "-o",
            str(out)]
    scratch = [(int(a, 16), int(n, 16)) for a, n in map(str.split, _word(output, "scratch"))]
    fdt = (_word(output, "kho-fdt") or ["0"])[0]
    if mode == "active":
        argv += ["--kho-fdt", fdt, "--kho-scratch",
                 ",".join(f"{a:#x}+{s:#x}" for a, s in scratch)]
    assert cli_main(argv) == 0
    with mapped(out) as view:
        info = read_image(view)
        mine = [(s.mem, s.memsz, s.bufsz_at_load) for s in info.segments]
        assert mine == load.segments, "kernel log:\n" + "\n".join(load.log)
        assert info.entry == load.start
        roles = [s.role for s in info.segments]
        if mode == "active":
            assert roles[:2] == [Role.HANDOVER, Role.KHO_SCRATCH]
            for s in info.segments:  # every segment inside a scratch area
                assert any(a <= s.mem and s.mem + s.memsz <= a + n for a, n in scratch)
        else:
            assert Role.KHO_SCRATCH not in roles
        for s in info.segments:
            if s.role in (Role.KERNEL, Role.KHO_SCRATCH):
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
    assert differ == [], [(i, params[int(i, 16)], theirs[int(i, 16)]) for i in differ]
    # the KHO entry itself, as the kernel wrote it (type and length even when inactive)
    lay = x86_64.boot_params_layout(len("console=ttyS0") + 1, ima_kexec=True, kho=True,
                                    efi=resolve(config=k.config).efi)
    kho_at = lay.kho_setup_data_offset
    assert kho_at is not None and lay.bufsz == len(params)
    assert struct.unpack_from("<II", theirs, kho_at + 8) == (bz.SETUP_KEXEC_KHO, 32)
    if mode == "active":
        sseg = info.segment(Role.KHO_SCRATCH)
        assert sseg is not None
        assert struct.unpack_from("<QQQQ", theirs, kho_at + 16) == (
            int(fdt, 16), 4096, sseg.mem, 16 * len(scratch))
    else:
        assert theirs[kho_at:kho_at + 8] == bytes(8) and theirs[kho_at + 16:kho_at + 48] == \
            bytes(32)


def test_kho_tree_inspected(guest_tmp: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    _, output = guest_run("active", guest_tmp)
    (fdt_addr,) = _word(output, "kho-fdt")
    m = re.search(r"^inspect-begin\n(.*)^inspect-end$", output, re.S | re.M)
    assert m, output
    doc = json.loads(m.group(1))
    assert doc["format"] == "kho-tree"
    s = doc["summary"]
    assert (s["compatible"], s["known"], s["damage"]) == ("kho-v4", True, [])
    (meta,) = [c for c in s["clients"] if c["name"] == "kexec-metadata"]
    # struct kho_kexec_metadata: u32 version, char[65], u32 count, packed
    assert meta["size"] == 73 and meta["data_property"] == "preserved-data"
    ranges = s["preserved"]["ranges"]
    for page in (int(fdt_addr, 16), meta["data"] & ~0xFFF):
        assert any(a <= page < b for a, b in ranges), (hex(page), ranges)
    # the same bytes read on the host
    f = tmp_path / "fdt"
    f.write_bytes(bytes.fromhex(_word(output, "fdt")[0]))
    tree = kho.read_kho(DeviceTree.parse(f.read_bytes()))
    assert tree.memory_map == s["memory_map"] and tree.clients[0].data == meta["data"]
    assert cli_main(["inspect", str(f)]) == 0
    assert capsys.readouterr().out.startswith(f"{f}: kho-tree\n  compatible kho-v4 ")


def test_next_kernel_takes_the_kho_tree(guest_tmp: Path) -> None:
    """The next kernel, booted by the kernel's own load: arch/x86/kernel/setup.c:508
    (``add_kho``) finds SETUP_KEXEC_KHO, kernel/liveupdate/kexec_handover.c:1719 ``pr_info("found
    kexec handover data.\\n")``, :1499 ``exec from: %s (count %u)``; its
    /sys/kernel/debug/kho/in/fdt is the tree the previous kernel handed over."""
    _, output = guest_run("active", guest_tmp)
    nxt = _word(output, "next")
    assert "dmesg KHO: found kexec handover data." in nxt
    assert any(re.fullmatch(r"dmesg KHO: exec from: 7\.2\.\d+\S* \(count 1\)", w) for w in nxt)
    (fdt_in,) = [w.split(" ", 1)[1] for w in nxt if w.startswith("in-fdt ")]
    assert fdt_in == _word(output, "fdt")[0]
