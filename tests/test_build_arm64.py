"""``build --arch arm64``: each placement rule of the 7.2 Image loader, with its source line
(linux-source 7.2.13), on synthetic Images and RAM layouts; the probe's refusals; verify.

The tree hook used here returns fixed bytes: these tests are about where segments go, not what
``/chosen`` holds (the of_kexec tests are)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from conftest import debian_artifact
from kernel_helpers import kgen
from sig_helpers import make_pki

from kimagekit import of_kexec
from kimagekit.arch import arm64
from kimagekit.arch.common import NO_PURGATORY_NOTE
from kimagekit.arch.ppc64 import DtHook, DtRequest
from kimagekit.cli import main
from kimagekit.devicetree import DeviceTree
from kimagekit.dtb_file import load_tree
from kimagekit.errors import ParseError, Refused, RuleError
from kimagekit.image import ARCHES, content, open_image, verify
from kimagekit.kexec_load import check_target
from kimagekit.segments import MemRange, Role, Target

ROOT = Path(__file__).resolve().parent.parent
RAM_1G = (MemRange(0x40000000, 1 << 30),)
TREE = b"\xd0\x0d\xfe\xed" + bytes(0x1E2C)  # 7728 bytes: two pages once rounded
MIB, GIB = 1 << 20, 1 << 30


def _hook(seen: list[DtRequest] | None = None) -> DtHook:
    def hook(req: DtRequest) -> bytes:
        if seen is not None:
            seen.append(req)
        return TREE
    return hook


def _layout(kernel: bytes, ram: tuple[MemRange, ...] = RAM_1G, *,
            reserved: tuple[MemRange, ...] = (), initrd: bytes | None = None,
            handover: bytes | None = None, page: int = 4096) -> dict[Role, tuple[int, int, int]]:
    img = arm64.build(Target("arm64", page, ram, reserved), kernel, b"", _hook(),
                      initrd=initrd, handover=handover)
    return {s.role: (s.mem, s.memsz, s.bufsz) for s in img.segments.segments}


def test_kernel_bottom_up_at_min_kimg_align_then_text_offset_shift() -> None:
    """kexec_image.c:76-85 (buf_min 0, bottom-up, buf_align MIN_KIMG_ALIGN = SZ_2M,
    asm/boot.h:18), :83-88 (memsz = image_size + text_offset), kexec_file.c:781 (memsz to the
    page), kexec_image.c:121-123 (mem += text_offset, memsz -= text_offset, image->start)."""
    k = kgen.make_arm64_image(size=0x2000, text_offset=0x80000)
    ram = (MemRange(0x40001000, GIB - 0x1000),)  # the first 2 MiB boundary is 0x40200000
    img = arm64.build(Target("arm64", 4096, ram), k, b"", _hook())
    seg = img.segments.segments[0]
    assert (seg.role, seg.mem, seg.memsz, seg.bufsz) == (Role.KERNEL, 0x40280000, 0x2000, 0x2000)
    assert img.entry == 0x40280000
    assert bytes(seg.content) == k


def test_kernel_memsz_rounds_before_the_shift() -> None:
    """kexec_file.c:781 rounds image_size + text_offset (0x80000 + 0x1801) to 64 KiB pages
    (0x90000), then kexec_image.c:122 takes text_offset off: memsz 0x10000."""
    k = kgen.make_arm64_image(size=0x1801)
    lay = _layout(k, page=0x10000)
    assert lay[Role.KERNEL] == (0x40080000, 0x10000, 0x1801)


def test_text_offset_zero_and_pe_wrapped_image() -> None:
    """kexec_image.c:22-34: the probe reads the header at offset 0 whatever precedes the magic,
    so the EFI stub's PE-wrapped Image (Debian's vmlinuz) is taken as it is."""
    k = kgen.make_arm64_image(size=0x3000, text_offset=0, pe=True)
    assert k[:2] == b"MZ"
    assert _layout(k)[Role.KERNEL] == (0x40000000, 0x3000, 0x3000)


def test_initrd_bottom_up_from_the_kernels_end() -> None:
    """machine_kexec_file.c:105 (buf_min = kernel_load_addr + kernel_size, the segment before
    the text_offset shift), :145-156 (bottom-up, buf_align 0 -> a page, kexec_file.c:782)."""
    lay = _layout(kgen.make_arm64_image(size=0x2000), initrd=b"r" * 5000)
    assert lay[Role.KERNEL] == (0x40080000, 0x2000, 0x2000)
    assert lay[Role.INITRD] == (0x40082000, 0x2000, 5000)


def test_initrd_window_of_32_gib_moves_the_kernel() -> None:
    """machine_kexec_file.c:151-153: the initrd ends inside round_down(kernel, 1 GiB) + 32 GiB;
    when it cannot, load_other_segments fails and kexec_image.c:97-113 retries the kernel from
    the end of its last place (:111) until the initrd fits: here in the second bank."""
    k = kgen.make_arm64_image(size=0x2000)  # memsz 0x82000
    ram = (MemRange(0x40000000, 4 * MIB), MemRange(0x900000000, GIB))
    lay = _layout(k, ram, initrd=bytes(4 * MIB))
    assert lay[Role.KERNEL] == (0x900080000, 0x2000, 0x2000)
    assert lay[Role.INITRD] == (0x900082000, 4 * MIB, 4 * MIB)


def test_initrd_window_edge() -> None:
    """machine_kexec_file.c:152-153 with kexec_file.c:531 (temp_end > buf_max fails): an
    initrd may end at the window's end (0x840000000 for a kernel in the first GiB), not a page
    past it."""
    k = kgen.make_arm64_image(size=0x2000)
    ram = (MemRange(0x40000000, 0x82000), MemRange(0x840000000 - 0x3000, 0x10000))
    lay = _layout(k, ram, initrd=bytes(0x3000))
    assert lay[Role.INITRD] == (0x83FFFD000, 0x3000, 0x3000)
    with pytest.raises(RuleError, match=r"could not find any suitable kernel location "
                       r"\(kexec_image.c:116\): segment\[1\]\(initrd\): no free memory for "
                       r"0x4000 bytes"):
        _layout(k, ram, initrd=bytes(0x4000))


def test_tree_top_down_2mib_aligned() -> None:
    """machine_kexec_file.c:177-186: the packed tree, buf_align SZ_2M (not across a 2 MiB
    boundary), top-down, buf_max ULONG_MAX: the highest 2 MiB boundary with room, below the
    hand-over (ima_kexec.c:158-160: top-down anywhere, added first)."""
    ho = bytes(0x3B4)
    img = arm64.build(Target("arm64", 4096, RAM_1G), kgen.make_arm64_image(), b"", _hook(),
                      handover=ho, initrd=b"r")
    got = [(s.role, s.mem, s.memsz) for s in img.segments.segments]
    assert got == [(Role.HANDOVER, 0x7FFFF000, 0x1000), (Role.KERNEL, 0x40080000, 0x2000),
                   (Role.INITRD, 0x40082000, 0x1000), (Role.DTB, 0x7FE00000, 0x2000)]


def test_tree_never_below_the_kernel() -> None:
    """machine_kexec_file.c:105 and :177-186: the tree reuses the kbuf whose buf_min is the
    kernel's end; with the only 2 MiB boundary above it reserved, no kernel place works."""
    k = kgen.make_arm64_image(size=0x2000)
    ram = (MemRange(0x40000000, 4 * MIB),)
    with pytest.raises(RuleError, match=r"could not find any suitable kernel location "
                       r"\(kexec_image.c:116\): segment\[1\]\(dtb\): no free memory for 0x2000 "
                       r"bytes aligned to 0x200000 in \[0x40082000, 0xffffffffffffffff\] "
                       r"\(top-down\)"):
        _layout(k, ram, reserved=(MemRange(0x40200000, 2 * MIB),))


def test_tree_request_names_initrd_and_handover() -> None:
    """machine_kexec_file.c:166: of_kexec_alloc_and_setup_fdt gets the initrd's address and
    length; the hand-over is image->ima_buffer_addr/size (drivers/of/kexec.c, setup_ima_buffer)."""
    seen: list[DtRequest] = []
    arm64.build(Target("arm64", 4096, RAM_1G), kgen.make_arm64_image(), b"base", _hook(seen),
                initrd=b"r" * 10, handover=bytes(0x3B4), cmdline="console=ttyAMA0")
    assert [(r.dtb, r.initrd, r.handover, r.cmdline) for r in seen] == [
        (b"base", (0x40082000, 10), (0x7FFFF000, 0x1000), "console=ttyAMA0")]


def test_text_offset_not_page_aligned_is_refused() -> None:
    """kexec_core.c:137: after the kexec_image.c:121 shift a segment must start on a page."""
    with pytest.raises(RuleError, match=r"segment\[0\]: mem 0x40000800 or end 0x40002000 is "
                       r"not page aligned"):
        _layout(kgen.make_arm64_image(size=0x1000, text_offset=0x800))


def test_file_longer_than_image_size_is_refused() -> None:
    """kexec_core.c:171: bufsz (the whole file, kexec_image.c:81) must not exceed memsz."""
    k = kgen.make_arm64_image(size=0x3000, text_offset=0, image_size=0x1000)
    with pytest.raises(RuleError, match=r"the file \(0x3000 bytes\) is longer than image_size "
                       r"\(0x1000\) rounded to the page: sanity_check_segment_list refuses "
                       r"bufsz > memsz \(kexec_core.c:171\)"):
        _layout(k)


@pytest.mark.parametrize(("data", "message"), [
    (kgen.make_zboot(), arm64.ZBOOT_REFUSED),
    (kgen.make_arm64_image()[:63], "file is 63 bytes, shorter than the Image header (64): "
     "kexec_image.c:27 refuses it"),
    (bytes(0x40), "no ARM\\x64 magic at 0x38: kexec_image.c:30 refuses it"),
    (kgen.make_arm64_image(image_size=0), "image_size is 0 (a header older than 3.17, "
     "ambiguous): kexec_image.c:55 refuses it"),
    (kgen.make_arm64_image(flags=0b1011), "a big-endian Image: a little-endian loading kernel "
     "takes it only on a CPU with mixed-endian support (kexec_image.c:62)"),
])
def test_probe_refusals(data: bytes, message: str) -> None:
    """kexec_image.c:27, :30 (a zboot has no Image magic: 7.2 has no zboot path), :55, :62."""
    with pytest.raises(ParseError) as err:
        arm64.probe(data)
    assert err.value.message == message


def test_probe_page_size_flag() -> None:
    """kexec_image.c:65-72: a granule the CPU lacks is refused; 0 (unspecified) passes."""
    h = arm64.probe(kgen.make_arm64_image(flags=0b0100))  # 16 KiB
    assert (h.page_size, h.big_endian, h.phys_anywhere) == (16384, False, False)
    assert arm64.probe(kgen.make_arm64_image(flags=0)).page_size is None
    with pytest.raises(ParseError, match=r"built for 16 KiB pages, a granule this CPU lacks"):
        arm64.probe(kgen.make_arm64_image(flags=0b0100), granules=frozenset({4096, 65536}))


def _dts(tmp_path: Path) -> Path:
    p = tmp_path / "virt.dts"
    p.write_text("/dts-v1/;\n/ {\n\t#address-cells = <2>;\n\t#size-cells = <2>;\n"
                 "\tchosen {\n\t};\n\tmemory@40000000 {\n\t\tdevice_type = \"memory\";\n"
                 "\t\treg = <0x0 0x40000000 0x0 0x40000000>;\n\t};\n};\n")
    return p


def test_cli_build_verify_and_tamper(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    k = tmp_path / "Image"
    k.write_bytes(kgen.make_arm64_image(size=0x3000, text_offset=0))
    out = tmp_path / "kexec.img"
    assert main(["build", "--arch", "arm64", "--kernel", str(k), "--dtb", str(_dts(tmp_path)),
                 "--ima", str(ROOT / "testdata/ima/small-le.kexec"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert " 0 handover            0x7ffff000     0x1000      0x3b4 no " in text
    assert " 1 kernel              0x40000000     0x3000     0x3000 yes" in text
    assert "entry 0x40000000 (the kernel; no purgatory), device tree 0x7fe00000 (x0)" in text
    assert ARCHES["arm64"] == (183, True) and out.read_bytes()[18] == 183  # EM_AARCH64
    assert main(["verify", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [NO_PURGATORY_NOTE]
    # the hand-over is outside the digest; verify still holds it to the note's record
    data = bytearray(out.read_bytes())
    data[0x1000 + 0x100] ^= 1
    out.write_bytes(bytes(data))
    res = verify(out)
    assert (res.ok, res.reason) == (False, "segment 0 (handover at 0x7ffff000) differs from "
                                    "the SHA-256 the note records")


def test_cli_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    z = tmp_path / "zboot"
    z.write_bytes(kgen.make_zboot())
    dts = str(_dts(tmp_path))
    assert main(["build", "--arch", "arm64", "--kernel", str(z), "--dtb", dts,
                 "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == (f"kimagekit: error: {z}: arm64-image: image_type at offset 0x4: "
                   f"{arm64.ZBOOT_REFUSED}\n")
    assert main(["build", "--arch", "arm64", "--kernel", str(z), "--dtb", dts,
                 "--purgatory", str(z), "-o", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == ("kimagekit: error: arm64 loads no purgatory: "
                                       "--purgatory and --no-purgatory are not taken\n")
    assert main(["build", "--arch", "arm64", "--kernel", str(z), "-o",
                 str(tmp_path / "o")]) == 2
    assert "arm64 needs --dtb" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_header_struct_matches_the_kernels() -> None:
    """asm/image.h:44-55: 64 bytes, magic at 0x38, flags at 0x18 (bit 0 BE, bits 1-2 page
    size, bit 3 physical placement)."""
    k = kgen.make_arm64_image(flags=0b1010)
    assert struct.unpack_from("<QQQ", k, 8) == (0x80000, 0x2000, 0b1010)
    h = arm64.probe(k)
    assert (h.text_offset, h.image_size, h.page_size, h.phys_anywhere) == (0x80000, 0x2000,
                                                                           4096, True)


def test_debian_arm64_kernel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Debian's arm64 vmlinuz is a signed PE-wrapped Image (not a zboot): text_offset 0,
    image_size 0x2010000, 4 KiB pages, placed anywhere; kexec_image.c:135 checks its PE
    signature (KEXEC_IMAGE_VERIFY_SIG): it chains to Debian's CA as shim embeds it."""
    from test_signatures import _debian_ca

    vmlinuz = debian_artifact("arm64-vmlinuz")
    h = arm64.probe(vmlinuz.read_bytes()[:64])
    assert (h.text_offset, h.image_size, h.page_size, h.phys_anywhere) == (0, 0x2010000, 4096,
                                                                           True)
    out = tmp_path / "kexec.img"
    args = ["build", "--arch", "arm64", "--kernel", str(vmlinuz), "--dtb", str(_dts(tmp_path)),
            "--cmdline", "console=ttyAMA0", "-o", str(out), "--require-signature"]
    assert main([*args, str(_debian_ca(tmp_path))]) == 0
    text = capsys.readouterr().out
    assert f" 0 kernel              0x40000000  0x2010000 {vmlinuz.stat().st_size:#10x} yes" \
        in text
    assert " 1 dtb                 0x7fe00000     0x1000" in text
    (tmp_path / "pki").mkdir()
    other = make_pki(tmp_path / "pki").other
    out.unlink()
    assert main([*args, str(other)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {vmlinuz}: kexec-sig: kernel: signature not verified "
        "(KEXEC_SIG_FORCE would refuse it): no certificate of the chain is among the given "
        "certificates, nor its issuer\n")
    assert not out.exists()


def test_unsigned_image_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    k = tmp_path / "Image"
    k.write_bytes(kgen.make_arm64_image(size=0x3000, text_offset=0, pe=True))
    assert main(["build", "--arch", "arm64", "--kernel", str(k), "--dtb", str(_dts(tmp_path)),
                 "-o", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "a KEXEC_SIG_FORCE kernel refuses it" in err


def test_tree_is_of_kexecs_and_packed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """machine_kexec_file.c:166-175: of_kexec_alloc_and_setup_fdt (extra size 0), then
    fdt_pack; the IMA hand-over announced in the root's cells with its exact reservation
    (drivers/of/kexec.c:516-517). No random bytes offline: both seeds omitted, and said."""
    k = tmp_path / "Image"
    k.write_bytes(kgen.make_arm64_image(size=0x3000, text_offset=0))
    rd = tmp_path / "rd"
    rd.write_bytes(b"r" * 100)
    dts = _dts(tmp_path)
    out = tmp_path / "kexec.img"
    assert main(["build", "--arch", "arm64", "--kernel", str(k), "--dtb", str(dts), "--initrd",
                 str(rd), "--cmdline", "console=ttyAMA0", "--ima",
                 str(ROOT / "testdata/ima/small-le.kexec"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.endswith("note: kaslr-seed and rng-seed omitted (no random bytes offline), as "
                         "a kernel whose RNG is not initialised omits them\n"
                         "note: the running tree's own reservation is kept: its physical "
                         "address (initial_boot_params_pa) was not given\n")
    with open_image(out) as (info, view):
        dt = info.segment(Role.DTB)
        assert dt is not None
        got = bytes(content(view, dt))
    want = of_kexec.setup_fdt(load_tree(dts).build(), of_kexec.FdtRequest(
        initrd=(0x40003000, 100), cmdline="console=ttyAMA0", handover=(0x7FFFF000, 0x1000)),
        of_kexec.ArchFdt(4096)).blob
    assert got == want
    tree = DeviceTree.parse(got)
    assert tree.get("/chosen", "linux,ima-kexec-buffer") == struct.pack(">4I", 0, 0x7FFFF000,
                                                                         0, 0x1000)
    assert [(r.address, r.size) for r in tree.reservations] == [(0x40003000, 100),
                                                                 (0x7FFFF000, 0x1000)]
    assert len(got) == tree.header(pack=True).totalsize  # packed


def test_seeds_are_inputs(tmp_path: Path) -> None:
    """drivers/of/kexec.c:480-510: with an initialised RNG the kernel writes kaslr-seed (u64)
    and 128 bytes of rng-seed; offline they are given, never drawn."""
    seeds = of_kexec.Seeds(0x1122334455667788, bytes(range(128)))
    img = arm64.build(Target("arm64", 4096, RAM_1G), kgen.make_arm64_image(),
                      load_tree(_dts(tmp_path)).build(),
                      arm64.chosen_hook(4096, seeds=seeds))
    dt = DeviceTree.parse(bytes(img.segments.segments[-1].content))
    assert dt.get("/chosen", "kaslr-seed") == bytes.fromhex("1122334455667788")
    assert dt.get("/chosen", "rng-seed") == bytes(range(128))


def test_load_takes_an_arm64_image_on_aarch64(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """uname -m says aarch64 where the image says arm64: kexec_load is number 104 there (the
    generic unistd.h); any other machine is refused."""
    k = tmp_path / "Image"
    k.write_bytes(kgen.make_arm64_image(size=0x3000, text_offset=0))
    out = tmp_path / "kexec.img"
    assert main(["build", "--arch", "arm64", "--kernel", str(k), "--dtb", str(_dts(tmp_path)),
                 "--json", "-o", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)["result"]
    assert (result["entry"], result["dtb"]) == (0x40000000, 0x7FE00000)
    with open_image(out) as (info, _):
        assert check_target(info, "aarch64") == 104
        with pytest.raises(Refused, match="the image is for arm64 but this system is x86_64"):
            check_target(info, "x86_64")


@pytest.mark.parametrize(("kind", "data", "line"), [
    ("Image", kgen.make_arm64_image(pe=True), "kexec_file (arm64 Image, 7.2): loadable"),
    ("Image-be", kgen.make_arm64_image(flags=0b1011), "kexec_file (arm64 Image, 7.2): refused: "
     "a big-endian Image: a little-endian loading kernel takes it only on a CPU with "
     "mixed-endian support (kexec_image.c:62)"),
    ("zboot", kgen.make_zboot(), f"kexec_file (arm64 Image, 7.2): refused: {arm64.ZBOOT_REFUSED}"),
])
def test_inspect_says_whether_the_loader_takes_it(
        kind: str, data: bytes, line: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """kexec_image.c:22-72 as inspect reports it (text last line; JSON keys)."""
    f = tmp_path / kind
    f.write_bytes(data)
    assert main(["inspect", str(f)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "  " + line
    assert main(["inspect", str(f), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    loadable = line.endswith("loadable")
    assert (summary["kexec_file_loadable"], summary["not_loadable_because"] is None) == (
        loadable, loadable)


def test_tree_over_2mib_is_refused_unless_forced() -> None:
    """asm/boot.h:13 (MAX_FDT_SIZE SZ_2M) and mm/fixmap.c:166: the next kernel maps at most
    2 MiB of tree and stops on a larger one; the loading kernel (machine_kexec_file.c:174-186)
    does not check, so this is the next kernel's refusal, overridden by --force."""
    big = b"\xd0\x0d\xfe\xed" + bytes(arm64.MAX_FDT_SIZE - 3)
    target = Target("arm64", 4096, RAM_1G)
    with pytest.raises(RuleError, match=r"the new tree is 2097153 bytes, more than the 2097152 "
                       r"an arm64 kernel maps at boot"):
        arm64.build(target, kgen.make_arm64_image(), b"", lambda req: big)
    img = arm64.build(target, kgen.make_arm64_image(), b"", lambda req: big, force=True)
    dt = img.segments.segments[-1]
    assert (dt.mem, dt.memsz) == (0x7FC00000, 0x201000)


@pytest.mark.parametrize(("arch", "args", "message"), [
    ("arm64", ["--kho-fdt", "0x1000"],
     "--kho-fdt and --kho-scratch are x86_64 options, --exclude a ppc64 one"),
    ("riscv64", ["--exclude", "0+0x1000"],
     "--kho-fdt and --kho-scratch are x86_64 options, --exclude a ppc64 one"),
    ("arm64", ["--crash"], "--crash is a ppc64 option (arm64 crash loads are not modelled)"),
])
def test_other_arches_options_refused(tmp_path: Path, arch: str, args: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Options of the x86_64 and ppc64 loaders are refused on arm64 and riscv64, not ignored."""
    (tmp_path / "k").write_bytes(b"\0" * 64)
    assert main(["build", "--arch", arch, "--kernel", str(tmp_path / "k"), "--dtb",
                     str(tmp_path / "t.dtb"), *args, "-o", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"kimagekit: error: {message}\n"
