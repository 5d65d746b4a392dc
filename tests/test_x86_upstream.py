"""x86-64 rules from current upstream (arch/x86/kernel/kexec-bzimage64.c): the SETUP_DTB room
KEXEC_FILE_FORCE_DTB makes (6.18+), the XLF_5LEVEL probe on a loading kernel with 5-level
paging. Each rule's kernel source line is in its test's docstring."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from image_helpers import PURGATORY_CORPUS, gen
from kernel_helpers import kgen

from kimagekit.arch import x86_64
from kimagekit.arch.build import BuildInputs, build_x86_64, running_tree
from kimagekit.cli import main
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import ParseError, RuleError, UsageError
from kimagekit.formats import bzimage as bz
from kimagekit.image import read_image
from kimagekit.kernels import probe_bzimage64, read_bzimage
from kimagekit.loader_profile import LoaderProfile, resolve
from kimagekit.segments import Role


def _tree() -> bytes:
    t = DeviceTree.new()
    t.set("/", "compatible", b"intel,ce4100\0")
    t.add_node("/", "chosen")
    t.set("/chosen", "bootargs", b"console=ttyS0\0")
    return t.build()


def _kernel(tmp_path: Path, xloadflags: int = 0x7F) -> Path:
    data = bytearray(kgen.make_bzimage(init_size=0x3000000))
    struct.pack_into("<H", data, 0x236, xloadflags)
    k = tmp_path / "bzImage"
    k.write_bytes(bytes(data))
    return k


def test_probe_wants_xlf_5level_under_5_level_paging(tmp_path: Path) -> None:
    """bzImage64_probe: ``if (!(header->xloadflags & XLF_5LEVEL) && pgtable_l5_enabled()) {
    pr_err("bzImage cannot handle 5-level paging mode.\\n"); return ret; }``"""
    four = _kernel(tmp_path, 0x7F & ~bz.XLF_5LEVEL).read_bytes()
    img = read_bzimage(four)
    probe_bzimage64(four, img)  # a 4-level loading kernel takes it
    with pytest.raises(RuleError) as e:
        probe_bzimage64(four, img, five_level=True)
    assert str(e.value) == ("bzImage: setup_header.xloadflags at offset 0x236: xloadflags lacks "
                            "XLF_5LEVEL: the kernel cannot handle the 5-level paging the loading "
                            "kernel runs with")
    five = _kernel(tmp_path).read_bytes()
    probe_bzimage64(five, read_bzimage(five), five_level=True)


def test_cli_five_level_paging(tmp_path: Path, corpus: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    k = _kernel(tmp_path, 0x7F & ~bz.XLF_5LEVEL)
    argv = ["build", "--arch", "x86_64", "--kernel", str(k), "--purgatory",
            str(corpus / PURGATORY_CORPUS), "-o", str(tmp_path / "x.img")]
    assert main([*argv, "--five-level-paging"]) == 2  # as every probe refusal of --kernel
    assert capsys.readouterr().err == (
        f"kimagekit: error: {k}: bzImage: setup_header.xloadflags at offset 0x236: xloadflags "
        "lacks XLF_5LEVEL: the kernel cannot handle the 5-level paging the loading kernel runs "
        "with\n")
    assert main(argv) == 0


def test_force_dtb_layout() -> None:
    """bzImage64_load: ``if (image->force_dtb && initial_boot_params) kbuf.bufsz +=
    sizeof(struct setup_data) + fdt_totalsize(initial_boot_params);``; setup_boot_parameters:
    after EFI, ``setup_dtb(params, params_load_addr, setup_data_offset); setup_data_offset +=
    sizeof(struct setup_data) + fdt_totalsize(initial_boot_params);`` then IMA, KHO, RNG (the
    tree's size is not aligned, so what follows may not be)."""
    plain = x86_64.boot_params_layout(1, ima_kexec=True, kho=True)
    lay = x86_64.boot_params_layout(1, ima_kexec=True, kho=True, dtb_size=0x85)
    assert plain.dtb_setup_data_offset is None
    assert lay.dtb_setup_data_offset == 0x1020 + 16 + 96 == 0x1090
    assert lay.ima_setup_data_offset == 0x1090 + 16 + 0x85 == 0x1125
    assert lay.kho_setup_data_offset == 0x1125 + 32
    assert lay.rng_setup_data_offset == 0x1145 + 48
    assert lay.bufsz == plain.bufsz + 16 + 0x85


def _build(tmp_path: Path, corpus: Path, version: tuple[int, int, int], dtb: Path,
           ima: bool = False) -> tuple[bytes, int, bytes]:
    out = tmp_path / "x.img"
    build_x86_64(BuildInputs(_kernel(tmp_path), out, purgatory=corpus / PURGATORY_CORPUS,
                             ima=gen.restorable_list(tmp_path / "ima.bin") if ima else None),
                 profile=LoaderProfile(version, "test", "cfg", ima_kexec=True), force_dtb=dtb)
    data = out.read_bytes()
    bp = read_image(data).segment(Role.BOOT_PARAMS)
    assert bp is not None
    return data[bp.offset:bp.offset + bp.bufsz], bp.mem, data


def test_force_dtb_carries_the_running_tree(tmp_path: Path, corpus: Path) -> None:
    """setup_dtb: ``sd->type = SETUP_DTB; sd->len = dtb_len; memcpy(sd->data,
    initial_boot_params, dtb_len); sd->next = params->hdr.setup_data; params->hdr.setup_data =
    setup_data_phys;`` -- chained before the IMA entry, so the IMA entry comes first."""
    tree = _tree()
    dtb = tmp_path / "fdt"
    dtb.write_bytes(tree + b"\xff" * 64)  # bytes past totalsize are not the tree's
    params, at, _ = _build(tmp_path, corpus, (6, 18, 0), dtb, ima=True)
    n = len(tree)
    assert len(params) == 0x10C0 + 0x20 + 16 + n
    chain = x86_64.setup_data_chain(params, at)
    assert [(e.address - at, e.type) for e in chain] == [
        (0x1090 + 16 + n, bz.SETUP_IMA), (0x1090, bz.SETUP_DTB)]
    assert chain[1].data == tree


def test_force_dtb_is_6_18_and_needs_a_tree(tmp_path: Path, corpus: Path) -> None:
    """KEXEC_FILE_FORCE_DTB (0x20) came with f367474b5884 ("x86/kexec: carry forward the boot
    DTB on kexec"): an older loader has no such flag."""
    dtb = tmp_path / "fdt"
    dtb.write_bytes(_tree())
    with pytest.raises(UsageError) as e:
        _build(tmp_path, corpus, (6, 17, 0), dtb)
    assert str(e.value) == ("bzImage: force_dtb: KEXEC_FILE_FORCE_DTB came in 6.18: the loader "
                            "profile 6.17.0 carries no device tree")
    dtb.write_bytes(b"\0" * 64)
    with pytest.raises(ParseError, match="no 0xd00dfeed magic"):
        running_tree(dtb)
    dtb.write_bytes(_tree()[:40])
    with pytest.raises(ParseError, match=r"totalsize \d+ does not fit the 40 bytes"):
        running_tree(dtb)


def test_cli_force_dtb(tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dtb = tmp_path / "fdt"
    dtb.write_bytes(_tree())
    argv = ["build", "--arch", "x86_64", "--kernel", str(_kernel(tmp_path)), "--purgatory",
            str(corpus / PURGATORY_CORPUS), "-o", str(tmp_path / "x.img"), "--force-dtb",
            str(dtb)]
    assert main([*argv, "--loader-version", "6.18"]) == 0
    capsys.readouterr()
    assert main([*argv, "--loader-version", "6.17"]) == 2
    assert capsys.readouterr().err.endswith("KEXEC_FILE_FORCE_DTB came in 6.18: the loader "
                                            "profile 6.17.0 carries no device tree\n")


def test_no_efi_moves_the_entries_not_the_size(tmp_path: Path) -> None:
    """arch/x86/kernel/kexec-bzimage64.c:566-569: ``kbuf.bufsz = params_cmdline_sz +
    ALIGN(efi_map_sz, 16) + sizeof(struct setup_data) + sizeof(struct efi_setup_data) + ...``
    always, but :364-370 advance ``setup_data_offset`` past the EFI entry only ``#ifdef
    CONFIG_EFI``: without it IMA, KHO and RNG start at the EFI room (seen on the tinyconfig test
    kernel). A Kconfig-written config without CONFIG_EFI=y is a loader without it."""
    efi = x86_64.boot_params_layout(14, ima_kexec=True, kho=True)
    no = x86_64.boot_params_layout(14, ima_kexec=True, kho=True, efi=False)
    assert (efi.ima_setup_data_offset, efi.kho_setup_data_offset, efi.rng_setup_data_offset,
            efi.bufsz) == (0x10A0, 0x10C0, 0x10F0, 0x1120)
    assert (no.ima_setup_data_offset, no.kho_setup_data_offset, no.rng_setup_data_offset,
            no.bufsz) == (0x1030, 0x1050, 0x1080, 0x1120)
    cfg = tmp_path / "config"
    cfg.write_text("#\n# Linux/x86 7.2.13 Kernel Configuration\n#\nCONFIG_IMA_KEXEC=y\n"
                   "# CONFIG_EFI is not set\n")
    assert not resolve(config=cfg).efi
    cfg.write_text(cfg.read_text().replace("# CONFIG_EFI is not set", "CONFIG_EFI=y"))
    assert resolve(config=cfg).efi
    cfg.write_text("CONFIG_IMA_KEXEC=y\n")  # no header: not Kconfig's whole output
    assert resolve(config=cfg).efi
