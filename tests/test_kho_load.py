"""The loading kernel's KHO side of kexec_file (linux-source 7.2.13): the scratch segment, the
hole search confined to the scratch areas, x86's SETUP_KEXEC_KHO. Each rule's kernel source
file and line is in its test's docstring."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from image_helpers import PURGATORY_CORPUS, gen
from kernel_helpers import kgen

from kimagekit import kho_load
from kimagekit.arch import x86_64
from kimagekit.arch.build import BuildInputs, build_x86_64
from kimagekit.cli import main
from kimagekit.errors import RuleError, UsageError
from kimagekit.formats import bzimage as bz
from kimagekit.image import read_image
from kimagekit.kho_load import KhoLoad
from kimagekit.loader_profile import LoaderProfile
from kimagekit.segments import KexecBuf, MemRange, Role, SegmentList, Target, add_buffer

MiB = 1 << 20
GiB = 1 << 30
RAM = (MemRange(MiB, 4 * GiB - MiB),)
# as a 1 GiB guest's kho_scratch[]: lowmem, global, node 0 (not in address order)
SCRATCH = (MemRange(0x3000_0000, 64 * MiB), MemRange(0x3C00_0000, 32 * MiB),
           MemRange(0x2000_0000, 128 * MiB))
KHO = KhoLoad(0x3FF0_0000, SCRATCH)


def _target() -> Target:
    return Target("x86_64", 4096, RAM)


def test_scratch_segment_bytes_and_placement() -> None:
    """kernel/liveupdate/kexec_handover.c:1743-1757 (kho_fill_kimage): ``scratch_size =
    sizeof(*kho_scratch) * kho_scratch_cnt; ... .buffer = kho_scratch, .bufsz = scratch_size,
    .mem = KEXEC_BUF_MEM_UNKNOWN, .memsz = scratch_size, .buf_align = SZ_64K, .buf_max =
    ULONG_MAX, .top_down = true``; include/linux/kexec_handover.h:9 ``struct kho_scratch
    {phys_addr_t addr; phys_addr_t size;}``: the array as the kernel holds it, hashed."""
    assert kho_load.scratch_array(SCRATCH) == (
        struct.pack("<QQ", 0x3000_0000, 64 * MiB) + struct.pack("<QQ", 0x3C00_0000, 32 * MiB)
        + struct.pack("<QQ", 0x2000_0000, 128 * MiB))
    t = kho_load.kho_target(_target(), KHO)
    sl, seg = kho_load.add_scratch(SegmentList(t), KHO)
    assert seg is not None
    # the first area in array order with room, top-down, 64 KiB aligned
    assert (seg.mem, seg.memsz, seg.bufsz) == (0x3000_0000 + 64 * MiB - 0x10000, 0x1000, 48)
    assert seg.role == Role.KHO_SCRATCH and seg.checksummed
    # a page-aligned buffer after it still takes the area's top page, above the scratch one
    sl, nxt = add_buffer(sl, KexecBuf(b"x", 1, Role.OTHER, top_down=True))
    assert nxt.mem == 0x3000_0000 + 64 * MiB - 0x1000


def test_holes_only_in_scratch_areas_in_array_order() -> None:
    """kernel/kexec_file.c:723-729 (kexec_locate_mem_hole): ``If KHO is active, only use KHO
    scratch memory ... ret = kho_locate_mem_hole(kbuf, locate_mem_hole_callback); if (ret <= 0)
    return ret;``; kernel/liveupdate/kexec_handover.c:1768-1778 (kho_walk_scratch): ``for (i =
    0; i < kho_scratch_cnt; i++) { struct resource res = {.start = kho_scratch[i].addr, .end =
    ... + size - 1}; ret = func(&res, kbuf); if (ret) break; }`` -- array order whether top-down
    or not, the area whole (no exclusions but the segments already placed)."""
    t = kho_load.kho_target(_target(), KHO)
    # 100 MiB fits neither of the first two areas: the third (lowest) one, top-down
    sl, big = add_buffer(SegmentList(t), KexecBuf(b"", 100 * MiB, Role.KERNEL, top_down=True))
    assert big.mem == 0x2000_0000 + 128 * MiB - 100 * MiB
    # bottom-up also starts with the first area, not the lowest one
    _, low = add_buffer(sl, KexecBuf(b"", MiB, Role.INITRD, top_down=False))
    assert low.mem == 0x3000_0000
    # without KHO the same request lands at the top of RAM
    _, free = add_buffer(SegmentList(_target()), KexecBuf(b"", 100 * MiB, Role.KERNEL,
                                                         top_down=True))
    assert free.end == 4 * GiB


def test_no_fallback_outside_the_scratch_areas() -> None:
    """kernel/liveupdate/kexec_handover.c:1791-1793 (kho_locate_mem_hole): ``ret =
    kho_walk_scratch(kbuf, func); return ret == 1 ? 0 : -EADDRNOTAVAIL;`` -- no room in the
    scratch areas fails the load, though RAM elsewhere is free."""
    t = kho_load.kho_target(_target(), KHO)
    with pytest.raises(RuleError) as e:
        add_buffer(SegmentList(t), KexecBuf(b"", 129 * MiB, Role.KERNEL, top_down=True))
    assert str(e.value) == ("kexec: segment[0](kernel): no free memory of the KHO scratch areas "
                            "for 0x8100000 bytes aligned to 0x1000 in [0x0, "
                            "0xffffffffffffffff] (top-down)")


def test_not_for_crash_loads() -> None:
    """kernel/liveupdate/kexec_handover.c:1738 (kho_fill_kimage) ``if (!kho_enable ||
    image->type == KEXEC_TYPE_CRASH) return 0;`` and :1788 (kho_locate_mem_hole) ``if
    (!kho_enable || kbuf->image->type == KEXEC_TYPE_CRASH) return 1;`` -- a crash load gets no
    scratch segment and searches as without KHO."""
    t = _target()
    assert kho_load.kho_target(t, KHO, crash=True) == t
    assert kho_load.kho_target(t, None) == t
    sl = SegmentList(t)
    assert kho_load.add_scratch(sl, KHO, crash=True) == (sl, None)
    assert kho_load.add_scratch(sl, None) == (sl, None)


def test_inputs_checked() -> None:
    """kernel/liveupdate/kexec_handover.c:1562 ``kho_out.fdt = kho_alloc_preserve(PAGE_SIZE)``
    (a page) and :694-745 (kho_reserve_scratch: every area from memblock, so in RAM)."""
    t = _target()
    for fdt in (0, 0x3FF0_0800):
        with pytest.raises(UsageError, match=r"^--kho-fdt: the KHO tree's address"):
            kho_load.check_kho(KhoLoad(fdt, SCRATCH), t)
    with pytest.raises(UsageError) as e:
        kho_load.check_kho(KhoLoad(0x1000, (MemRange(4 * GiB - MiB, 2 * MiB),)), t)
    assert str(e.value) == ("--kho-scratch: scratch area 0xfff00000-0x1000fffff is not inside "
                            "RAM (the kernel carves its scratch areas from memblock)")
    with pytest.raises(UsageError, match="no scratch area"):
        kho_load.check_kho(KhoLoad(0x1000, ()), t)


def _kernel(tmp_path: Path) -> Path:
    k = tmp_path / "bzImage"
    k.write_bytes(kgen.make_bzimage(init_size=0x3000000))
    return k


def _build(tmp_path: Path, corpus: Path, *, kho: KhoLoad | None, handover: bool = False,
           profile: LoaderProfile | None = None) -> tuple[bytes, int, list[tuple[Role, int]]]:
    out = tmp_path / "x.img"
    prof = profile or LoaderProfile((7, 2, 13), "test", "cfg", ima_kexec=True,
                                    kexec_handover=True)
    build_x86_64(BuildInputs(_kernel(tmp_path), out, purgatory=corpus / PURGATORY_CORPUS,
                             ima=gen.restorable_list(tmp_path / "ima.bin") if handover else None),
                 ram=RAM, profile=prof, kho=kho)
    data = out.read_bytes()
    info = read_image(data)
    bp = info.segment(Role.BOOT_PARAMS)
    assert bp is not None
    return data[bp.offset:bp.offset + bp.bufsz], bp.mem, [(s.role, s.mem) for s in info.segments]


def test_x86_setup_kexec_kho_active(tmp_path: Path, corpus: Path) -> None:
    """arch/x86/kernel/kexec-bzimage64.c:284-297 (setup_kho): ``sd->type = SETUP_KEXEC_KHO;
    sd->len = sizeof(struct kho_data); ... kho->fdt_addr = image->kho.fdt; kho->fdt_size =
    PAGE_SIZE; kho->scratch_addr = image->kho.scratch->mem; kho->scratch_size =
    image->kho.scratch->bufsz; sd->next = params->hdr.setup_data; params->hdr.setup_data = ...``
    (arch/x86/include/uapi/asm/setup_data.h:16 ``SETUP_KEXEC_KHO 10``, :85-90 ``struct
    kho_data``); kernel/kexec_file.c:280-284: IMA's segment, then KHO's, then the image
    loader's; every one inside the scratch areas."""
    params, at, segs = _build(tmp_path, corpus, kho=KHO, handover=True)
    assert [r for r, _ in segs] == [Role.HANDOVER, Role.KHO_SCRATCH, Role.PURGATORY,
                                    Role.BOOT_PARAMS, Role.KERNEL]
    assert all(any(a.start <= m < a.end for a in SCRATCH) for _, m in segs)
    scratch = dict(segs)[Role.KHO_SCRATCH]
    lay = x86_64.boot_params_layout(1, ima_kexec=True, kho=True)
    assert lay.kho_setup_data_offset is not None and lay.ima_setup_data_offset is not None
    off = lay.kho_setup_data_offset
    assert params[off:off + 48] == struct.pack(
        "<QIIQQQQ", at + lay.ima_setup_data_offset, 10, 32, 0x3FF0_0000, 4096, scratch, 48)
    chain = x86_64.setup_data_chain(params, at)
    assert [(e.address - at, e.type) for e in chain] == [
        (off, bz.SETUP_KEXEC_KHO), (lay.ima_setup_data_offset, bz.SETUP_IMA)]


def test_x86_setup_kexec_kho_inactive_room(tmp_path: Path, corpus: Path) -> None:
    """arch/x86/kernel/kexec-bzimage64.c:582-584 ``if (IS_ENABLED(CONFIG_KEXEC_HANDOVER))
    kbuf.bufsz += sizeof(struct setup_data) + sizeof(struct kho_data);`` and :284-290 (setup_kho)
    ``sd->type = SETUP_KEXEC_KHO; sd->len = sizeof(struct kho_data); /* Only add if we have all
    KHO images in place */ if (!image->kho.fdt || !image->kho.scratch) return;`` -- inactive, the
    type and length bytes are written (and hashed), the entry is not chained."""
    params, at, segs = _build(tmp_path, corpus, kho=None)
    assert Role.KHO_SCRATCH not in dict(segs)
    lay = x86_64.boot_params_layout(1, ima_kexec=True, kho=True)
    assert lay.kho_setup_data_offset is not None
    off = lay.kho_setup_data_offset
    assert params[off:off + 48] == struct.pack("<QII", 0, 10, 32) + bytes(32)
    assert x86_64.setup_data_chain(params, at) == ()
    assert len(params) == lay.bufsz == x86_64.boot_params_layout(
        1, ima_kexec=True).bufsz + 48
    # without the option: no room, and no KHO at all
    prof = LoaderProfile((7, 2, 13), "test", "cfg", ima_kexec=True)
    params, _, _ = _build(tmp_path, corpus, kho=None, profile=prof)
    assert len(params) == lay.bufsz - 48
    with pytest.raises(UsageError) as e:
        _build(tmp_path, corpus, kho=KHO, profile=prof)
    assert str(e.value) == ("bzImage: kexec_handover: KHO needs a loading kernel with "
                            "CONFIG_KEXEC_HANDOVER (6.16+): the loader profile 7.2.13 has none")


def test_cli_kho_options(tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
                         ) -> None:
    cfg = tmp_path / "config"
    cfg.write_text("# Linux/x86 7.2.13 Kernel Configuration\nCONFIG_IMA_KEXEC=y\n"
                   "CONFIG_KEXEC_HANDOVER=y\n")
    out = tmp_path / "x.img"
    argv = ["build", "--arch", "x86_64", "--kernel", str(_kernel(tmp_path)), "--purgatory",
            str(corpus / PURGATORY_CORPUS), "-o", str(out), "--loader-config", str(cfg),
            "--kho-fdt", "0x3ff00000"]
    debugfs = tmp_path / "out"
    debugfs.mkdir()
    (debugfs / "scratch_phys").write_text("".join(f"{a.start:#x}\n" for a in SCRATCH))
    (debugfs / "scratch_len").write_text("".join(f"{a.size:#x}\n" for a in SCRATCH))
    raw = tmp_path / "scratch.bin"
    raw.write_bytes(kho_load.scratch_array(SCRATCH))
    images = []
    for spec in ("0x30000000+64M".replace("64M", str(64 * MiB)) + f",{0x3C00_0000:#x}+"
                 f"{32 * MiB:#x},{0x2000_0000:#x}-{0x2000_0000 + 128 * MiB - 1:#x}",
                 str(debugfs), str(raw)):
        assert main([*argv, "--kho-scratch", spec, "--mem", "0x100000-0xffffffff"]) == 0, \
            capsys.readouterr().err
        images.append(out.read_bytes())
        assert "kho-scratch #0" in capsys.readouterr().out
    assert images[0] == images[1] == images[2]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "kimagekit: error: an active KHO needs both --kho-fdt and --kho-scratch\n")
    (debugfs / "scratch_len").write_text("0x1000\n")
    assert main([*argv, "--kho-scratch", str(debugfs)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: --kho-scratch: {debugfs}: 3 scratch_phys lines but 1 scratch_len "
        "lines\n")
    raw.write_bytes(b"\0" * 20)
    assert main([*argv, "--kho-scratch", str(raw)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: --kho-scratch: {raw}: 20 bytes are not whole {{u64 addr, u64 size}} "
        "entries\n")
