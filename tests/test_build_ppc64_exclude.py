"""``build --exclude``: memory the loading powerpc kernel keeps segments out of that no tree
shows, above all its own image (``add_kernel_mem_range``, arch/powerpc/kexec/ranges.c:333:
``add_mem_range(mem_ranges, 0, __pa(_end))``); ``kexec_load`` refuses any segment below
``__pa(_end)`` (arch/powerpc/kexec/core_64.c:52, -ETXTBSY). The tree stays as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
from image_helpers import gen, ppc_gen

from kimagekit.cli import main
from kimagekit.image import read_image
from kimagekit.segments import Role

SMALL_DTB = Path(__file__).resolve().parent.parent / "testdata" / "dtb" / "small.dtb"
END = 0x287C918  # Debian's ppc64el 6.1 vmlinux: p_paddr 0 + p_memsz, its __pa(_end)


def _build(tmp_path: Path, *extra: str) -> dict[Role, tuple[int, int]]:
    (tmp_path / "vmlinux").write_bytes(gen.make_vmlinux())
    (tmp_path / "p.o").write_bytes(ppc_gen.make_ppc64_purgatory())
    (tmp_path / "rd").write_bytes(b"R" * 0x30000)
    out = tmp_path / "o.img"
    assert main(["build", "--arch", "ppc64le", "--kernel", str(tmp_path / "vmlinux"),
                 "--dtb", str(SMALL_DTB), "--purgatory", str(tmp_path / "p.o"),
                 "--initrd", str(tmp_path / "rd"), *extra, "-o", str(out)]) == 0
    info = read_image(out.read_bytes())
    return {s.role: (s.mem, s.memsz) for s in info.segments}


def test_exclude_keeps_the_bottom_up_segments_above_the_running_kernel(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The vmlinux PT_LOAD and the initrd are searched bottom-up from p_paddr 0 (elf_64.c):
    without --exclude they land at 0, where kexec_load would refuse them; with the running
    kernel's image excluded, at the first 64 KiB page at or above __pa(_end)."""
    plain = _build(tmp_path)
    assert plain[Role.KERNEL] == (0, 0x10000) and plain[Role.INITRD] == (0x10000, 0x30000)
    moved = _build(tmp_path, "--exclude", f"0+{END:#x}")
    capsys.readouterr()
    assert moved[Role.KERNEL] == (0x2880000, 0x10000)
    assert moved[Role.INITRD] == (0x2890000, 0x30000)
    # top-down segments are not below it anyway: unchanged
    assert moved[Role.PURGATORY] == plain[Role.PURGATORY]
    assert moved[Role.DTB] == plain[Role.DTB]


def test_exclude_leaves_the_tree_alone(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The exclusion is the loader's search only: the new tree's reservation block is the
    running tree's one /memreserve/ entry and its terminator, nothing added."""
    (tmp_path / "vmlinux").write_bytes(gen.make_vmlinux())
    (tmp_path / "p.o").write_bytes(ppc_gen.make_ppc64_purgatory())
    out = tmp_path / "o.img"
    assert main(["build", "--arch", "ppc64le", "--kernel", str(tmp_path / "vmlinux"), "--dtb",
                 str(SMALL_DTB), "--purgatory", str(tmp_path / "p.o"), "--exclude",
                 "0x0-0x287ffff", "-o", str(out)]) == 0
    capsys.readouterr()
    data = out.read_bytes()
    seg = read_image(data).segment(Role.DTB)
    assert seg is not None
    tree = data[seg.offset:seg.offset + seg.bufsz]
    rsv = int.from_bytes(tree[16:20], "big")  # off_mem_rsvmap
    assert tree[rsv:rsv + 32] == ((0x400000).to_bytes(8, "big") + (0x1000).to_bytes(8, "big")
                                  + bytes(16))


@pytest.mark.parametrize(("args", "message"), [
    (["--arch", "ppc64le", "--exclude", "0x1000"],
     "--exclude: '0x1000' is not START-LAST or START+SIZE"),
    (["--arch", "x86_64", "--exclude", "0+0x1000"],
     "x86_64 takes no --dtb, --handover or --exclude (the hand-over is --ima; the RAM is "
     "--mem)"),
])
def test_exclude_refusals(tmp_path: Path, args: list[str], message: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "vmlinux").write_bytes(gen.make_vmlinux())
    (tmp_path / "p.o").write_bytes(ppc_gen.make_ppc64_purgatory())
    assert main(["build", "--kernel", str(tmp_path / "vmlinux"), "--dtb", str(SMALL_DTB),
                 "--purgatory", str(tmp_path / "p.o"), *args, "-o",
                 str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"kimagekit: error: {message}\n"
    assert not (tmp_path / "o").exists()
