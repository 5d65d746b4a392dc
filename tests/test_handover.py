"""``patch-handover`` on x86-64 images: the boot parameters' SETUP_IMA setup_data must announce
the hand-over segment (address and memsz), as the device tree must for the ppc64 styles."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from image_helpers import PURGATORY_CORPUS, gen
from kernel_helpers import kgen

from kimagekit import ima_kexec
from kimagekit.arch.x86_64 import announced_ima, setup_data_chain
from kimagekit.cli import main
from kimagekit.formats import bzimage as bz
from kimagekit.image import content, open_image
from kimagekit.segments import Role


@pytest.fixture
def x86_image(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A synthetic bzImage with the Debian purgatory and an IMA hand-over."""
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(kgen.make_bzimage())
    out = tmp_path / "x86.img"
    ima = gen.restorable_list(tmp_path / "ima.bin")
    assert main(["build", "--arch", "x86_64", "--kernel", str(kernel), "--purgatory",
                 str(corpus / PURGATORY_CORPUS), "--ima", str(ima), "-o", str(out)]) == 0
    capsys.readouterr()
    return out


def _announcement(path: Path) -> tuple[tuple[int, int] | None, tuple[int, int], int]:
    """What the boot parameters announce, the hand-over's (mem, memsz), and the file offset of
    the boot-parameters segment."""
    with open_image(path) as (info, view):
        ho, bp = info.segment(Role.HANDOVER), info.segment(Role.BOOT_PARAMS)
        assert ho is not None and bp is not None
        return announced_ima(content(view, bp), bp.mem), (ho.mem, ho.memsz), bp.offset


def _rewrite_setup_ima(path: Path, how: str) -> None:
    """Make the boot parameters announce the hand-over's bufsz instead of its memsz, or
    nothing (the setup_data list emptied)."""
    data = bytearray(path.read_bytes())
    with open_image(path) as (info, view):
        bp = info.segment(Role.BOOT_PARAMS)
        ho = info.segment(Role.HANDOVER)
        assert bp is not None and ho is not None
        params = bytes(content(view, bp))
    if how == "bufsz":
        entry = next(e for e in setup_data_chain(params, bp.mem) if e.type == bz.SETUP_IMA)
        at = bp.offset + entry.address - bp.mem + bz.SETUP_DATA_SIZE + 8
        struct.pack_into("<Q", data, at, ho.bufsz)
    else:
        struct.pack_into("<Q", data, bp.offset + bz.FIELD_OFFSET["setup_data"], 0)
    path.write_bytes(bytes(data))


def test_patch_keeps_the_setup_ima_announcement(x86_image: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    announced, segment, _ = _announcement(x86_image)
    assert announced == segment
    raw = tmp_path / "raw"
    entries = gen.restorable_entries()
    raw.write_bytes(ima_kexec.build_buffer([*entries, *entries]))
    out = tmp_path / "patched.img"
    assert main(["patch-handover", str(x86_image), "--data", str(raw), "-o", str(out)]) == 0
    assert segment == (0xFFFFF000, 0x1000)  # the top page under 4 GiB
    # The hand-over is left out of the digest: it is the built image's, unchanged
    with open_image(x86_image) as (info, _):
        digest = info.digest.hex()
    assert capsys.readouterr().out == (
        f"{out}: hand-over segment 0 at 0xfffff000: 948 -> 1872 of 4096 bytes; verified, digest "
        f"{digest}\n")
    assert _announcement(out)[:2] == (segment, segment)
    assert main(["verify", str(out)]) == 0
    assert capsys.readouterr().out == f"ok {digest}\n"


@pytest.mark.parametrize(("how", "said"), [("bufsz", "0xfffff000+0x3b4"), ("gone", "nothing")])
def test_patch_refuses_boot_params_announcing_something_else(
        x86_image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str,
        said: str) -> None:
    # Patching would leave the next kernel reading the wrong range: refused, nothing written.
    _rewrite_setup_ima(x86_image, how)
    before = x86_image.read_bytes()
    raw = tmp_path / "raw"
    raw.write_bytes(b"new hand-over bytes")
    out = tmp_path / "never.img"
    assert main(["patch-handover", str(x86_image), "--data", str(raw), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {x86_image}: handover: segment[0]: the boot parameters announce "
        f"{said} in their SETUP_IMA setup_data, not the hand-over segment 0xfffff000+0x1000\n")
    assert x86_image.read_bytes() == before and not out.exists()
    # verify names both: the boot parameters are hashed, and they no longer name the segment.
    assert main(["verify", str(x86_image)]) == 1
    assert capsys.readouterr().out == (
        "FAILED: segment 2 (boot-params, region 0 at 0xffff8000) differs from what was sealed\n"
        f"FAILED: hand-over segment 0: the boot parameters announce {said} in their SETUP_IMA "
        "setup_data, not the segment 0xfffff000+0x1000\n")
