"""``patch-handover`` writes only what changes when the hand-over is outside the digest: the
hand-over's slot and the head (PT_LOAD p_filesz, the note's bufsz and sha256), in place or over
a ``copy_file_range`` copy, with the same bytes as a whole rewrite of the image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from image_helpers import gen

from kimagekit import image as image_mod
from kimagekit import output_files
from kimagekit.errors import OutputError, Refused
from kimagekit.image import (
    HandoverStyle,
    _rebuilt,
    content,
    image_chunks,
    open_image,
    patch_handover,
    read_image,
    seal,
    segment_sha256,
    verify,
    write_image,
)
from kimagekit.image_info import describe
from kimagekit.purgatory import DigestPolicy
from kimagekit.segments import KexecBuf, Role, SegmentList, Target, add_buffer

X86_RAM = gen.X86_RAM
NEW = {  # hand-over contents of every size relation to the old 948 bytes
    "shorter": b"s" * 100, "equal": b"e" * 948, "longer": b"L" * 0x3000, "memsz": b"M" * 0x4000,
}


def handover_first(path: Path) -> Path:
    """An image whose hand-over is its first segment (as ppc64 adds it), so its slot is
    followed by other segments rather than the end of the file."""
    sl = SegmentList(Target("x86_64", ram=X86_RAM))
    sl, _ = add_buffer(sl, KexecBuf(gen.handover_buffer(), 0x4000, Role.HANDOVER, top_down=True,
                                    checksummed=False))
    sl, _ = add_buffer(sl, KexecBuf(gen.filler(0x6000, 2), 0xC000, Role.KERNEL,
                                    buf_align=0x200000, buf_min=0x1000000, buf_max=0x7FFFFFFF))
    sl, _ = add_buffer(sl, KexecBuf(gen.filler(0x5000, 3), 0x5000, Role.INITRD,
                                    buf_max=0x7FFFFFFF, top_down=True))
    write_image(path, seal(sl, DigestPolicy.SEED, entry=0x1000000,
                           handover_style=HandoverStyle.NONE))
    return path


def whole_rewrite(path: Path, data: bytes) -> bytes:
    """What the image is when written whole with the new hand-over (the path before)."""
    with open_image(path) as (info, view):
        ho = info.segment(Role.HANDOVER)
        assert ho is not None
        return b"".join(bytes(c) for c in image_chunks(_rebuilt(info, view, ho.index, data,
                                                                False)))


def forbid_whole_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, fail if an image is written whole: the edit path must be the one taken."""
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the whole image was written")
    monkeypatch.setattr(image_mod, "atomic_write", refuse)


@pytest.mark.parametrize("new", list(NEW))
@pytest.mark.parametrize("layout", ["last", "last-no-purgatory", "first"])
def test_edits_give_the_bytes_of_a_whole_rewrite(tmp_path: Path, new: str, layout: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "img"
    if layout == "first":
        handover_first(src)
    else:
        write_image(src, gen.x86_like_image(purgatory=layout == "last"))
    data = NEW[new]
    want = whole_rewrite(src, data)
    inode = src.stat().st_ino
    forbid_whole_write(monkeypatch)
    out = tmp_path / "out"
    res = patch_handover(src, data, out=out)
    assert out.read_bytes() == want
    assert (res.segment.bufsz, res.resealed, res.verify.ok) == (len(data), False, True)
    res = patch_handover(src, data)
    assert src.read_bytes() == want and src.stat().st_ino == inode
    assert res.segment.sha256 == segment_sha256(data, res.segment.memsz)
    assert sorted(os.listdir(tmp_path)) == ["img", "out"]


def test_a_file_not_laid_out_as_written_is_rewritten_whole(tmp_path: Path) -> None:
    """A stray byte in the padding after the boot parameters (0x1800 bytes in a 0x2000 slot):
    the edit path would keep it, so the image is written whole (padding zeroed) as before."""
    src = tmp_path / "img"
    write_image(src, gen.x86_like_image())
    raw = bytearray(src.read_bytes())
    info = read_image(bytes(raw))
    bp = info.segment(Role.BOOT_PARAMS)
    assert bp is not None and bp.bufsz == 0x1800
    raw[bp.offset + bp.bufsz] = 0x55
    src.write_bytes(raw)
    want = whole_rewrite(src, b"new")
    inode = src.stat().st_ino
    patch_handover(src, b"new")
    assert src.read_bytes() == want and want[bp.offset + bp.bufsz] == 0
    assert src.stat().st_ino != inode  # replaced atomically


def test_reseal_in_place_is_still_replaced_atomically(tmp_path: Path) -> None:
    src = tmp_path / "img"
    write_image(src, gen.x86_like_image(policy=DigestPolicy.UPSTREAM_4_10))
    inode = src.stat().st_ino
    res = patch_handover(src, b"new", reseal=True)
    assert res.resealed and res.verify.ok and src.stat().st_ino != inode


def test_a_crash_between_the_slot_and_the_head_shows_as_changed_since_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The slot is written (and synced) before the head: stopped in between, the note still
    records the old hand-over's sha256, so inspect reports the content changed since written,
    while the digest, which never covers the hand-over, still verifies."""
    src = tmp_path / "img"
    write_image(src, gen.x86_like_image())
    before = src.read_bytes()
    real = output_files._pwrite_all
    calls: list[int] = []

    def crash_on_head(fd: int, at: int, data: bytes) -> None:
        calls.append(at)
        if at == 0:
            raise OSError(5, "Input/output error")
        real(fd, at, data)

    monkeypatch.setattr(output_files, "_pwrite_all", crash_on_head)
    new = gen.handover_buffer()[:-4] + b"\0\0\0\0"
    with pytest.raises(OutputError) as e:
        patch_handover(src, new)
    assert (e.value.file, str(e.value)) == (
        str(src), "--in-place: cannot write in place: Input/output error")
    ho = read_image(before).segment(Role.HANDOVER)
    assert ho is not None and calls == [ho.offset, 0]
    now = src.read_bytes()
    assert now[:ho.offset] == before[:ho.offset]  # head untouched: old bufsz and sha256
    assert now[ho.offset:ho.offset + ho.bufsz] == new
    s = describe(src)
    assert s.digest_ok and s.handover is not None and s.handover.unchanged is False
    assert s.segments[ho.index].unchanged is False


def test_a_copy_that_reads_back_wrong_is_not_renamed(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The copied bytes outside the digest (here the purgatory) are compared with the source
    before the rename; the digest's segments are checked by the verify after it."""
    src = tmp_path / "img"
    write_image(src, gen.x86_like_image())
    real = output_files._copy_range

    def zeros(s: int, d: int, at: int, to: int, n: int) -> None:
        real(s, d, at, to, n)
        os.pwrite(d, bytes(n), to)

    monkeypatch.setattr(output_files, "_copy_range", zeros)
    out = tmp_path / "out"
    with pytest.raises(OutputError) as e:
        patch_handover(src, b"new", out=out)
    assert (e.value.file, str(e.value)) == (str(out), "-o: read-back differs from what was written")
    assert sorted(os.listdir(tmp_path)) == ["img"]


def test_other_unchecksummed_segments_are_rehashed_as_a_whole_write_does(
        tmp_path: Path) -> None:
    """The purgatory is outside the digest: a byte changed in it since it was written is
    recorded anew by the patch, exactly as the whole rewrite records it."""
    src = tmp_path / "img"
    write_image(src, gen.x86_like_image())
    raw = bytearray(src.read_bytes())
    info = read_image(bytes(raw))
    purg = info.segment(Role.PURGATORY)
    assert purg is not None
    raw[purg.offset + purg.bufsz - 1] ^= 0xFF
    src.write_bytes(raw)
    want = whole_rewrite(src, b"new")
    patch_handover(src, b"new")
    assert src.read_bytes() == want
    with open_image(src) as (new, view):
        seg = new.segments[purg.index]
        assert seg.sha256 == segment_sha256(content(view, seg), seg.memsz)
    assert verify(src).ok


def test_a_file_it_may_not_write_is_replaced_whole(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """In place needs write access to the file; a rename needs only the folder's (root has
    both, so access is denied here by hand)."""
    src = tmp_path / "img"
    write_image(src, gen.x86_like_image())
    want = whole_rewrite(src, b"new")
    inode = src.stat().st_ino
    monkeypatch.setattr(os, "access", lambda *_a, **_k: False)
    patch_handover(src, b"new")
    assert src.read_bytes() == want and src.stat().st_ino != inode


@pytest.mark.parametrize("in_place", [True, False])
def test_a_damaged_digest_segment_is_named_and_nothing_is_written(tmp_path: Path,
                                                                  in_place: bool) -> None:
    """An image whose digest already fails is refused before any byte is written, naming the
    segment that changed since it was sealed (a patch must not hide the damage)."""
    src = tmp_path / "img"
    write_image(src, gen.x86_like_image())
    raw = bytearray(src.read_bytes())
    kernel = read_image(bytes(raw)).segment(Role.KERNEL)
    assert kernel is not None
    raw[kernel.offset + 5] ^= 1
    src.write_bytes(raw)
    out = src if in_place else tmp_path / "out"
    with pytest.raises(Refused) as e:
        patch_handover(src, b"new", out=None if in_place else out)
    assert str(e.value) == ("image: digest: the image does not verify before patching: segment 2 "
                            "(kernel, region 1 at 0x1000000) differs from what was sealed; "
                            "nothing written")
    assert src.read_bytes() == raw
    assert in_place or not out.exists()
