"""The image file: layout checked with readelf, verify, patch_handover, corrupt files."""

from __future__ import annotations

import hashlib
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import need_tool
from image_helpers import gen

from kimagekit.arch.ppc64 import DtRequest, build
from kimagekit.errors import ParseError, RuleError
from kimagekit.image import open_image, patch_handover, read_image, verify, write_image
from kimagekit.purgatory import DigestPolicy
from kimagekit.segments import MemRange, Role, Target


def readelf(path: Path) -> str:
    tool = need_tool("readelf")
    r = subprocess.run([tool, "-W", "-l", "-h", "-n", str(path)], capture_output=True,
                       text=True, check=True)
    assert "Warning" not in r.stderr and "Error" not in r.stderr, r.stderr
    return r.stdout


def written(tmp_path: Path, name: str = "img", **kw: object) -> Path:
    p = tmp_path / name
    write_image(p, gen.x86_like_image(**kw))
    return p


@pytest.mark.parametrize("policy", list(DigestPolicy))
@pytest.mark.parametrize("purgatory", [True, False])
def test_layout_matches_readelf(tmp_path: Path, policy: DigestPolicy, purgatory: bool) -> None:
    p = written(tmp_path, policy=policy, purgatory=purgatory)
    text = readelf(p)
    with open_image(p) as (info, _):
        assert "Type:                              EXEC" in text
        assert "Advanced Micro Devices X86-64" in text
        assert f"Entry point address:               {info.entry:#x}" in text
        loads = [ln.split() for ln in text.splitlines() if ln.strip().startswith("LOAD")]
        assert len(loads) == len(info.segments)
        for s, ln in zip(info.segments, loads, strict=True):
            off, vaddr, paddr, filesz, memsz = (int(x, 16) for x in ln[1:6])
            assert (off, vaddr, paddr, filesz, memsz) == (s.offset, s.mem, s.mem, s.bufsz,
                                                          s.memsz)
            assert off % 4096 == 0
        assert "kimagekit" in text and "NOTE" in text
        assert info.policy == policy and info.has_purgatory == purgatory
        assert info.cmdline == "console=ttyS0 root=/dev/vda"
    assert verify(p).ok


def test_flip_each_checksummed_segment(tmp_path: Path) -> None:
    p = written(tmp_path)
    base = p.read_bytes()
    info = read_image(base)
    hashed = [s for s in info.segments if s.checksummed]
    assert [s.role for s in hashed] == [Role.BOOT_PARAMS, Role.KERNEL, Role.INITRD]
    for k, s in enumerate(hashed):
        bad = bytearray(base)
        bad[s.offset + s.bufsz // 2] ^= 0x01
        p.write_bytes(bad)
        r = verify(p)
        assert not r.ok
        assert (r.bad_segment, r.bad_region) == (s.index, k)
        assert r.reason == (f"segment {s.index} ({s.role}, region {k} at {s.mem:#x}) differs "
                            "from what was sealed")
    ho = info.segment(Role.HANDOVER)
    assert ho is not None
    bad = bytearray(base)
    bad[ho.offset] ^= 0xFF
    p.write_bytes(bad)
    assert verify(p).ok


def test_flip_in_purgatory_digest_is_caught(tmp_path: Path) -> None:
    p = written(tmp_path)
    data = bytearray(p.read_bytes())
    info = read_image(data)
    purg = info.segment(Role.PURGATORY)
    sym = info.symbol("purgatory_sha256_digest")
    assert purg is not None and sym is not None
    data[purg.offset + sym.value - purg.mem] ^= 1
    p.write_bytes(data)
    r = verify(p)
    assert (r.ok, r.bad_segment, r.reason) == (
        False, 0, "the purgatory's regions or digest differ from the note's")


def test_patch_handover_fits_and_keeps_everything_else(tmp_path: Path) -> None:
    p = written(tmp_path)
    out = tmp_path / "patched"
    new = b"N" * 0x3000
    res = patch_handover(p, new, out=out)
    assert res.verify.ok and res.segment.bufsz == 0x3000 and res.old_bufsz == 948
    a, b = p.read_bytes(), out.read_bytes()
    ia, ib = read_image(a), read_image(b)
    for sa, sb in zip(ia.segments, ib.segments, strict=True):
        assert (sa.mem, sa.memsz, sa.offset) == (sb.mem, sb.memsz, sb.offset)
        if sa.role != Role.HANDOVER:
            assert a[sa.offset:sa.offset + sa.bufsz] == b[sb.offset:sb.offset + sb.bufsz]
    ho = ib.segment(Role.HANDOVER)
    assert ho is not None and b[ho.offset:ho.offset + ho.bufsz] == new
    readelf(out)


def test_patch_handover_too_large_leaves_input(tmp_path: Path) -> None:
    p = written(tmp_path)
    before = p.read_bytes()
    with pytest.raises(RuleError) as e:
        patch_handover(p, b"x" * 0x4005)
    assert str(e.value) == ("image: segment[4]: new contents are 16389 bytes, 5 more than the "
                            "hand-over's memsz 16384")
    assert p.read_bytes() == before


def test_patch_handover_needs_reseal_when_hashed(tmp_path: Path) -> None:
    p = written(tmp_path, policy=DigestPolicy.UPSTREAM_4_10)
    before = p.read_bytes()
    with pytest.raises(RuleError) as e:
        patch_handover(p, b"new")
    assert str(e.value) == ("image: segment[4]: the upstream-4.10 digest policy hashes the "
                            "hand-over segment: it can only change with a reseal")
    assert p.read_bytes() == before
    assert verify(p).digest == expected_digest(gen.handover_buffer())
    res = patch_handover(p, b"new", reseal=True)
    assert res.resealed and res.verify.ok
    assert res.verify.digest == res.verify.computed == expected_digest(b"new")
    assert verify(p).digest == expected_digest(b"new")
    readelf(p)


def expected_digest(handover: bytes | None = None) -> bytes:
    """The digest of gen.x86_like_image, from its generator's contents alone: boot-params
    (filler 1, 0x1800 of 0x2000), kernel (filler 2, 0x6000 of 0xc000), initrd (filler 3,
    0x5000), then, when the policy hashes it, the hand-over (of 0x4000), zero-padded."""
    data = (gen.filler(0x1800, 1) + bytes(0x800) + gen.filler(0x6000, 2) + bytes(0x6000)
            + gen.filler(0x5000, 3))
    if handover is not None:
        data += handover + bytes(0x4000 - len(handover))
    return hashlib.sha256(data).digest()


def test_seed_digest_is_the_generators(tmp_path: Path) -> None:
    r = verify(written(tmp_path))
    assert (r.ok, r.digest, r.computed) == (True, expected_digest(), expected_digest())
    assert r.regions == ((0x7FFFC000, 0x2000), (0x1000000, 0xC000), (0x7FFF7000, 0x5000))


def test_reseal_without_purgatory(tmp_path: Path) -> None:
    p = written(tmp_path, policy=DigestPolicy.UPSTREAM_4_10, purgatory=False)
    res = patch_handover(p, b"other", reseal=True)
    assert res.verify.ok and res.resealed
    # without a purgatory the note holds the digest
    assert res.verify.digest == read_image(p.read_bytes()).digest == expected_digest(b"other")


def test_old_symbol_names_image(tmp_path: Path) -> None:
    p = written(tmp_path, old_names=True)
    r = verify(p)
    assert (r.ok, r.digest) == (True, expected_digest())
    info = read_image(p.read_bytes())
    purg, sym = info.segment(Role.PURGATORY), info.symbol("sha256_digest")
    assert purg is not None and sym is not None and info.symbol("purgatory_sha256_digest") is None
    at = purg.offset + sym.value - purg.mem
    assert p.read_bytes()[at:at + 32] == expected_digest()


def test_ppc64le_build_without_purgatory(tmp_path: Path) -> None:
    seen: list[DtRequest] = []

    def hook(req: DtRequest) -> bytes:
        seen.append(req)
        return req.dtb + b"\0" * 8

    t = Target("ppc64le", page_size=0x10000, ram=(MemRange(0, 1 << 30),),
               reserved=(MemRange(0x3000000, 0x10000),))
    img = build(t, gen.make_vmlinux(), b"DTBDTB", hook, initrd=gen.filler(0x18000, 9),
                handover=b"ima" * 10, handover_size=0x20000, cmdline="root=/dev/sda",
                no_purgatory=True)
    p = tmp_path / "ppc.img"
    write_image(p, img)
    text = readelf(p)
    assert "PowerPC64" in text
    info = read_image(p.read_bytes())
    roles = [s.role for s in info.segments]
    assert roles == [Role.HANDOVER, Role.KERNEL, Role.INITRD, Role.DTB]
    ho, kern, rd, _dtb = info.segments
    assert (ho.mem, ho.memsz) == ((1 << 30) - 0x20000, 0x20000)
    assert (kern.mem, kern.memsz, info.entry) == (0, 0x10000, 0)
    assert rd.mem == 0x10000
    assert seen[0].initrd == (0x10000, 0x18000) and seen[0].handover == (ho.mem, 0x20000)
    assert all(s.mem % 0x10000 == 0 and s.memsz % 0x10000 == 0 for s in info.segments)
    assert verify(p).ok and not info.has_purgatory


# --- corrupt images -----------------------------------------------------------------------------

def _corrupt(base: bytes, how: str) -> bytes:
    b = bytearray(base)
    phoff = 64
    nph = struct.unpack_from("<H", b, 56)[0]
    note_ph = phoff + (nph - 1) * 56
    note_off = struct.unpack_from("<Q", b, note_ph + 8)[0]
    if how == "truncated-ehdr":
        return bytes(b[:50])
    if how == "bad-class":
        b[4] = 1
    elif how == "phdrs-out-of-file":
        struct.pack_into("<Q", b, 32, len(b) - 10)
    elif how == "load-out-of-file":
        struct.pack_into("<Q", b, phoff + 32, len(b))
    elif how == "note-descsz-huge":
        struct.pack_into("<I", b, note_off + 4, 0xFFFFFFF0)
    elif how == "note-nr-segments":
        struct.pack_into("<I", b, note_off + 12 + 12 + 4, 17)
    elif how == "note-cmdline-len":
        struct.pack_into("<I", b, note_off + 24 + 12, 0x7FFFFFFF)
    elif how == "no-note":
        struct.pack_into("<I", b, note_ph, 6)  # PT_PHDR: no PT_NOTE left
    elif how == "note-mismatch":
        struct.pack_into("<Q", b, phoff + 40, 0x3000)  # p_memsz of segment 0
    return bytes(b)


CORRUPT = {
    "truncated-ehdr": "image: ehdr at offset 0x0: file is 50 bytes, shorter than an ELF64 "
                      "header (64)",
    "bad-class": "image: e_ident.EI_CLASS at offset 0x4: EI_CLASS 1 is not ELFCLASS64",
    "phdrs-out-of-file": "image: e_phoff at offset 0x20: program headers (6 x 56 at 0xf3aa) run "
                         "past the end of the file (62388 bytes)",
    "load-out-of-file": "image: phdr[0].p_filesz at offset 0x60: content (0xf3b4 bytes at "
                        "0x1000) runs past the end of the file (62388 bytes)",
    "note-descsz-huge": "image: phdr[5].note[0].n_descsz at offset 0x194: note descriptor "
                        "(4294967280 bytes) runs past its PT_NOTE (1052 bytes left)",
    "note-nr-segments": "image: note.nr_segments at offset 0x1ac: nr_segments 17 exceeds 16",
    "note-cmdline-len": "image: note.cmdline_len at offset 0x1b4: note needs 2147484671 bytes "
                        "for its counts, the descriptor has 1051",
    "no-note": "image: PT_NOTE: no kimagekit note (not an image written by kimagekit)",
    "note-mismatch": "image: note.segment[0].memsz: memsz 0x2000 differs from PT_LOAD[0].p_memsz "
                     "0x3000",
}


@pytest.mark.parametrize("how", list(CORRUPT))
def test_corrupt_images(tmp_path: Path, how: str) -> None:
    base = written(tmp_path).read_bytes()
    with pytest.raises(ParseError) as e:
        read_image(_corrupt(base, how))
    assert str(e.value) == CORRUPT[how]
