"""Kernels: bzImage, ELF vmlinux, arm64 Image and zboot described; payloads decompressed with a
bound; the embedded purgatory found; corrupt kernels refused naming the field."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import need_tool
from image_helpers import PURGATORY_CORPUS, gen
from kernel_helpers import kgen

from kimagekit import kernels
from kimagekit import vmlinux as vm
from kimagekit.cli import main
from kimagekit.decompress import decompress
from kimagekit.errors import KimageError, ParseError, RuleError

COMPRESSIONS = ("gzip", "bzip2", "xz", "lzma", "lz4", "zstd")


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_every_payload_compression_round_trips(kind: str) -> None:
    inner = kgen.make_vmlinux()
    img = kernels.read_bzimage(kgen.make_bzimage(compression=kind), decompress=True)
    assert img.payload is not None
    assert (img.payload.compression, img.payload.decompressed_size,
            img.payload.claimed_size) == (kind, len(inner), len(inner))
    assert img.payload.vmlinux is not None
    assert img.payload.vmlinux.build_id == kgen.BUILD_ID.hex()
    assert kernels.bzimage_payload(kgen.make_bzimage(compression=kind)) == inner


def test_setup_header_fields_follow_the_protocol_version() -> None:
    new = kernels.read_setup_header(kgen.make_bzimage())
    assert new.protocol == "2.15" and new["kernel_info_offset"] == 0
    assert [f.name for f in new.fields][-3:] == ["init_size", "handover_offset",
                                                "kernel_info_offset"]
    old = kernels.read_setup_header(kgen.make_bzimage(version=0x0209))
    names = [f.name for f in old.fields]
    assert names[-1] == "setup_data" and "pref_address" not in names
    assert "xloadflags" not in names and "cmdline_size" in names


def test_pe_wrapper_and_signature() -> None:
    plain = kernels.read_bzimage(kgen.make_bzimage(pe=True))
    signed = kernels.read_bzimage(kgen.make_bzimage(pe=True, signed=True))
    assert plain.pe is not None and signed.pe is not None
    assert (plain.pe.signed, plain.pe.certificate_table) == (False, None)
    assert signed.pe.signed and signed.pe.sections == (".text",)
    cert = signed.pe.certificates[0]
    assert (cert.length, cert.revision, cert.certificate_type) == (8 + 514, 0x200, 2)
    assert kernels.read_bzimage(kgen.make_bzimage()).pe is None


@pytest.mark.parametrize("arch", ["x86_64", "ppc64le", "ppc64", "arm64"])
def test_vmlinux_every_arch(arch: str) -> None:
    k = vm.read_elf_kernel(kgen.make_vmlinux(arch))
    assert (k.arch, k.build_id, k.banner) == (arch, kgen.BUILD_ID.hex(),
                                              kgen.BANNER.decode())
    assert (k.entry, len(k.loads), k.loads[0].p_paddr, k.relocatable) == (
        0xFFFFFFFF81000000, 1, 0x1000000, False)
    sym = vm.find_symbol(kgen.make_vmlinux(arch), k, "linux_banner")
    assert sym is not None and (sym.value, sym.size, sym.file_offset) == (
        0xFFFFFFFF81000040, len(kgen.BANNER) + 2, 0x1040)
    assert vm.find_symbol(kgen.make_vmlinux(arch), k, "no_such_symbol") is None


def test_arm64_image_and_zboot() -> None:
    a = kernels.read_arm64_image(kgen.make_arm64_image())
    assert (a.text_offset, a.image_size, a.big_endian, a.page_size, a.phys_anywhere) == (
        0x80000, 0x2000, False, 4096, True)
    assert a.banner == kgen.BANNER.decode()
    for kind in ("gzip", "xz", "zstd"):
        z = kernels.read_zboot(kgen.make_zboot(compression=kind), decompress=True)
        assert (z.compression, z.decompressed_size) == (kind, 0x2000)
        assert z.image is not None and z.image.text_offset == 0x80000


def test_purgatory_found_by_symbol_and_by_scan() -> None:
    purg = gen.make_purgatory()
    by_sym = kernels.find_purgatory(kgen.make_vmlinux(purgatory=purg))
    assert (by_sym.data, by_sym.how) == (purg, "symbol kexec_purgatory")
    scanned = kernels.find_purgatory(kgen.make_vmlinux(purgatory=purg, symbols=False))
    assert (scanned.data, scanned.how, scanned.offset) == (purg, "scan", 0x1000 + 0xA0)
    inside = kernels.find_purgatory(kgen.make_bzimage(kgen.make_vmlinux(purgatory=purg)))
    assert (inside.data, inside.vmlinux_from) == (purg, "bzImage payload")


def test_no_purgatory_is_refused_saying_why() -> None:
    with pytest.raises(RuleError) as e:
        kernels.find_purgatory(kgen.make_vmlinux("ppc64le"))
    assert str(e.value) == (
        "kernel: kexec_purgatory: this kernel embeds no purgatory: no kexec_purgatory symbol "
        "and no relocatable ELF object for its machine inside (built without "
        "CONFIG_KEXEC_FILE?)")


CORRUPT = {
    "truncated-setup-header": "bzImage: setup_header.kernel_alignment at offset 0x230: setup "
    "header is truncated: kernel_alignment (4 bytes at 0x230) is past the end of the file (560 "
    "bytes)",
    "payload-offset-past-end": "bzImage: setup_header.payload_offset at offset 0x248: "
    "payload_offset {size:#x} is past the end of the file (the protected-mode kernel has "
    "{room:#x} bytes)",
    "bad-compression-stream": "bzImage: payload at offset 0xe00: bad gzip stream: Error -3 "
    "while decompressing data: incorrect data check",
    "bomb-claims": "bzImage: payload.size_trailer at offset {trailer:#x}: the size trailer "
    "claims 4294967280 decompressed bytes, beyond the 536870912-byte limit (decompression "
    "bomb?)",
}


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_kernels_name_the_field(name: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = kgen.corrupt_kernels()[name]
    good = kgen.make_bzimage()
    trailer = 0
    if name == "bomb-claims":
        hdr = kernels.read_setup_header(data)
        trailer = 0xA00 + hdr["payload_offset"] + hdr["payload_length"] - 4
    want = CORRUPT[name].format(size=len(good), room=len(good) - 0xA00, trailer=trailer)
    with pytest.raises(ParseError) as e:
        kernels.read_bzimage(data, decompress=True)
    assert str(e.value) == want
    f = tmp_path / name
    f.write_bytes(data)
    assert main(["inspect", str(f)]) == 2
    assert capsys.readouterr().err == f"kimagekit: error: {f}: {want}\n"


def test_expanding_bomb_stops_at_the_bound() -> None:
    data = kgen.bomb_expanding(3 << 20)
    with pytest.raises(ParseError) as e:
        kernels.read_bzimage(data, decompress=True, limit=1 << 20)
    assert str(e.value) == ("bzImage: payload at offset 0xe00: the gzip stream expands beyond "
                            "the 1048576-byte limit (decompression bomb?)")


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_bound_and_truncation_for_every_compression(kind: str) -> None:
    src = bytes(range(256)) * 64
    c = kgen.compress(src, kind)[:-4]
    with pytest.raises(ParseError) as big:
        decompress(c, fmt="t", field="p", offset=0, limit=1000)
    # zstd's frame header states the size: refused before decompressing; the others stop at
    # the bound
    over = ("the zstd frame claims 16384 bytes," if kind == "zstd"
            else f"the {kind} stream expands")
    assert str(big.value) == (f"t: p at offset 0x0: {over} beyond the 1000-byte limit "
                              "(decompression bomb?)")
    with pytest.raises(ParseError) as cut:
        decompress(c[:len(c) // 2], fmt="t", field="p", offset=0)
    assert str(cut.value) == (f"t: p at offset 0x0: bad {kind} stream: the {kind} stream ends "
                              "before its end marker")


# --- the real Debian kernels -------------------------------------------------------------------

def test_debian_amd64_inspect(amd64_vmlinuz: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--json", str(amd64_vmlinuz)]) == 0
    doc = json.loads(capsys.readouterr().out)
    s = doc["summary"]
    assert (doc["format"], s["protocol"], s["version"]) == ("bzImage", "2.15", 0x20F)
    assert s["version_string"] == ("6.1.0-50-amd64 (debian-kernel@lists.debian.org) #1 SMP "
                                   "PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)")
    assert s["signed"] is True and s["pe"]["certificates"] == 1
    assert s["pe"]["certificate_table"] == [0x7D7200, 1472]
    p = s["payload"]
    assert (p["compression"], p["length"], p["decompressed_size"], p["claimed_size"]) == (
        "xz", 8098996, 65905060, 65905060)
    assert p["vmlinux"]["arch"] == "x86_64"
    assert s["header"]["init_size"] == 0x3F97000 and s["kexec_file_loadable"] is True


def test_debian_ppc64le_build_id_matches_readelf(ppc64le_vmlinux: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    readelf = need_tool("readelf")
    notes = subprocess.run([readelf, "-n", str(ppc64le_vmlinux)], capture_output=True,
                           text=True, check=True).stdout
    m = re.search(r"Build ID: ([0-9a-f]+)", notes)
    assert m is not None
    assert main(["inspect", "--json", str(ppc64le_vmlinux)]) == 0
    s = json.loads(capsys.readouterr().out)["summary"]
    assert s["build_id"] == m.group(1) == "e04703597006cc36ab4eb3e421c377f39b50aecc"
    assert s["banner"] == (
        "Linux version 6.1.0-50-powerpc64le (debian-kernel@lists.debian.org) (gcc-12 (Debian "
        "12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP Debian "
        "6.1.176-1 (2026-07-02)")
    assert (s["arch"], s["symbols"], s["relocatable"]) == ("ppc64le", 106074, True)
    assert [(ld["paddr"], ld["memsz"]) for ld in s["loads"]] == [(0, 0x287C918)]


def test_debian_amd64_purgatory_is_the_corpus_one(amd64_vmlinuz: Path, corpus: Path,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "purgatory.ro"
    assert main(["extract-purgatory", str(amd64_vmlinuz), "-o", str(out)]) == 0
    assert out.read_bytes() == (corpus / PURGATORY_CORPUS).read_bytes()
    assert hashlib.sha256(out.read_bytes()).hexdigest().startswith("5c1b67d86de2ed3e")


def test_debian_ppc64le_has_no_purgatory(ppc64le_vmlinux: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.ro"
    assert main(["extract-purgatory", str(ppc64le_vmlinux), "-o", str(out)]) == 2
    assert not out.exists()
    assert capsys.readouterr().err == (
        f"kimagekit: error: {ppc64le_vmlinux}: kernel: kexec_purgatory: this kernel embeds no "
        "purgatory: no kexec_purgatory symbol and no relocatable ELF object for its machine "
        "inside (built without CONFIG_KEXEC_FILE?)\n")


def test_vmlinux_is_not_taken_for_a_kexec_image(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    k = bytearray(kgen.make_vmlinux())
    k[0x1080:0x108A] = b"kimagekit\0"  # the note owner's name, as a string in .text
    f = tmp_path / "vmlinux"
    f.write_bytes(bytes(k))
    assert main(["inspect", str(f)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{f}: vmlinux"


def _bzimage_truncation_error(cut: int) -> str:
    """What reading the signed PE bzImage cut at ``cut`` must say: the setup header needs its
    magic and version (to 0x208), then its fields, then the 0xa00 bytes of setup code; past
    that the PE certificate table (528 bytes at 0xf80) is checked first."""
    if cut < 0x208:
        return (f"bzImage: setup_header.header at offset 0x202: file is {cut} bytes: the setup "
                "header is truncated before its magic and version (0x208)")
    if cut < 0x250:
        assert cut == 582  # the one cut of the walk below inside the fields
        return ("bzImage: setup_header.hardware_subarch_data at offset 0x240: setup header is "
                "truncated: hardware_subarch_data (8 bytes at 0x240) is past the end of the file "
                "(582 bytes)")
    if cut < 0xA00:
        return (f"bzImage: setup_header.setup_sects at offset 0x1f1: setup code (4 + 1 sectors "
                f"= 0xa00 bytes) runs past the end of the file ({cut} bytes)")
    return (f"pe: DataDirectory[SECURITY].Size at offset 0xec: certificate table (528 bytes at "
            f"0xf80) runs past the end of the file ({cut} bytes)")


def test_every_truncation_is_a_kimage_error() -> None:
    """Any other exception escaping (struct.error, IndexError...) fails this test."""
    data = kgen.make_bzimage(pe=True, signed=True)
    assert len(data) == 0xF80 + 528  # the certificate table ends the file
    for cut in range(0, len(data), 97):
        with pytest.raises(KimageError) as err:
            kernels.read_bzimage(data[:cut], decompress=True)
        assert str(err.value) == _bzimage_truncation_error(cut), cut


def test_zboot_non_ascii_comp_type_is_a_parse_error() -> None:
    # found by fuzz/fuzz.py (kernel target): construct's StringError escaped the choke point
    from kimagekit import kernels
    from kimagekit.errors import ParseError

    z = bytearray(kgen.make_zboot())
    assert z[24:28] == b"gzip"
    z[24 + 31] = 0xFF
    with pytest.raises(ParseError) as err:
        kernels.read_zboot(bytes(z))
    assert str(err.value) == (
        "zboot: comp_type at offset 0x18: cannot use encoding 'ascii' to decode "
        "b'gzip" + "\\x00" * 27 + "\\xff'")


def test_setup_header_cut_short_by_its_jump_names_the_missing_field() -> None:
    # found by fuzz/fuzz.py (kernel target): a 2.15 header whose jump ends it at 0x202
    from kimagekit import kernels
    from kimagekit.errors import ParseError

    data = bytearray(kgen.make_bzimage())
    data[0x201] = 0
    with pytest.raises(ParseError) as err:
        kernels.read_bzimage(bytes(data), decompress=True)
    assert str(err.value) == (
        "bzImage: setup_header.payload_offset at offset 0x248: the setup header (protocol 2.15, "
        "ending at 0x202 as its jump says) has no payload_offset")
