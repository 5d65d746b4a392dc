"""Generate the synthetic kernels of the kernel tests: ELF vmlinux files (x86-64, ppc64 either
byte order, arm64) with a build-id note, a banner, a symbol table and optionally an embedded
purgatory; bzImages with each payload compression, with or without a PE wrapper and a
certificate table; arm64 Image and zboot files; and the corrupt variants.

Run ``python testdata/make_kernels.py OUTDIR`` to write them out; the tests call the functions.
Nothing here comes from a real kernel: headers are built field by field, contents are filler.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import sys
from pathlib import Path

EM = {"x86_64": (62, True), "ppc64le": (21, True), "ppc64": (21, False), "arm64": (183, True)}
BUILD_ID = bytes(range(0xA0, 0xB4))
BANNER = (b"Linux version 9.9.9-synthetic (gen@kimagekit) (cc 1.0) #7 SMP "
          b"Thu Jan 1 00:00:00 UTC 1970")
VERSION = b"9.9.9-synthetic (gen@kimagekit) #7 SMP"


def make_vmlinux(arch: str = "x86_64", *, purgatory: bytes | None = None,
                 symbols: bool = True, vaddr: int = 0xFFFFFFFF81000000) -> bytes:
    """An ELF64 ET_EXEC: one PT_LOAD over .text (banner inside, then the purgatory blob if any),
    a PT_NOTE with the GNU build id, and .symtab naming linux_banner and, with a purgatory,
    kexec_purgatory / kexec_purgatory_size."""
    machine, little = EM[arch]
    o = "<" if little else ">"
    text = bytearray(b"\x90" * 0x40 + BANNER + b"\n\0")
    banner_at = 0x40
    purg_at = size_at = None
    if purgatory is not None:
        text += bytes(-len(text) % 16)
        purg_at = len(text)
        text += purgatory
        text += bytes(-len(text) % 8)
        size_at = len(text)
        text += struct.pack(o + "Q", len(purgatory))
    note = struct.pack(o + "III", 4, len(BUILD_ID), 3) + b"GNU\0" + BUILD_ID
    shstr = b"\0.text\0.notes\0.symtab\0.strtab\0.shstrtab\0"
    names = [b"linux_banner"] + ([b"kexec_purgatory", b"kexec_purgatory_size"]
                                 if purgatory is not None else [])
    strtab = b"\0" + b"".join(n + b"\0" for n in names)
    syms = [bytes(24)]
    values = [(banner_at, len(BANNER) + 2)]
    if purgatory is not None:
        values += [(purg_at, len(purgatory)), (size_at, 8)]
    at = 1
    for n, (off, size) in zip(names, values, strict=True):
        syms.append(struct.pack(o + "IBBHQQ", at, 0x11, 0, 1, vaddr + off, size))
        at += len(n) + 1
    symtab = b"".join(syms) if symbols else b""
    # layout: ehdr, 2 phdrs, then .text at 0x1000, note, symtab, strtab, shstrtab, shdrs
    text_off = 0x1000
    note_off = text_off + len(text)
    note_off += -note_off % 4
    sym_off = note_off + len(note)
    sym_off += -sym_off % 8
    str_off = sym_off + len(symtab)
    shs_off = str_off + len(strtab)
    sh_off = shs_off + len(shstr)
    sh_off += -sh_off % 8
    nsec = 6 if symbols else 4
    ehdr = b"\x7fELF" + bytes([2, 1 if little else 2, 1]) + bytes(9) + struct.pack(
        o + "HHIQQQIHHHHHH", 2, machine, 1, vaddr, 64, sh_off, 0, 64, 56, 2, 64, nsec, nsec - 1)
    ph = struct.pack(o + "IIQQQQQQ", 1, 7, text_off, vaddr, 0x1000000, len(text),
                     len(text) + 0x1000, 0x1000)
    ph += struct.pack(o + "IIQQQQQQ", 4, 4, note_off, 0, 0, len(note), len(note), 4)
    body = bytearray(sh_off)
    body[:64] = ehdr
    body[64:64 + 112] = ph
    body[text_off:text_off + len(text)] = text
    body[note_off:note_off + len(note)] = note
    body[sym_off:sym_off + len(symtab)] = symtab
    body[str_off:str_off + len(strtab)] = strtab
    body[shs_off:shs_off + len(shstr)] = shstr

    def sh(name: int, typ: int, flags: int, addr: int, off: int, size: int, link: int = 0,
           info: int = 0, align: int = 1, ent: int = 0) -> bytes:
        return struct.pack(o + "IIQQQQIIQQ", name, typ, flags, addr, off, size, link, info,
                           align, ent)

    shdrs = [bytes(64), sh(1, 1, 6, vaddr, text_off, len(text), align=16),
             sh(7, 7, 2, vaddr + len(text), note_off, len(note), align=4)]
    if symbols:
        shdrs += [sh(14, 2, 0, 0, sym_off, len(symtab), link=4, info=1, align=8, ent=24),
                  sh(22, 3, 0, 0, str_off, len(strtab))]
    shdrs.append(sh(30, 3, 0, 0, shs_off, len(shstr)))
    return bytes(body) + b"".join(shdrs)


def compress(data: bytes, kind: str) -> bytes:
    """``data`` compressed the way the kernel build does it, size trailer (le32) appended."""
    if kind == "gzip":
        c = gzip.compress(data, mtime=0)
    elif kind == "bzip2":
        c = bz2.compress(data)
    elif kind == "xz":
        c = lzma.compress(data, check=lzma.CHECK_CRC32)
    elif kind == "lzma":
        c = lzma.compress(data, format=lzma.FORMAT_ALONE)
    elif kind == "lz4":
        import lz4.block

        block = lz4.block.compress(data, store_size=False)
        c = b"\x02\x21\x4c\x18" + struct.pack("<I", len(block)) + block
    elif kind == "zstd":
        import zstandard

        c = zstandard.ZstdCompressor().compress(data)
    else:
        raise ValueError(kind)
    return c + struct.pack("<I", len(data) & 0xFFFFFFFF)


SETUP_SECTS = 4
INIT_SIZE = 0x400000


def make_bzimage(payload: bytes | None = None, *, compression: str = "gzip",
                 version: int = 0x020F, pe: bool = False, signed: bool = False,
                 raw_payload: bytes | None = None, init_size: int = INIT_SIZE) -> bytes:
    """A bzImage: boot sector, setup header (every field to ``version``), setup code, then the
    protected-mode part holding the compressed payload (a synthetic vmlinux by default)."""
    if raw_payload is None:
        raw_payload = compress(payload if payload is not None else make_vmlinux(), compression)
    setup = bytearray((SETUP_SECTS + 1) * 512)
    setup[0x1F1] = SETUP_SECTS
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)
    setup[0x200:0x202] = b"\xeb\x6a"  # jump over the 2.15 header: it ends at 0x26c
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    struct.pack_into("<H", setup, 0x20E, 0x300)  # kernel_version: string at 0x500
    setup[0x500:0x500 + len(VERSION) + 1] = VERSION + b"\0"
    setup[0x211] = 1  # LOADED_HIGH
    struct.pack_into("<I", setup, 0x214, 0x100000)
    struct.pack_into("<I", setup, 0x230, 0x200000)  # kernel_alignment
    setup[0x234] = 1
    setup[0x235] = 21
    struct.pack_into("<H", setup, 0x236, 0x7F)
    struct.pack_into("<I", setup, 0x238, 2047)  # cmdline_size
    prot = bytearray(b"\xcc" * 0x400)
    payload_offset = len(prot)
    prot += raw_payload
    prot += bytes(-len(prot) % 16)
    struct.pack_into("<II", setup, 0x248, payload_offset, len(raw_payload))
    struct.pack_into("<Q", setup, 0x258, 0x1000000)
    struct.pack_into("<I", setup, 0x260, init_size)
    struct.pack_into("<I", setup, 0x1F4, len(prot) // 16)  # syssize
    out = bytearray(setup + prot)
    if pe:
        _wrap_pe(out, signed)
    return bytes(out)


def _wrap_pe(out: bytearray, signed: bool, machine: int = 0x8664) -> None:
    """MZ + PE32+ headers at 0x40 (inside the boot sector, as the EFI stub has them), one
    section; with ``signed`` a certificate table (a filler PKCS#7 blob) appended."""
    out[0:2] = b"MZ"
    struct.pack_into("<I", out, 0x3C, 0x40)
    out[0x40:0x44] = b"PE\0\0"
    opt_size = 112 + 16 * 8
    struct.pack_into("<HHIIIHH", out, 0x44, machine, 1, 0, 0, 0, opt_size, 0x206)
    opt = 0x58
    struct.pack_into("<HBBIIIII", out, opt, 0x20B, 2, 20, len(out), 0, 0, 0x1000, 0x200)
    struct.pack_into("<Q", out, opt + 24, 0)
    struct.pack_into("<II", out, opt + 32, 0x20, 0x20)
    struct.pack_into("<I", out, opt + 56, len(out))
    struct.pack_into("<I", out, opt + 60, 0x200)
    struct.pack_into("<H", out, opt + 68, 10)
    struct.pack_into("<I", out, opt + 108, 16)
    sec = opt + opt_size
    struct.pack_into("<8sIIIIIIHHI", out, sec, b".text", len(out), 0x200, len(out) - 0x200,
                     0x200, 0, 0, 0, 0, 0x60000020)
    if signed:
        cert_at = len(out)
        blob = b"\x30\x82" + bytes(range(256)) * 2
        cert = struct.pack("<IHH", 8 + len(blob), 0x200, 2) + blob
        cert += bytes(-len(cert) % 8)
        out += cert
        struct.pack_into("<II", out, opt + 112 + 4 * 8, cert_at, len(cert))


def make_arm64_image(*, flags: int = 0b1010, size: int = 0x2000, pe: bool = False,
                     text_offset: int = 0x80000, image_size: int | None = None) -> bytes:
    """An arm64 Image of ``size`` bytes (``image_size`` in its header: default ``size``); with
    ``pe`` the EFI stub's MZ/PE32+ headers (the banner then moves past them)."""
    img = bytearray(size)
    struct.pack_into("<IIQQQ", img, 0, 0x14000000, 0, text_offset,
                     size if image_size is None else image_size, flags)
    img[0x38:0x3C] = b"ARM\x64"
    at = 0x400 if pe else 0x100
    img[at:at + len(BANNER) + 1] = BANNER + b"\0"
    if pe:
        _wrap_pe(img, False, machine=0xAA64)
    return bytes(img)


def make_zboot(inner: bytes | None = None, compression: str = "gzip", pe: bool = False) -> bytes:
    """An EFI zboot image; with ``pe`` its outer PE32+ headers (as the zboot stub has them)."""
    payload = compress(inner if inner is not None else make_arm64_image(), compression)[:-4]
    head = bytearray(0x200)
    head[0:4] = b"MZ\0\0"
    head[4:8] = b"zimg"
    struct.pack_into("<II", head, 8, len(head), len(payload))
    name = {"zstd": b"zstd22"}.get(compression, compression.encode())
    head[24:24 + len(name)] = name
    struct.pack_into("<II", head, 0x38, 0x818223CD, 0)
    out = bytearray(head + payload)
    if pe:
        _wrap_pe(out, False, machine=0xAA64)
    return bytes(out)


# --- corrupt kernels -----------------------------------------------------------------------------

def corrupt_kernels() -> dict[str, bytes]:
    good = make_bzimage()
    out = {"truncated-setup-header": good[:0x230]}
    bad = bytearray(good)
    struct.pack_into("<I", bad, 0x248, len(good))
    out["payload-offset-past-end"] = bytes(bad)
    bad = bytearray(good)
    (poff,) = struct.unpack_from("<I", bad, 0x248)
    at = (SETUP_SECTS + 1) * 512 + poff
    bad[at + 20:at + 40] = b"\xff" * 20  # inside the deflate stream
    out["bad-compression-stream"] = bytes(bad)
    claim = compress(b"\0" * 4096, "gzip")[:-4] + struct.pack("<I", 0xFFFFFFF0)
    out["bomb-claims"] = make_bzimage(raw_payload=claim)
    return out


def bomb_expanding(size: int) -> bytes:
    """A bzImage whose gzip payload expands to ``size`` zero bytes but whose size trailer claims
    4 KiB: only the streaming bound can stop it."""
    c = gzip.compress(b"\0" * size, mtime=0) + struct.pack("<I", 4096)
    return make_bzimage(raw_payload=c)


def main(outdir: str) -> None:
    d = Path(outdir)
    d.mkdir(parents=True, exist_ok=True)
    for arch in EM:
        (d / f"vmlinux-{arch}").write_bytes(make_vmlinux(arch))
    for kind in ("gzip", "bzip2", "xz", "lzma", "lz4", "zstd"):
        (d / f"bzImage-{kind}").write_bytes(make_bzimage(compression=kind))
    (d / "bzImage-signed").write_bytes(make_bzimage(pe=True, signed=True))
    (d / "Image-arm64").write_bytes(make_arm64_image())
    (d / "zboot-arm64").write_bytes(make_zboot())
    for name, data in corrupt_kernels().items():
        (d / f"corrupt-{name}").write_bytes(data)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "kernels-out")
