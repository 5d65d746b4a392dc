"""``patch-handover`` and damage on images built from the real ppc64le vmlinux: what changes, what
must not, and what ``verify`` and ``inspect`` say about a flipped byte."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from conftest import PPC_IMA_LIST
from image_helpers import gen

from kimagekit import ima_kexec, ima_log
from kimagekit.arch.ppc64 import DtRequest, build
from kimagekit.arch.ppc64_dt import setup_chosen, target_from_tree
from kimagekit.cli import main
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import RuleError
from kimagekit.handover import patch
from kimagekit.image import HandoverStyle, ImageInfo, read_image, write_image
from kimagekit.segments import Role

GOIMA = "ima/binary/goima-0841667-ima_ng"  # 254 ima-ng entries, SHA-1 list
EMBRAVE = "ima/binary/embrave-37d16c0-binary_runtime_measurements"  # 922 entries


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cat(out: Path, *parts: Path) -> Path:
    out.write_bytes(b"".join(p.read_bytes() for p in parts))
    return out


def segment_bytes(data: bytes, info: ImageInfo, index: int) -> bytes:
    s = info.segments[index]
    return data[s.offset:s.offset + s.bufsz]


def test_longer_list_that_fits(ppc_seed_image: Path, corpus: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    before = sha(ppc_seed_image)
    longer = cat(tmp_path / "longer", corpus / PPC_IMA_LIST, corpus / GOIMA)
    out = tmp_path / "patched.img"
    assert main(["patch-handover", str(ppc_seed_image), "--ima", str(longer), "-o",
                 str(out)]) == 0
    digest = read_image(ppc_seed_image.read_bytes()).digest.hex()
    assert capsys.readouterr().out == (
        f"{out}: hand-over segment 0 at 0xfffe0000: 49352 -> 85344 of 131072 bytes; "
        f"verified, digest {digest}\n"
        f"{out}: IMA ima-kexec-buffer: 616 entries, restore ok\n")
    assert sha(ppc_seed_image) == before
    assert main(["verify", str(out)]) == 0
    assert capsys.readouterr().out == f"ok {digest}\n"
    a, b = ppc_seed_image.read_bytes(), out.read_bytes()
    ia, ib = read_image(a), read_image(b)
    assert len(a) == len(b)
    for sa, sb in zip(ia.segments, ib.segments, strict=True):
        assert (sa.mem, sa.memsz, sa.offset) == (sb.mem, sb.memsz, sb.offset)
        if sa.role != Role.HANDOVER:
            assert segment_bytes(a, ia, sa.index) == segment_bytes(b, ib, sb.index)
    new = ima_kexec.restore(segment_bytes(b, ib, 0))
    goima = ima_log.read_entries(corpus / GOIMA)
    assert new.count == 616
    tail = [(e.pcr, e.template_digest, e.template_name, e.template_data)
            for e in new.entries[362:]]
    assert tail == [(e.pcr, e.template_digest, e.template_name, e.template_data) for e in goima]


def test_list_that_does_not_fit(ppc_seed_image: Path, corpus: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    before = sha(ppc_seed_image)
    big = cat(tmp_path / "big", corpus / PPC_IMA_LIST, corpus / GOIMA, corpus / EMBRAVE)
    out = tmp_path / "never.img"
    for where in (["-o", str(out)], ["--in-place"]):
        assert main(["patch-handover", str(ppc_seed_image), "--ima", str(big), *where]) == 2
        assert capsys.readouterr().err == (
            f"kimagekit: error: {ppc_seed_image}: image: segment[0]: new contents are 210507 "
            "bytes, 79435 more than the hand-over's memsz 131072\n")
    assert sha(ppc_seed_image) == before and not out.exists()


def test_in_place_and_usage(ppc_seed_image: Path, corpus: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "copy.img"
    shutil.copyfile(ppc_seed_image, img)
    raw = tmp_path / "raw"
    raw.write_bytes(b"opaque hand-over bytes")
    before = img.read_bytes()
    # The next kernel hands the buffer to IMA, which refuses anything but a measurement list.
    refusal = ("the next kernel would refuse it: ima-kexec-buffer: header.version at offset 0x0: "
               "version 28783 is not 1: incompatible measurement list")
    assert main(["patch-handover", str(img), "--data", str(raw), "--in-place"]) == 1
    assert capsys.readouterr().err == (
        f"kimagekit: error: {img}: handover: segment[0]: {refusal}; nothing written (--force "
        "writes it anyway)\n")
    assert img.read_bytes() == before
    assert main(["patch-handover", str(img), "--data", str(raw), "--in-place", "--force"]) == 0
    assert capsys.readouterr().err == (
        f"kimagekit: warning: {img}: written with --force: {refusal}\n")
    info = read_image(img.read_bytes())
    assert segment_bytes(img.read_bytes(), info, 0) == raw.read_bytes()
    assert main(["verify", str(img)]) == 1
    assert capsys.readouterr().out == f"FAILED: hand-over segment 0: {refusal}\n"
    cases = [
        (["--data", str(raw)], "give exactly one of -o OUT and --in-place (the input is never "
                               "changed otherwise)"),
        (["--data", str(raw), "--ima", str(raw), "--in-place"],
         "give exactly one of --ima LIST and --data FILE"),
        (["--data", str(raw), "--in-place", "--start", "0"],
         "--start/--size/--style/--remove/--pack are for device trees (kimagekit dtb "
         "handover)"),
    ]
    for extra, msg in cases:
        assert main(["patch-handover", str(img), *extra]) == 2
        assert capsys.readouterr().err == f"kimagekit: error: {msg}\n"


def test_hashed_handover_needs_reseal(ppc_ima_image: Path, corpus: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    longer = cat(tmp_path / "longer", corpus / PPC_IMA_LIST, corpus / GOIMA)
    out = tmp_path / "resealed.img"
    assert main(["patch-handover", str(ppc_ima_image), "--ima", str(longer), "-o",
                 str(out)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {ppc_ima_image}: image: segment[0]: the upstream-4.10 digest "
        "policy hashes the hand-over segment: it can only change with a reseal\n")
    assert not out.exists()
    assert main(["patch-handover", str(ppc_ima_image), "--ima", str(longer), "-o", str(out),
                 "--reseal"]) == 0
    text = capsys.readouterr().out
    data = out.read_bytes()
    old, new = read_image(ppc_ima_image.read_bytes()), read_image(data)
    assert old.regions == new.regions == (
        (0x1FFE0000, 0x20000), (0, 0x2880000), (0x1FFD0000, 0x10000))
    # upstream-4.10: the new hand-over is hashed with the rest, in segment order, zero-padded
    h = hashlib.sha256()
    for s in new.segments:
        h.update(segment_bytes(data, new, s.index) + bytes(s.memsz - s.bufsz))
    want = h.hexdigest()
    assert old.digest.hex() != want
    assert text == (f"{out}: hand-over segment 0 at 0x1ffe0000: 49352 -> 85344 of 131072 bytes, "
                    f"resealed; verified, digest {want}\n"
                    f"{out}: IMA ima-kexec-buffer: 616 entries, restore ok\n")
    assert main(["verify", str(out)]) == 0
    assert capsys.readouterr().out == f"ok {want}\n"


def _flipped(src: Path, tmp_path: Path, index: int, at: int) -> tuple[Path, ImageInfo]:
    data = bytearray(src.read_bytes())
    info = read_image(data)
    data[info.segments[index].offset + at] ^= 0x01
    out = tmp_path / f"flip{index}-{at}.img"
    out.write_bytes(data)
    return out, info


@pytest.mark.parametrize("which", ["seed", "ima"])
def test_flip_in_each_checksummed_segment(which: str, request: pytest.FixtureRequest,
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    src: Path = request.getfixturevalue(f"ppc_{which}_image")
    want = {
        "seed": {1: "segment 1 (kernel, region 0 at 0x2ca0000)",
                 2: "segment 2 (initrd, region 1 at 0x0)",
                 3: "segment 3 (dtb, region 2 at 0xfffd0000)"},
        # upstream-4.10: the IMA buffer is hashed too, frozen at load.
        "ima": {0: "segment 0 (handover, region 0 at 0x1ffe0000)",
                1: "segment 1 (kernel, region 1 at 0x0)",
                2: "segment 2 (dtb, region 2 at 0x1ffd0000)"},
    }[which]
    info = read_image(src.read_bytes())
    assert [s.index for s in info.segments if s.checksummed] == list(want)
    for index, name in want.items():
        p, _ = _flipped(src, tmp_path, index, info.segments[index].bufsz // 2)
        assert main(["verify", str(p)]) == 1
        # A flipped hand-over also fails the next kernel's own reading of it.
        also = HANDOVER_0X6064 if info.segments[index].role == Role.HANDOVER else []
        assert capsys.readouterr().out == "".join(
            f"FAILED: {line}\n" for line in [f"{name} differs from what was sealed", *also])
        p.unlink()


# The list's entry 188 with bit 0 of the hand-over's byte 0x6064 flipped (its template data's
# length), as the next kernel (restore) and the entry walk see it.
HANDOVER_0X6064 = [
    "hand-over segment 0: the next kernel would refuse it: ima-kexec-buffer: "
    "entry[188].template_data at offset 0x6067: template data does not split into 3 fields "
    "(it keeps the 188 entries before it)",
    "hand-over segment 0: entries cannot be read: ima-list: entry[189].template_name_len at "
    "offset 0x61d2: template_name_len 761359721 exceeds the 24306 bytes left"]


def test_flip_in_handover_verify_and_inspect_fail(ppc_seed_image: Path, corpus: Path,
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # Entry 188's template data (restore refuses) and entry 0's stored SHA-1 digest (restore
    # takes it as is; only the recheck finds it). The digest leaves the hand-over out (seed
    # policy), yet verify and inspect both judge it and exit 1. The list's first digest, raw:
    first = (corpus / PPC_IMA_LIST).read_bytes()[4:24]
    flipped = bytes([first[0] ^ 1]) + first[1:]
    want = {
        0x6064: [
            "    IMA ima-kexec-buffer: 0 entries, restore FAILED",
            "    DAMAGE: the next kernel would refuse it: ima-kexec-buffer: "
            "entry[188].template_data at offset 0x6067: template data does not split into 3 "
            "fields (it keeps the 188 entries before it)",
            "    DAMAGE: entries cannot be read: ima-list: entry[189].template_name_len at "
            "offset 0x61d2: template_name_len 761359721 exceeds the 24306 bytes left"],
        24 + 4: [
            "    IMA ima-kexec-buffer: 362 entries, restore ok",
            # replayed as `ima replay` does: the stored SHA-1 digests (entry 0's flipped one), so
            # the chain no longer reaches the TPM's 9be6bac0...; sha256 is recomputed
            "    PCR 10 sha1 77a5d779b729198f2b09c44d71268e3e45f0c7e1",
            "    PCR 10 sha256 7fac48c81837d6d29046008aef0cdad8c2745cc98c3340cbba9bfdf39b4124b8",
            "    DAMAGE: 1 template digest mismatch(es), first entry[0] at offset 0x18: stored "
            f"{flipped.hex()}, computed {first.hex()}"],
    }
    for at, lines in want.items():
        p, _ = _flipped(ppc_seed_image, tmp_path, 0, at)
        assert main(["verify", str(p)]) == 1
        assert capsys.readouterr().out == "".join(
            f"FAILED: hand-over segment 0: {line.split('DAMAGE: ', 1)[1]}\n"
            for line in lines if "DAMAGE: " in line)
        assert main(["inspect", str(p)]) == 1
        text = capsys.readouterr().out.splitlines()
        k = text.index("  hand-over: 0xfffe0000 size 0x20000 used 0xc0c8 style seed (content "
                       "changed since written)")
        assert text[k + 2:k + 2 + len(lines)] == lines
        assert text[k + 2 + len(lines)].startswith("  /chosen ")
        p.unlink()


def test_patch_refuses_a_tree_announcing_something_else(corpus: Path, tmp_path: Path) -> None:
    # A loader that announced bufsz instead of memsz: patching would leave the next kernel
    # reading the wrong length, so it is refused and nothing is written.
    tree = DeviceTree.parse((corpus / "dtb/qemu-7.2-ppc64-pseries.dtb").read_bytes())

    def hook(req: DtRequest) -> bytes:
        t = DeviceTree.parse(req.dtb)
        assert req.handover is not None
        setup_chosen(t, DtRequest(req.dtb, None, (req.handover[0], 0x100), req.handover_style,
                                  ""))
        return t.build(pack=True)

    img = build(target_from_tree(tree, "ppc64le"), gen.make_vmlinux(), tree.build(), hook,
                handover=b"h" * 0x100, handover_size=0x10000,
                handover_style=HandoverStyle.IMA)
    p = tmp_path / "odd.img"
    write_image(p, img)
    before = p.read_bytes()
    with pytest.raises(RuleError) as e:
        patch(p, b"new", out=tmp_path / "o.img")
    assert str(e.value) == ("handover: segment[0]: the device tree announces 0x1fff0000+0x100 "
                            "in ima style, not the hand-over segment 0x1fff0000+0x10000")
    assert p.read_bytes() == before and not (tmp_path / "o.img").exists()
