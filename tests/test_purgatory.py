"""Purgatory loading, relocation, symbols and the digest, on the synthetic object and the corpus."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from image_helpers import PURGATORY_CORPUS, gen

from kimagekit.errors import ParseError, RuleError
from kimagekit.image import read_image, write_image
from kimagekit.purgatory import (
    DigestPolicy,
    add_purgatory,
    apply_policy,
    compute_digest,
    find_symbol,
    get_symbol,
    hashes_role,
    layout,
    load,
    parse_purgatory,
    set_symbol,
    store_digest,
    symbol_address,
    symbols,
)
from kimagekit.segments import KexecBuf, MemRange, Role, Segment, SegmentList, Target, add_buffer

M = 0x7000_0000


def test_layout_and_addresses() -> None:
    obj = parse_purgatory(gen.make_purgatory())
    assert layout(obj) == type(layout(obj))(bufsz=0x1000, memsz=0x2000, buf_align=0x1000)
    lp = load(obj, M)
    names = {s.name: lp.sh_addr[s.index] for s in obj.sections if s.alloc}
    assert names == {".text": M, ".data": M + 0x40, ".kexec-purgatory": M + 0x140,
                     ".bss": M + 0x1000}
    assert lp.entry == M + 0x10
    assert symbol_address(lp, "purgatory_sha256_digest") == M + 0x240


def test_relocations_exact() -> None:
    lp = load(parse_purgatory(gen.make_purgatory()), M)
    b = lp.buffer
    assert struct.unpack_from("<i", b, 0)[0] == 0x140 - 4 - 0  # PC32 to the regions
    assert struct.unpack_from("<i", b, 4)[0] == 0x10 - 4 - 4  # PLT32 to purgatory_start
    assert struct.unpack_from("<I", b, 8)[0] == M + 0x40 + 0x10  # 32 to .data + 0x10
    assert struct.unpack_from("<I", b, 12)[0] == M + 0x1000  # 32S to bss_var
    assert struct.unpack_from("<Q", b, 0x20)[0] == M + 0x240 + 8  # 64 to the digest + 8
    assert b[0x10:0x20] == bytes((0x90 + i) & 0xFF for i in range(0x10, 0x20))


def test_relocation_overflow() -> None:
    obj = parse_purgatory(gen.make_purgatory())
    with pytest.raises(RuleError) as e:
        load(obj, 0x1_0000_0000)
    assert str(e.value) == ("purgatory: .rela.text[2] at offset 0xb0: R_X86_64_32 against '' "
                            "overflows: 0x100000050 does not fit in 32 bits")


def test_undefined_symbol_refused() -> None:
    obj = parse_purgatory(gen.make_purgatory(extra_reloc=(0x28, 1, "undefined_fn", 0)))
    with pytest.raises(RuleError) as e:
        load(obj, M)
    assert str(e.value) == ("purgatory: .rela.text[5] at offset 0xf8: undefined symbol "
                            "'undefined_fn'")


def test_unsupported_relocation_type() -> None:
    obj = parse_purgatory(gen.make_purgatory(extra_reloc=(0x28, 24, "purgatory_start", 0)))
    with pytest.raises(RuleError) as e:
        load(obj, M)
    assert str(e.value) == ("purgatory: .rela.text[5].r_info at offset 0x100: relocation type 24 "
                            "is not supported for e_machine 62")


def test_symbols_get_set_rules() -> None:
    lp = load(parse_purgatory(gen.make_purgatory()), M)
    lp2 = set_symbol(lp, "purgatory_sha256_digest", b"\xaa" * 32)
    assert get_symbol(lp2, "purgatory_sha256_digest", 32) == b"\xaa" * 32
    assert lp2.buffer[:0x240] == lp.buffer[:0x240]
    with pytest.raises(RuleError) as e:
        set_symbol(lp, "purgatory_sha256_digest", b"\0" * 31)
    assert str(e.value) == ("purgatory: purgatory_sha256_digest: symbol "
                            "'purgatory_sha256_digest' is 32 bytes, not the 31 to set")
    with pytest.raises(RuleError) as e:
        set_symbol(lp, "bss_var", b"\0" * 8)
    assert str(e.value) == ("purgatory: bss_var: symbol 'bss_var' is in a NOBITS section (.bss): "
                            "cannot set")
    with pytest.raises(RuleError) as e:
        find_symbol(lp.obj, "local_only")
    assert str(e.value) == "purgatory: local_only: no global symbol 'local_only'"
    with pytest.raises(RuleError) as e:
        find_symbol(lp.obj, "undefined_fn")
    sym = next(s for s in symbols(lp.obj) if s.name == "undefined_fn")
    assert sym.offset is not None  # the .symtab entry that names it
    assert str(e.value) == (f"purgatory: undefined_fn at offset {sym.offset:#x}: symbol "
                            "'undefined_fn' has bad section index 0")


def test_old_symbol_names() -> None:
    lp = load(parse_purgatory(gen.make_purgatory(old_names=True)), M)
    d = compute_digest((Segment(b"abc", 0x100000, 0x1000, Role.KERNEL),))
    lp = store_digest(lp, d)
    assert get_symbol(lp, "sha256_digest", 32) == d.digest


def test_digest_definition() -> None:
    """SHA-256 over bufsz bytes then memsz - bufsz zeros, in segment order, skipping the
    purgatory and what the policy leaves out."""
    segs = (Segment(b"P" * 10, 0x1000, 0x1000, Role.PURGATORY),
            Segment(b"K" * 100, 0x2000, 0x2000, Role.KERNEL),
            Segment(b"H" * 5, 0x4000, 0x1000, Role.HANDOVER),
            Segment(b"I" * 7, 0x5000, 0x1000, Role.INITRD))
    t = Target("x86_64", ram=(MemRange(0, 1 << 20),))
    want_all = hashlib.sha256(b"K" * 100 + bytes(0x2000 - 100) + b"H" * 5 + bytes(0x1000 - 5)
                              + b"I" * 7 + bytes(0x1000 - 7)).digest()
    want_skip = hashlib.sha256(b"K" * 100 + bytes(0x2000 - 100) + b"I" * 7
                               + bytes(0x1000 - 7)).digest()
    for policy, want, regions in (
            (DigestPolicy.UPSTREAM_4_10, want_all, ((0x2000, 0x2000), (0x4000, 0x1000),
                                                    (0x5000, 0x1000))),
            (DigestPolicy.SEED, want_skip, ((0x2000, 0x2000), (0x5000, 0x1000))),
            (DigestPolicy.UPSTREAM_6_15, want_skip, ((0x2000, 0x2000), (0x5000, 0x1000)))):
        d = compute_digest(apply_policy(SegmentList(t, segs), policy).segments)
        assert (d.digest, d.regions) == (want, regions), policy
    assert not hashes_role(DigestPolicy.UPSTREAM_4_10, Role.PURGATORY)


@pytest.mark.parametrize(("mutate", "text"), [
    (lambda b: b[:40], "purgatory: e_ident at offset 0x0: file is 40 bytes, shorter than an "
                       "ELF64 header (64)"),
    (lambda b: b"\x7fELG" + b[4:], "purgatory: e_ident.EI_MAG at offset 0x0: not an ELF "
                                   "file (bad magic)"),
    (lambda b: b[:16] + b"\x02\x00" + b[18:], "purgatory: e_type at offset 0x10: e_type 2 is not "
                                              "ET_REL (a purgatory is relocatable)"),
    (lambda b: b[:-10], "purgatory: e_shoff at offset 0x28: section table (9 x 64 at 0x4c8) runs "
                        "past the end of the file (1790 bytes)"),
])
def test_corrupt_objects(mutate: object, text: str) -> None:
    data = mutate(gen.make_purgatory())  # type: ignore[operator]
    with pytest.raises(ParseError) as e:
        parse_purgatory(data)
    assert str(e.value) == text


def test_section_past_end() -> None:
    b = bytearray(gen.make_purgatory())
    shoff = struct.unpack_from("<Q", b, 40)[0]
    struct.pack_into("<Q", b, shoff + 64 * 3 + 32, 0x10000)  # .data sh_size
    with pytest.raises(ParseError) as e:
        parse_purgatory(bytes(b))
    assert str(e.value) == ("purgatory: shdr[3].sh_offset at offset 0x5a0: section content "
                            "(0x10000 bytes at 0x100) runs past the end of the file (1800 bytes)")


# --- the real x86-64 purgatory ------------------------------------------------------------------

def test_corpus_purgatory_loads_relocates_and_reads_back(corpus: Path, tmp_path: Path) -> None:
    raw = (corpus / PURGATORY_CORPUS).read_bytes()
    obj = parse_purgatory(raw)
    assert layout(obj) == type(layout(obj))(bufsz=0x4000, memsz=0x5000, buf_align=0x1000)
    sl = SegmentList(Target("x86_64", ram=gen.X86_RAM))
    sl, lp = add_purgatory(sl, obj, buf_max=0x7FFFFFFF)
    assert (lp.mem, lp.entry) == (0x7FFFB000, 0x7FFFB120)
    # .rela.rodata: R_X86_64_64 to .rodata + 0 at .rodata + 2 (gdt pointer)
    rodata = next(s for s in obj.sections if s.name == ".rodata")
    at = lp.buf_offset[rodata.index] + 2
    assert struct.unpack_from("<Q", lp.buffer, at)[0] == lp.sh_addr[rodata.index]
    # .rela.text[0]: PC32 at .text+0xe to purgatory_sha_regions - 4
    place = lp.sh_addr[1] + 0xE
    assert struct.unpack_from("<i", lp.buffer, 0xE)[0] == \
        symbol_address(lp, "purgatory_sha_regions") - 4 - place
    sl, _ = add_buffer(sl, KexecBuf(gen.filler(0x3000, 5), 0x3000, Role.KERNEL,
                                    buf_min=0x1000000, buf_align=0x200000))
    sl, _ = add_buffer(sl, KexecBuf(b"ho", 0x1000, Role.HANDOVER, top_down=True,
                                    checksummed=False))
    from kimagekit.image import seal
    img = seal(sl, DigestPolicy.SEED, purgatory=lp)
    out = tmp_path / "corpus.img"
    write_image(out, img)
    data = out.read_bytes()
    info = read_image(data)
    pseg = info.segment(Role.PURGATORY)
    assert pseg is not None
    # Independent read: pyelftools finds the symbols in the original object and the purgatory's
    # PT_LOAD in the image file; the values are read from that segment's data.
    with out.open("rb") as f:
        loads = [sg for sg in ELFFile(f).iter_segments() if sg["p_type"] == "PT_LOAD"]
        (seg,) = [sg for sg in loads if sg["p_paddr"] == pseg.mem]
        assert (seg["p_offset"], seg["p_filesz"], seg["p_memsz"]) == (pseg.offset, pseg.bufsz,
                                                                      pseg.memsz)
        body = seg.data()
    with (corpus / PURGATORY_CORPUS).open("rb") as f:
        ef = ELFFile(f)
        symtab = ef.get_section_by_name(".symtab")
        got = {}
        for name, size in (("purgatory_sha_regions", 256), ("purgatory_sha256_digest", 32)):
            sym = symtab.get_symbol_by_name(name)[0]
            assert sym["st_size"] == size
            start = lp.buf_offset[sym["st_shndx"]] + sym["st_value"]
            got[name] = body[start:start + size]
    want_regions = b"".join(a.to_bytes(8, "little") + n.to_bytes(8, "little")
                            for a, n in img.digest.regions).ljust(256, b"\0")
    assert got["purgatory_sha_regions"] == want_regions
    assert got["purgatory_sha256_digest"] == img.digest.digest
    kernel = info.segment(Role.KERNEL)
    assert kernel is not None
    assert img.digest.digest == hashlib.sha256(
        data[kernel.offset:kernel.offset + kernel.bufsz]
        + bytes(kernel.memsz - kernel.bufsz)).digest()


def test_huge_section_alignment_is_refused_before_allocating() -> None:
    # found by fuzz/fuzz.py (purgatory target): alignment padding, not sizes, made the buffer huge
    data = bytearray(gen.make_purgatory())
    obj = parse_purgatory(bytes(data))
    second = [s for s in obj.sections if s.alloc and not s.nobits][1]
    e_shoff = struct.unpack_from("<Q", data, 40)[0]
    at = e_shoff + 64 * second.index + 48
    struct.pack_into("<Q", data, at, 1 << 39)
    # Refused as it is read: no loaded section of a real purgatory aligns past a page.
    with pytest.raises(ParseError) as bad:
        parse_purgatory(bytes(data))
    assert str(bad.value) == (
        f"purgatory: shdr[{second.index}].sh_addralign at offset {at:#x}: sh_addralign "
        "0x8000000000 of a loaded section exceeds 0x100000")
    # Within that bound, padding that still outgrows the file is refused before allocating,
    # by the layout itself, so placing (add_purgatory) and loading refuse alike.
    struct.pack_into("<Q", data, at, 1 << 20)
    big = parse_purgatory(bytes(data))
    with pytest.raises(RuleError) as err:
        layout(big)
    size = int(str(err.value).split(" would be ")[1].split(" ")[0], 16)
    assert size > len(data) + (1 << 20)
    assert str(err.value) == (
        f"purgatory: sh_addralign: laid-out purgatory would be {size:#x} bytes, "
        f"more than its {len(data)}-byte file allows")
    with pytest.raises(RuleError) as again:
        load(big, M)
    assert str(again.value) == str(err.value)
    sl = SegmentList(Target("x86_64", 4096, (MemRange(0x100000, 0x7FFFFFFF),)), ())
    with pytest.raises(RuleError) as placing:
        add_purgatory(sl, big)
    assert str(placing.value) == str(err.value)


def test_a_loaded_null_section_is_held_to_the_file() -> None:
    """Found by the command campaign (build-x86_64, seed 2, input 17240): an SHT_NULL section
    with SHF_ALLOC is loaded as content (the loader tells only NOBITS apart), so its size was
    not bounded by the file and add_purgatory allocated it (MemoryError)."""
    data = bytearray(gen.make_purgatory())
    obj = parse_purgatory(bytes(data))
    third = [s for s in obj.sections if s.alloc and not s.nobits][2]
    e_shoff = struct.unpack_from("<Q", data, 40)[0]
    at = e_shoff + 64 * third.index
    struct.pack_into("<I", data, at + 4, 0)  # sh_type = SHT_NULL, SHF_ALLOC kept
    struct.pack_into("<Q", data, at + 32, 0x3000100000031)  # sh_size
    with pytest.raises(ParseError) as bad:
        parse_purgatory(bytes(data))
    assert str(bad.value) == (
        f"purgatory: shdr[{third.index}].sh_offset at offset {at + 24:#x}: section content "
        f"(0x3000100000031 bytes at {third.sh_offset:#x}) runs past the end of the file "
        f"({len(data)} bytes)")
