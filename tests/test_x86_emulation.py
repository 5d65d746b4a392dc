"""The proof by the kernel's own code: images built from the Debian amd64 bzImage, run under
unicorn from the real purgatory's entry. Accepted images reach the kernel's 64-bit entry with
rsi = boot_params; a flipped byte in a checksummed segment leaves the purgatory in its failure
loop; a patched hand-over (left out of the digest) still passes.

Cost: the purgatory hashes the kernel segment's whole memsz (init_size, 63.6 MiB for Debian 6.1)
at ~0.12 s/MiB under emulation, so each run takes ~8 s; four runs share two built images.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from conftest import need_module
from image_helpers import gen

from kimagekit import ima_kexec
from kimagekit.arch.x86_64 import announced_ima
from kimagekit.cli import main
from kimagekit.image import content, open_image
from kimagekit.segments import Role

ROOT = Path(__file__).resolve().parent.parent
KERNEL_MEMSZ = 0x3F97000  # PAGE_ALIGN(init_size) of the Debian 6.1.0-50 kernel


@pytest.fixture(scope="module")
def images(amd64_vmlinuz: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("x86")
    initrd = d / "initrd"
    initrd.write_bytes(bytes((i * 7) & 0xFF for i in range(64 << 10)))
    plain, full = d / "plain.img", d / "full.img"
    base = ["build", "--arch", "x86_64", "--kernel", str(amd64_vmlinuz), "--purgatory-from",
            str(amd64_vmlinuz)]
    assert main([*base, "-o", str(plain)]) == 0
    assert main([*base, "--initrd", str(initrd), "--cmdline", "console=ttyS0 ro",
                 "--ima", str(gen.restorable_list(d / "ima.bin")), "-o", str(full)]) == 0
    return {"plain": plain, "full": full}


def run_image(path: Path) -> Any:
    """x86_emu.run_image; unicorn (a test dependency) is required under CI, as tools are."""
    need_module("unicorn")
    from x86_emu import run_image as run

    return run(path)


def _segment(path: Path, role: Role) -> tuple[int, int, bytes]:
    with open_image(path) as (info, view):
        s = info.segment(role)
        assert s is not None
        return s.mem, s.memsz, bytes(content(view, s))


def _stack_end(path: Path) -> int:
    with open_image(path) as (info, _):
        sym = info.symbol("stack_end")
        assert sym is not None
        return sym.value


@pytest.mark.parametrize("which", ["plain", "full"])
def test_purgatory_accepts_and_enters_the_kernel(images: dict[str, Path], which: str) -> None:
    path = images[which]
    kmem, kmemsz, _ = _segment(path, Role.KERNEL)
    bp, _, _ = _segment(path, Role.BOOT_PARAMS)
    run = run_image(path)
    assert run.outcome == "kernel-entry", run
    assert (run.rip, run.rsi, run.rbx, run.rsp) == (kmem + 0x200, bp, 0, _stack_end(path))
    assert kmemsz == KERNEL_MEMSZ
    print(f"{which}: {run.hashed_bytes} bytes hashed in {run.seconds:.1f} s")


def test_one_flipped_byte_makes_the_purgatory_spin(images: dict[str, Path],
                                                   tmp_path: Path) -> None:
    src = images["full"]
    with open_image(src) as (info, _):
        k = info.segment(Role.KERNEL)
        assert k is not None and k.checksummed
        at = k.offset + k.bufsz // 2
    data = bytearray(src.read_bytes())
    data[at] ^= 0x01
    bad = tmp_path / "bad.img"
    bad.write_bytes(bytes(data))
    run = run_image(bad)
    assert run.outcome == "spin", run
    with open_image(bad) as (info, _):
        fn = info.symbol("purgatory")
        assert fn is not None
        assert fn.value <= run.rip < fn.value + fn.size


def test_patched_handover_still_passes(images: dict[str, Path], tmp_path: Path) -> None:
    src = images["full"]
    entries = gen.restorable_entries()
    longer = ima_kexec.build_buffer([*entries, *entries])
    new_list = tmp_path / "new.kexec"
    new_list.write_bytes(longer)
    out = tmp_path / "patched.img"
    assert main(["patch-handover", str(src), "--data", str(new_list), "-o", str(out)]) == 0
    ho_mem, ho_memsz, ho = _segment(out, Role.HANDOVER)
    assert ho == longer and len(longer) > len(_segment(src, Role.HANDOVER)[2])
    bp_mem, _, params = _segment(out, Role.BOOT_PARAMS)
    assert params == _segment(src, Role.BOOT_PARAMS)[2]
    assert announced_ima(params, bp_mem) == (ho_mem, ho_memsz)
    run = run_image(out)
    assert run.outcome == "kernel-entry", run
    assert run.rsi == bp_mem


def test_boot_params_as_the_loader_fills_them(images: dict[str, Path]) -> None:
    path = images["full"]
    bp, bp_memsz, params = _segment(path, Role.BOOT_PARAMS)
    rd_mem, _, rd = _segment(path, Role.INITRD)
    ho_mem, ho_memsz, _ = _segment(path, Role.HANDOVER)
    cmd = b"console=ttyS0 ro\0"
    # 4096 + 17 + 30 rounded up to 16 (0x1030), then EFI (16 + 96), IMA (16 + 16), RNG (16 + 32)
    assert len(params) == 0x1030 + 112 + 32 + 48 and bp_memsz == 0x2000
    assert params[0x1000:0x1000 + len(cmd)] == cmd
    assert struct.unpack_from("<I", params, 0x228)[0] == bp + 0x1000  # cmd_line_ptr
    assert struct.unpack_from("<II", params, 0x218) == (rd_mem, len(rd))  # ramdisk
    assert (params[0x210], params[0x211]) == (0xD0, 0)  # type_of_loader, loadflags
    assert params[0x1E8] == 1  # e820_entries: the default RAM range
    assert struct.unpack_from("<QQI", params, 0x2D0) == (0x100000, (4 << 30) - 0x100000, 1)
    ima_sd = 0x1030 + 112
    assert struct.unpack_from("<Q", params, 0x250)[0] == bp + ima_sd  # hdr.setup_data
    assert struct.unpack_from("<QIIQQ", params, ima_sd) == (0, 8, 16, ho_mem, ho_memsz)
