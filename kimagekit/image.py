"""The offline kexec image: an ELF64 ET_EXEC file with one PT_LOAD per segment and a PT_NOTE
(owner ``kimagekit``) carrying what the kernel keeps beside the segments.

Layout: ELF header, program headers (PT_LOAD x n in segment order, then PT_NOTE), the note, then
each segment's content at a page-aligned offset. The hand-over's slot in the file is memsz long,
so rewriting it never moves another segment's bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import mmap
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from kimagekit.arch.common import NO_PURGATORY_ARCHES
from kimagekit.errors import OutputError, ParseError, Refused, RuleError, UsageError, converted
from kimagekit.fileio import (
    atomic_write,
    check_output,
    edit_in_place,
    locked,
    map_file,
    mapped,
    write_copy_with_edits,
)
from kimagekit.formats import elf
from kimagekit.formats import kexec as kx
from kimagekit.purgatory import (
    DIGEST_SYMBOLS,
    REGIONS_SIZE,
    Digest,
    DigestPolicy,
    LoadedPurgatory,
    apply_policy,
    check_target,
    compute_digest,
    feed_segment,
    hashes_role,
    loaded_address,
    regions_bytes,
    replace_purgatory,
    store_digest,
    symbols,
)
from kimagekit.purgatory_riscv import EM_RISCV
from kimagekit.segments import Role, Segment, SegmentList, Target, align_up, sanity_check

__all__ = [
    "ARCHES", "FMT", "MAX_CMDLINE", "MAX_NOTE_SYMBOLS", "MAX_TOTAL_MEMSZ", "NOTE_NAME",
    "HandoverStyle", "ImageInfo", "ImageSegment", "KexecImage", "NoteSymbol", "PatchResult",
    "VerifyResult", "check_page_size", "content", "expected_regions", "extract", "image_chunks",
    "image_head", "open_image", "patch_handover", "read_image", "seal", "segment_sha256",
    "select_segment", "stored_digest", "verify", "verify_bytes", "write_image",
]

FMT = "image"
EHDR_SIZE, PHDR_SIZE, NHDR_SIZE = 64, 56, 12
NOTE_NAME = kx.NOTE_OWNER.encode() + b"\0"
MAX_NOTE_SYMBOLS = 256
MAX_CMDLINE = 1 << 20
MIN_PAGE_SIZE, MAX_PAGE_SIZE = 1 << 12, 1 << 16

# arch name -> (e_machine, little endian)
ARCHES: dict[str, tuple[int, bool]] = {
    "x86_64": (elf.EM_X86_64, True),
    "ppc64le": (elf.EM_PPC64, True),
    "ppc64": (elf.EM_PPC64, False),
    "arm64": (elf.EM_AARCH64, True),
    "riscv64": (EM_RISCV, True),
}


class HandoverStyle(StrEnum):
    """How the next kernel learns where the hand-over buffer is."""

    NONE = "none"
    SEED = "seed"  # /chosen/linux,kexec-handover-buffer-start/-end (the 2016 series)
    IMA = "ima"  # /chosen/linux,ima-kexec-buffer (upstream device tree)
    SETUP_DATA = "setup-data"  # x86 setup_data SETUP_IMA


@dataclass(frozen=True)
class NoteSymbol:
    name: str
    value: int
    size: int


@dataclass(frozen=True)
class KexecImage:
    """Everything an image file holds, ready to write."""

    segments: SegmentList
    policy: DigestPolicy
    entry: int
    cmdline: bytes
    handover_style: HandoverStyle
    symbols: tuple[NoteSymbol, ...]
    digest: Digest
    has_purgatory: bool

    @property
    def arch(self) -> str:
        return self.segments.target.arch


def seal(sl: SegmentList, policy: DigestPolicy, *, purgatory: LoadedPurgatory | None = None,
         entry: int | None = None, cmdline: bytes = b"",
         handover_style: HandoverStyle = HandoverStyle.NONE) -> KexecImage:
    """Apply the policy, check the list as the kernel would, compute the digest and store it (in
    the purgatory when there is one; always in the note). The entry is the purgatory's if any."""
    if sl.target.arch not in ARCHES:
        raise UsageError(f"unknown architecture {sl.target.arch!r}", fmt=FMT, field="arch")
    sl = apply_policy(sl, policy)
    sanity_check(sl)
    d = compute_digest(sl.segments)
    syms: tuple[NoteSymbol, ...] = ()
    if purgatory is not None:
        check_target(purgatory.obj, sl.target.arch, *ARCHES[sl.target.arch])
        purgatory = store_digest(purgatory, d)
        sl = replace_purgatory(sl, purgatory)
        entry = purgatory.entry
        syms = _note_symbols(purgatory)
    elif entry is None:
        raise UsageError("an image without a purgatory needs an entry address", fmt=FMT,
                         field="entry")
    return KexecImage(sl, policy, entry, cmdline, handover_style, syms, d,
                      purgatory is not None)


def _note_symbols(lp: LoadedPurgatory) -> tuple[NoteSymbol, ...]:
    out = []
    for s in symbols(lp.obj):
        if (s.bind != elf.STB_GLOBAL or not 0 < s.st_shndx < len(lp.obj.sections)
                or not lp.obj.sections[s.st_shndx].alloc
                or len(s.name) > kx.NOTE_SYMBOL_NAME_LEN or not s.name.isascii()):
            continue
        out.append(NoteSymbol(s.name, loaded_address(lp, s), s.st_size))
    return tuple(out[:MAX_NOTE_SYMBOLS])


# --- writing -------------------------------------------------------------------------------------

def _file_offsets(img: KexecImage, data_start: int) -> list[int]:
    page = img.segments.target.page_size
    offs, at = [], align_up(data_start, page)
    for s in img.segments.segments:
        offs.append(at)
        room = s.memsz if s.role == Role.HANDOVER else s.bufsz
        at = align_up(at + room, page)
    return offs


def _note_desc(img: KexecImage, offsets: list[int],
               hashes: Sequence[bytes] | None = None) -> bytes:
    """The note's descriptor; ``hashes`` (one per segment) are recorded as given instead of
    hashing every segment's content."""
    little = ARCHES[img.arch][1]
    segs = img.segments.segments
    if hashes is None:
        hashes = [segment_sha256(s.content, s.memsz) for s in segs]
    h = {
        "version": kx.NOTE_VERSION, "nr_segments": len(segs), "nr_symbols": len(img.symbols),
        "cmdline_len": len(img.cmdline), "arch": img.arch,
        "page_size": img.segments.target.page_size, "entry": img.entry,
        "digest_policy": kx.POLICY_CODES.index(img.policy.value),
        "handover_style": kx.HANDOVER_STYLE_CODES.index(img.handover_style.value),
        "has_purgatory": int(img.has_purgatory),
        "sha_regions": _regions_list(img.digest.regions), "digest": img.digest.digest,
    }
    note = {
        "head": h,
        "segments": [{"buf": o, "bufsz": s.bufsz, "mem": s.mem, "memsz": s.memsz}
                     for o, s in zip(offsets, segs, strict=True)],
        "info": [{"role": kx.ROLE_CODES.index(s.role.value), "checksummed": int(s.checksummed),
                  "sha256": h} for s, h in zip(segs, hashes, strict=True)],
        "symbols": [{"name": y.name, "value": y.value, "size": y.size} for y in img.symbols],
        "cmdline": img.cmdline,
    }
    return bytes(kx.kimagekit_note(little).build(note))


def _regions_list(regions: tuple[tuple[int, int], ...]) -> list[dict[str, int]]:
    padded = list(regions) + [(0, 0)] * (kx.KEXEC_SEGMENT_MAX - len(regions))
    return [{"start": s, "len": n} for s, n in padded]


def segment_sha256(content: bytes | memoryview, memsz: int) -> bytes:
    h = hashlib.sha256()
    feed_segment(h, content, memsz)
    return h.digest()


def _pad4(n: int) -> int:
    return align_up(n, 4)


def image_chunks(img: KexecImage) -> list[bytes | memoryview]:
    """The image file as a list of byte strings to concatenate."""
    head, offsets = image_head(img)
    chunks: list[bytes | memoryview] = [head]
    at = len(head)
    for o, s in zip(offsets, img.segments.segments, strict=True):
        chunks.append(bytes(o - at))
        chunks.append(s.content)
        at = o + s.bufsz
    return chunks


def image_head(img: KexecImage, hashes: Sequence[bytes] | None = None) -> tuple[bytes, list[int]]:
    """The ELF header, program headers and note (the bytes before the first segment's
    padding), and each segment's offset in the file. ``hashes`` as in :func:`_note_desc`."""
    machine, little = ARCHES[img.arch]
    st = elf.elf_structs(elf.ELFCLASS64, little)
    segs = img.segments.segments
    nph = len(segs) + 1
    note_off = EHDR_SIZE + nph * PHDR_SIZE
    # The descriptor's size does not depend on the offsets: build once to size it.
    if hashes is None:  # once: the sizing build below would hash every segment again
        hashes = [segment_sha256(s.content, s.memsz) for s in segs]
    desc_len = len(_note_desc(img, [0] * len(segs), hashes))
    note_len = NHDR_SIZE + _pad4(len(NOTE_NAME)) + _pad4(desc_len)
    offsets = _file_offsets(img, note_off + note_len)
    desc = _note_desc(img, offsets, hashes)
    ehdr = st.Ehdr.build({
        "e_ident": {"EI_CLASS": elf.ELFCLASS64,
                    "EI_DATA": elf.ELFDATA2LSB if little else elf.ELFDATA2MSB,
                    "EI_VERSION": elf.EV_CURRENT, "EI_OSABI": 0, "EI_ABIVERSION": 0,
                    "EI_PAD": bytes(7)},
        "e_type": elf.ET_EXEC, "e_machine": machine, "e_version": elf.EV_CURRENT,
        "e_entry": img.entry, "e_phoff": EHDR_SIZE, "e_shoff": 0, "e_flags": _e_flags(img),
        "e_ehsize": EHDR_SIZE, "e_phentsize": PHDR_SIZE, "e_phnum": nph,
        "e_shentsize": 0, "e_shnum": 0, "e_shstrndx": 0,
    })
    page = img.segments.target.page_size
    phdrs = [st.Phdr.build({
        "p_type": elf.PT_LOAD, "p_flags": elf.PF_R | elf.PF_W | elf.PF_X, "p_offset": o,
        "p_vaddr": s.mem, "p_paddr": s.mem, "p_filesz": s.bufsz, "p_memsz": s.memsz,
        "p_align": page}) for o, s in zip(offsets, segs, strict=True)]
    phdrs.append(st.Phdr.build({
        "p_type": elf.PT_NOTE, "p_flags": elf.PF_R, "p_offset": note_off, "p_vaddr": 0,
        "p_paddr": 0, "p_filesz": note_len, "p_memsz": 0, "p_align": 4}))
    nhdr = st.Nhdr.build({"n_namesz": len(NOTE_NAME), "n_descsz": len(desc),
                          "n_type": kx.NT_KIMAGEKIT_KEXEC})
    name = NOTE_NAME.ljust(_pad4(len(NOTE_NAME)), b"\0")
    return b"".join([ehdr, *phdrs, nhdr, name, desc.ljust(_pad4(len(desc)), b"\0")]), offsets


def _e_flags(img: KexecImage) -> int:
    # ELFv2 ABI flag for ppc64le kernels; 0 elsewhere.
    return 2 if img.arch == "ppc64le" else 0


def write_image(path: str | os.PathLike[str], img: KexecImage) -> VerifyResult:
    """Write atomically, then re-read the file and verify it; an image that does not verify is
    an OutputError."""
    data = b"".join(image_chunks(img))
    composed = verify_bytes(data)
    if not composed.ok:  # refused before anything is written
        raise OutputError(f"{path}: the composed image does not verify: {composed.reason}; "
                          "nothing written")
    atomic_write(path, data)
    res = verify(path)
    if not res.ok:
        raise OutputError(f"{path}: the written image does not verify: {res.reason}")
    return res


# --- reading -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageSegment:
    index: int
    role: Role
    mem: int
    memsz: int
    bufsz: int
    checksummed: bool
    offset: int
    sha256: bytes  # as recorded when written
    # bufsz in the loading kernel's table: 0 for the IMA segment of the 6.15+ rules, added
    # empty at load and filled at execute (the file holds the list at execute)
    bufsz_at_load: int = -1

    @property
    def filled_at_execute(self) -> bool:
        return self.bufsz_at_load == 0 and self.bufsz > 0


@dataclass(frozen=True)
class ImageInfo:
    arch: str
    machine: int
    little: bool
    page_size: int
    entry: int
    policy: DigestPolicy
    handover_style: HandoverStyle
    has_purgatory: bool
    cmdline: str
    segments: tuple[ImageSegment, ...]
    symbols: tuple[NoteSymbol, ...]
    regions: tuple[tuple[int, int], ...]
    digest: bytes
    file_size: int

    def segment(self, role: Role) -> ImageSegment | None:
        return next((s for s in self.segments if s.role == role), None)

    def symbol(self, name: str) -> NoteSymbol | None:
        return next((s for s in self.symbols if s.name == name), None)


def _err(msg: str, field: str, offset: int | None) -> ParseError:
    return ParseError(msg, fmt=FMT, field=field, offset=offset)


def read_image(view: memoryview | bytes) -> ImageInfo:
    """Parse the headers and the note, checking every field against the file before use."""
    size = len(view)
    if size < EHDR_SIZE:
        raise _err(f"file is {size} bytes, shorter than an ELF64 header ({EHDR_SIZE})",
                   "ehdr", 0)
    head = bytes(view[:EHDR_SIZE])
    if head[:4] != elf.ELFMAG:
        raise _err("not an ELF file (bad magic)", "e_ident.EI_MAG", 0)
    if head[4] != elf.ELFCLASS64:
        raise _err(f"EI_CLASS {head[4]} is not ELFCLASS64", "e_ident.EI_CLASS", 4)
    if head[5] not in (elf.ELFDATA2LSB, elf.ELFDATA2MSB):
        raise _err(f"EI_DATA {head[5]} is not 1 or 2", "e_ident.EI_DATA", 5)
    little = head[5] == elf.ELFDATA2LSB
    st = elf.elf_structs(elf.ELFCLASS64, little)
    with converted(FMT, "ehdr", 0):
        eh = st.Ehdr.parse(head)
    if eh.e_type != elf.ET_EXEC:
        raise _err(f"e_type {eh.e_type} is not ET_EXEC", "e_type", 16)
    if eh.e_phentsize != PHDR_SIZE:
        raise _err(f"e_phentsize {eh.e_phentsize} is not {PHDR_SIZE}", "e_phentsize", 54)
    if eh.e_phoff + eh.e_phnum * PHDR_SIZE > size:
        raise _err(f"program headers ({eh.e_phnum} x {PHDR_SIZE} at {eh.e_phoff:#x}) run past "
                   f"the end of the file ({size} bytes)", "e_phoff", 32)
    loads, note = [], None
    for i in range(eh.e_phnum):
        off = eh.e_phoff + i * PHDR_SIZE
        with converted(FMT, f"phdr[{i}]", off):
            ph = st.Phdr.parse(bytes(view[off:off + PHDR_SIZE]))
        if ph.p_type not in (elf.PT_LOAD, elf.PT_NOTE):
            continue
        if ph.p_offset + ph.p_filesz > size:
            raise _err(f"content ({ph.p_filesz:#x} bytes at {ph.p_offset:#x}) runs past the "
                       f"end of the file ({size} bytes)", f"phdr[{i}].p_filesz", off + 32)
        if ph.p_type == elf.PT_LOAD:
            if ph.p_filesz > ph.p_memsz:
                raise _err(f"p_filesz {ph.p_filesz:#x} exceeds p_memsz {ph.p_memsz:#x}",
                           f"phdr[{i}].p_filesz", off + 32)
            loads.append(ph)
        elif note is None:
            note = _find_note(view, ph.p_offset, ph.p_filesz, little, i)
    if note is None:
        raise _err("no kimagekit note (not an image written by kimagekit)", "PT_NOTE", None)
    return _from_note(view, note, loads, eh, little, size)


def _find_note(view: memoryview | bytes, start: int, length: int, little: bool,
               ph_index: int) -> tuple[int, int] | None:
    """(offset, size) of the kimagekit descriptor inside one PT_NOTE, walking its notes."""
    st = elf.elf_structs(elf.ELFCLASS64, little)
    at, end, k = start, start + length, 0
    while at + NHDR_SIZE <= end:
        field = f"phdr[{ph_index}].note[{k}]"
        with converted(FMT, field, at):
            nh = st.Nhdr.parse(bytes(view[at:at + NHDR_SIZE]))
        name_at = at + NHDR_SIZE
        desc_at = name_at + _pad4(nh.n_namesz)
        if desc_at > end:
            raise _err(f"note name ({nh.n_namesz} bytes) runs past its PT_NOTE "
                       f"({end - name_at} bytes left)", f"{field}.n_namesz", at)
        if desc_at + nh.n_descsz > end:
            raise _err(f"note descriptor ({nh.n_descsz} bytes) runs past its PT_NOTE "
                       f"({end - desc_at} bytes left)", f"{field}.n_descsz", at + 4)
        if bytes(view[name_at:name_at + nh.n_namesz]) == NOTE_NAME \
                and nh.n_type == kx.NT_KIMAGEKIT_KEXEC:
            return desc_at, nh.n_descsz
        at = desc_at + _pad4(nh.n_descsz)
        k += 1
    return None


def _from_note(view: memoryview | bytes, note: tuple[int, int], loads: list[object], eh: object,
               little: bool, size: int) -> ImageInfo:
    at, n = note
    fixed = kx.note_fixed(little)
    if n < fixed.sizeof():
        raise _err(f"note descriptor is {n} bytes, shorter than its head ({fixed.sizeof()})",
                   "note.head", at)
    with converted(FMT, "note.head", at):
        h = fixed.parse(bytes(view[at:at + fixed.sizeof()]))
    if h.version != kx.NOTE_VERSION:
        raise _err(f"note version {h.version} is not {kx.NOTE_VERSION}", "note.version", at)
    if h.nr_segments > kx.KEXEC_SEGMENT_MAX:
        raise _err(f"nr_segments {h.nr_segments} exceeds {kx.KEXEC_SEGMENT_MAX}",
                   "note.nr_segments", at + 4)
    if h.nr_symbols > MAX_NOTE_SYMBOLS:
        raise _err(f"nr_symbols {h.nr_symbols} exceeds {MAX_NOTE_SYMBOLS}", "note.nr_symbols",
                   at + 8)
    need = (fixed.sizeof() + h.nr_segments * (32 + kx.note_segment_info(little).sizeof())
            + h.nr_symbols * kx.note_symbol(little).sizeof() + h.cmdline_len)
    if h.cmdline_len > MAX_CMDLINE or need > n:
        raise _err(f"note needs {need} bytes for its counts, the descriptor has {n}",
                   "note.cmdline_len", at + 12)
    with converted(FMT, "note", at):
        body = kx.kimagekit_note(little).parse(bytes(view[at:at + need]))
    for code, name, table in ((h.digest_policy, "digest_policy", kx.POLICY_CODES),
                              (h.handover_style, "handover_style", kx.HANDOVER_STYLE_CODES)):
        if code >= len(table):
            raise _err(f"{name} code {code} is unknown", f"note.{name}", at)
    if len(loads) != h.nr_segments:
        raise _err(f"{len(loads)} PT_LOAD headers but {h.nr_segments} segments in the note",
                   "note.nr_segments", at + 4)
    segs = []
    for i, (ks, info, ph) in enumerate(zip(body.segments, body.info, loads, strict=True)):
        for k, p in (("buf", "p_offset"), ("bufsz", "p_filesz"), ("mem", "p_paddr"),
                     ("memsz", "p_memsz")):
            if ks[k] != getattr(ph, p):
                raise _err(f"{k} {ks[k]:#x} differs from PT_LOAD[{i}].{p} "
                           f"{getattr(ph, p):#x}", f"note.segment[{i}].{k}", None)
        if info.role >= len(kx.ROLE_CODES):
            raise _err(f"role code {info.role} is unknown", f"note.info[{i}].role", None)
        segs.append(ImageSegment(i, Role(kx.ROLE_CODES[info.role]), ks.mem, ks.memsz,
                                 ks.bufsz, bool(info.checksummed), ks.buf, bytes(info.sha256),
                                 _bufsz_at_load(h.digest_policy, info.role, ks.bufsz)))
    regions = tuple((r.start, r.len) for r in h.sha_regions if (r.start, r.len) != (0, 0))
    _check_note(h, body, segs, eh.e_machine, little, at, at + need)  # type: ignore[attr-defined]
    return ImageInfo(
        arch=h.arch, machine=eh.e_machine, little=little,  # type: ignore[attr-defined]
        page_size=h.page_size, entry=h.entry,
        policy=DigestPolicy(kx.POLICY_CODES[h.digest_policy]),
        handover_style=HandoverStyle(kx.HANDOVER_STYLE_CODES[h.handover_style]),
        has_purgatory=bool(h.has_purgatory), cmdline=body.cmdline.decode("utf-8", "replace"),
        segments=tuple(segs),
        symbols=tuple(NoteSymbol(y.name, y.value, y.size) for y in body.symbols),
        regions=regions, digest=bytes(h.digest), file_size=size)


def _bufsz_at_load(policy_code: int, role_code: int, bufsz: int) -> int:
    """``ima_add_kexec_buffer`` since 6.15 adds its segment with ``bufsz`` 0."""
    late = (kx.POLICY_CODES[policy_code] == DigestPolicy.UPSTREAM_6_15.value
            and kx.ROLE_CODES[role_code] == Role.HANDOVER.value)
    return 0 if late else bufsz


# Offsets inside the note descriptor (formats.kexec.note_fixed), for error messages.
_ARCH_AT, _PAGE_AT, _ENTRY_AT, _HAS_PURG_AT, _REGIONS_AT, _HEAD = 16, 32, 40, 50, 56, 344
_SEG, _INFO, _SYM = 32, 40, 64
#: Bounds verify's zero hashing: no real set of kexec segments comes near 64 GiB.
MAX_TOTAL_MEMSZ = 1 << 36
_UNIQUE_ROLES = (Role.HANDOVER, Role.PURGATORY, Role.DTB, Role.BOOT_PARAMS, Role.INITRD)


def check_page_size(page: int) -> str | None:
    """Why ``page`` is not a page size kimagekit lays out (None when it is)."""
    if page & (page - 1) or not MIN_PAGE_SIZE <= page <= MAX_PAGE_SIZE:
        return (f"{page:#x} is not a supported page size (a power of two from "
                f"{MIN_PAGE_SIZE:#x} to {MAX_PAGE_SIZE:#x})")
    return None


def _check_note(h: object, body: object, segs: list[ImageSegment], machine: int, little: bool,
                at: int, end: int) -> None:
    """Every note field against the ELF header, the file and each other, before any is used:
    nothing downstream (layout, patch, verify) may trust it."""
    arch = h.arch  # type: ignore[attr-defined]
    if arch not in ARCHES:
        raise _err(f"arch {arch!r} is not one of {', '.join(ARCHES)}", "note.arch", at + _ARCH_AT)
    if ARCHES[arch] != (machine, little):
        raise _err(f"arch {arch} does not match the ELF header (e_machine {machine}, "
                   f"{'little' if little else 'big'}-endian)", "note.arch", at + _ARCH_AT)
    page = h.page_size  # type: ignore[attr-defined]
    why = check_page_size(page)
    if why is not None:
        raise _err(f"page_size {why}", "note.page_size", at + _PAGE_AT)
    if not segs:
        raise _err("no segments", "note.nr_segments", at + 4)
    if h.has_purgatory > 1:  # type: ignore[attr-defined]
        raise _err(f"has_purgatory {h.has_purgatory} is not 0 or 1",  # type: ignore[attr-defined]
                   "note.has_purgatory", at + _HAS_PURG_AT)
    policy = DigestPolicy(kx.POLICY_CODES[h.digest_policy])  # type: ignore[attr-defined]
    room_end, total = end, 0
    for s in segs:
        seg_at, info_at = at + _HEAD + s.index * _SEG, at + _HEAD + len(segs) * _SEG
        info_at += s.index * _INFO
        f = f"note.segment[{s.index}]"
        if s.offset % page or s.offset < room_end:
            raise _err(f"content offset {s.offset:#x} is not page aligned after the previous "
                       f"segment's room (which ends at {room_end:#x})", f"{f}.buf", seg_at)
        room_end = s.offset + (s.memsz if s.role == Role.HANDOVER else s.bufsz)
        if s.mem % page or s.memsz % page or s.mem + s.memsz > 1 << 64:
            raise _err(f"mem {s.mem:#x} and memsz {s.memsz:#x} are not whole pages ({page:#x}) "
                       "below 2^64", f"{f}.mem", seg_at + 16)
        total += s.memsz
        if total > MAX_TOTAL_MEMSZ:
            raise _err(f"segments' memsz adds up past {MAX_TOTAL_MEMSZ:#x}", f"{f}.memsz",
                       seg_at + 24)
        for o in segs[:s.index]:
            if s.mem < o.mem + o.memsz and o.mem < s.mem + s.memsz:
                raise _err(f"memory {s.mem:#x}+{s.memsz:#x} overlaps segment {o.index}",
                           f"{f}.mem", seg_at + 16)
        if s.role in _UNIQUE_ROLES and any(o.role == s.role for o in segs[:s.index]):
            raise _err(f"a second {s.role} segment", f"note.info[{s.index}].role", info_at)
        if s.checksummed != hashes_role(policy, s.role):
            raise _err(f"checksummed {int(s.checksummed)} contradicts the {policy} policy for a "
                       f"{s.role} segment", f"note.info[{s.index}].checksummed", info_at + 1)
    purg = next((s for s in segs if s.role == Role.PURGATORY), None)
    if bool(h.has_purgatory) != (purg is not None):  # type: ignore[attr-defined]
        raise _err(f"has_purgatory {h.has_purgatory} but "  # type: ignore[attr-defined]
                   f"{'a' if purg else 'no'} purgatory segment", "note.has_purgatory",
                   at + _HAS_PURG_AT)
    entry = h.entry  # type: ignore[attr-defined]
    into = [purg] if purg is not None else segs
    if not any(s.mem <= entry < s.mem + s.memsz for s in into):
        raise _err(f"entry {entry:#x} is not inside {'the purgatory' if purg else 'a segment'}",
                   "note.entry", at + _ENTRY_AT)
    for k, r in enumerate(h.sha_regions):  # type: ignore[attr-defined]
        if (r.start, r.len) != (0, 0) and not any(
                (s.mem, s.memsz) == (r.start, r.len) for s in segs):
            raise _err(f"region {r.start:#x}+{r.len:#x} is not a segment's memory",
                       f"note.sha_regions[{k}]", at + _REGIONS_AT + 16 * k)
    sym_at = at + _HEAD + len(segs) * (_SEG + _INFO)
    for k, y in enumerate(body.symbols):  # type: ignore[attr-defined]
        if purg is None or not (purg.mem <= y.value and y.size <= purg.memsz
                                and y.value - purg.mem <= purg.memsz - y.size):
            raise _err(f"symbol {y.name!r} ({y.size} bytes at {y.value:#x}) is not inside the "
                       "purgatory", f"note.symbols[{k}]", sym_at + k * _SYM)


def content(view: memoryview | bytes, seg: ImageSegment) -> memoryview:
    return memoryview(view)[seg.offset:seg.offset + seg.bufsz]


@contextmanager
def open_image(path: str | os.PathLike[str]) -> Iterator[tuple[ImageInfo, memoryview]]:
    with mapped(path) as view:
        yield read_image(view), view


# --- verify --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    digest: bytes  # as stored (the purgatory's, or the note's without a purgatory)
    computed: bytes
    regions: tuple[tuple[int, int], ...]
    bad_segment: int | None
    bad_region: int | None
    reason: str


def stored_digest(info: ImageInfo, view: memoryview | bytes) -> tuple[bytes, bytes]:
    """(regions array, digest) as the purgatory holds them, or the note's without one."""
    if not info.has_purgatory:
        return regions_bytes(info.regions, info.little), info.digest
    purg = info.segment(Role.PURGATORY)
    if purg is None:
        raise _err("the note says there is a purgatory but no segment has that role",
                   "note.has_purgatory", None)
    for rname, dname in DIGEST_SYMBOLS:
        r, d = info.symbol(rname), info.symbol(dname)
        if r is not None and d is not None:
            return (_read_symbol(view, purg, r, REGIONS_SIZE),
                    _read_symbol(view, purg, d, kx.SHA256_DIGEST_SIZE))
    raise _err("no regions/digest symbols recorded for the purgatory", "note.symbols", None)


def _read_symbol(view: memoryview | bytes, purg: ImageSegment, sym: NoteSymbol,
                 size: int) -> bytes:
    rel = sym.value - purg.mem
    if sym.size != size or rel < 0 or rel + size > purg.bufsz:
        raise _err(f"symbol {sym.name} ({sym.size} bytes at {sym.value:#x}) is not inside the "
                   "purgatory's content", f"note.symbols.{sym.name}", None)
    return bytes(view[purg.offset + rel:purg.offset + rel + size])


def expected_regions(info: ImageInfo) -> tuple[tuple[int, int], ...]:
    return tuple((s.mem, s.memsz) for s in info.segments
                 if s.checksummed and s.role != Role.PURGATORY)


def verify(path: str | os.PathLike[str]) -> VerifyResult:
    """Recompute the digest as the purgatory will: hash every stored region's memory (content,
    then zeros to memsz) and compare with the stored digest. Streams over an mmap, dropping each
    chunk's pages once hashed, so memory stays flat whatever the image size."""
    with map_file(path) as (mm, view):
        info = read_image(view)
        return _verify(info, view, mm)


def verify_bytes(data: bytes | memoryview) -> VerifyResult:
    """:func:`verify` of an image held in memory (before it is written)."""
    view = memoryview(data)
    return _verify(read_image(view), view, None)


def _verify(info: ImageInfo, view: memoryview, mm: mmap.mmap | None) -> VerifyResult:
    raw_regions, digest = stored_digest(info, view)
    regions = tuple(r for r in _parse_regions(raw_regions, info.little) if r != (0, 0))

    def fail(reason: str, seg: int | None = None, reg: int | None = None,
             computed: bytes = b"") -> VerifyResult:
        return VerifyResult(False, digest, computed, regions, seg, reg, reason)

    purg = info.segment(Role.PURGATORY)
    if info.has_purgatory and purg is not None and (regions != info.regions
                                                     or digest != info.digest):
        return fail("the purgatory's regions or digest differ from the note's", purg.index)
    want = expected_regions(info)
    for k in range(max(len(regions), len(want))):
        got = regions[k] if k < len(regions) else None
        exp = want[k] if k < len(want) else None
        if got != exp:
            return fail(f"region {k} is {_fmt_region(got)} but the segment table calls for "
                        f"{_fmt_region(exp)}", None, k)
    by_mem = {(s.mem, s.memsz): s for s in info.segments}
    h = hashlib.sha256()
    for s in (by_mem[r] for r in regions):
        _feed(h, view, mm, s)
    computed = h.digest()
    if computed == digest:
        if info.arch in NO_PURGATORY_ARCHES:
            # nothing at reboot checks anything: hold the segments the digest leaves out (the
            # hand-over) to the note's record too
            for s in info.segments:
                if not s.checksummed and _sha256(view, mm, s) != s.sha256:
                    return fail(f"segment {s.index} ({s.role} at {s.mem:#x}) differs from the "
                                "SHA-256 the note records", s.index, None, computed)
        return VerifyResult(True, digest, computed, regions, None, None, "ok")
    for k, r in enumerate(regions):
        s = by_mem[r]
        if _sha256(view, mm, s) != s.sha256:
            return fail(f"segment {s.index} ({s.role}, region {k} at {s.mem:#x}) differs from "
                        "what was sealed", s.index, k, computed)
    return fail("every segment matches its recorded hash but the stored digest does not",
                None, None, computed)


def _sha256(view: memoryview, mm: mmap.mmap | None, s: ImageSegment) -> bytes:
    one = hashlib.sha256()
    _feed(one, view, mm, s)
    return one.digest()


def _fmt_region(r: tuple[int, int] | None) -> str:
    return "nothing" if r is None else f"{r[0]:#x}+{r[1]:#x}"


def _parse_regions(raw: bytes, little: bool) -> list[tuple[int, int]]:
    with converted(FMT, "purgatory_sha_regions"):
        return [(r.start, r.len) for r in kx.purgatory_sha_regions(little).parse(raw)]


_CHUNK = 8 << 20


def _feed(h: hashlib._Hash, view: memoryview, mm: mmap.mmap | None, s: ImageSegment) -> None:
    for at in range(s.offset, s.offset + s.bufsz, _CHUNK):
        n = min(_CHUNK, s.offset + s.bufsz - at)
        h.update(view[at:at + n])
        if mm is not None:
            # Hashed pages are not needed again: let them go so RSS does not grow with the file.
            lo = at - at % mmap.PAGESIZE
            mm.madvise(mmap.MADV_DONTNEED, lo, at + n - lo)
    feed_segment(h, b"", s.memsz - s.bufsz)


# --- ls / extract / patch ------------------------------------------------------------------------

def select_segment(info: ImageInfo, which: str) -> ImageSegment:
    """A segment by index (``2``) or by role (``initrd``: the first with that role)."""
    if which.isdigit():
        i = int(which)
        if i >= len(info.segments):
            raise UsageError(f"segment {i} does not exist (the image has "
                             f"{len(info.segments)})", fmt=FMT, field="segment")
        return info.segments[i]
    for s in info.segments:
        if s.role.value == which:
            return s
    roles = ", ".join(dict.fromkeys(s.role.value for s in info.segments))
    raise UsageError(f"no segment {which!r} (roles here: {roles})", fmt=FMT, field="segment")


def extract(path: str | os.PathLike[str], which: str, out: str | os.PathLike[str]) -> ImageSegment:
    """Write one segment's content (bufsz bytes) to ``out``."""
    with open_image(path) as (info, view):
        seg = select_segment(info, which)
        atomic_write(out, bytes(content(view, seg)), inputs=(path,))
    return seg


@dataclass(frozen=True)
class PatchResult:
    segment: ImageSegment
    old_bufsz: int
    resealed: bool
    verify: VerifyResult


def patch_handover(path: str | os.PathLike[str], data: bytes, *,
                   out: str | os.PathLike[str] | None = None, reseal: bool = False) -> PatchResult:
    """The offline ``kexec_update_segment`` on the hand-over segment: same mem and memsz, new
    content. Refused when too large, or when the policy hashes the hand-over unless ``reseal``
    (then the digest is recomputed and stored into the purgatory and the note). The output is
    written atomically and verified; on any refusal nothing is written. ``out`` None: in place,
    under an exclusive lock from the read to the verify, so no concurrent update is lost."""
    target = Path(out) if out is not None else Path(path)
    check_output(target, (path,), in_place=out is None, stdout=False)
    with locked(path) if out is None else nullcontext():
        return _patch_handover(path, data, target, reseal, in_place=out is None)


def _patch_handover(path: str | os.PathLike[str], data: bytes, target: Path, reseal: bool, *,
                    in_place: bool) -> PatchResult:
    with map_file(path) as (mm, view):
        info = read_image(view)
        ho = info.segment(Role.HANDOVER)
        if ho is None:
            raise RuleError("the image has no hand-over segment", fmt=FMT, field="segments")
        if ho.checksummed and not reseal:
            raise RuleError(f"the {info.policy} digest policy hashes the hand-over segment: "
                            "it can only change with a reseal", fmt=FMT,
                            field=f"segment[{ho.index}]")
        if len(data) > ho.memsz:
            raise RuleError(f"new contents are {len(data)} bytes, {len(data) - ho.memsz} more "
                            f"than the hand-over's memsz {ho.memsz}", fmt=FMT,
                            field=f"segment[{ho.index}]")
        before = _refuse_unverified(info, view, mm)
        # in place needs write access to the file itself (a rename needs only the folder's);
        # a copy with edits reopens the input by name: stdin (``-``) is written whole instead
        plan = None if ho.checksummed or mm is None or os.fspath(path) == "-" or (
            in_place and not os.access(target, os.W_OK)) else _edit_plan(info, view, ho, data)
        if plan is None:
            img = _rebuilt(info, view, ho.index, data, reseal)
            out = b"".join(image_chunks(img))
            composed = verify_bytes(out)
            if not composed.ok:
                raise OutputError(f"{target}: the patched image would not verify: "
                                  f"{composed.reason}; nothing written")
            atomic_write(target, out, inputs=(path,), in_place=in_place)
        elif in_place:
            edit_in_place(target, plan.edits, plan.size)
        else:
            write_copy_with_edits(target, os.fspath(path), plan.edits, plan.size, inputs=(path,),
                                  compare=plan.unhashed)
    # Edited in place, no byte the digest covers was written (the hand-over is outside it, the
    # edits were read back, the file held locked): the digest just checked still holds, so it is
    # not hashed again. A copy or a whole write is verified afresh.
    res = before if plan is not None and in_place else verify(target)
    if not res.ok:
        raise OutputError(f"{target}: the patched image does not verify: {res.reason}")
    with open_image(target) as (new, view):
        seg = new.segments[ho.index]
        if bytes(content(view, seg)) != data:
            raise OutputError(f"{target}: the hand-over read back differs from what was written")
    return PatchResult(seg, ho.bufsz, reseal and ho.checksummed, res)


def _refuse_unverified(info: ImageInfo, view: memoryview,
                       mm: mmap.mmap | None) -> VerifyResult:
    """An image whose digest already fails is not patched: a patch (a reseal above all) would
    hide the damage behind a fresh, consistent image."""
    before = _verify(info, view, mm)  # pages dropped as hashed: memory stays flat
    if not before.ok:
        raise Refused(f"the image does not verify before patching: {before.reason}; nothing "
                      "written", fmt=FMT, field="digest")
    return before


@dataclass(frozen=True)
class _EditPlan:
    edits: list[tuple[int, bytes]]  # in the order to write them: the hand-over, then the head
    size: int  # of the patched file
    unhashed: list[tuple[int, int]]  # the rest: neither edited nor in the digest's segments


def _edit_plan(info: ImageInfo, view: memoryview, ho: ImageSegment,
               data: bytes) -> _EditPlan | None:
    """The few byte ranges that change when the hand-over (outside the digest) gets ``data``:
    its slot, and the head (its PT_LOAD's p_filesz, the note's bufsz and sha256). None when the
    file is not laid out exactly as :func:`image_chunks` lays it out (then the whole image is
    written as before). Every other segment's recorded sha256 is kept, except the
    unchecksummed ones' (small: the purgatory), which are rehashed as a full write would; the
    checksummed ones are held to the digest by the verify that follows the write."""
    segs = info.segments
    old_img = _rebuilt(info, view, ho.index, bytes(content(view, ho)), False)
    old_head, offsets = image_head(old_img, [s.sha256 for s in segs])
    if offsets != [s.offset for s in segs] or view[:len(old_head)] != old_head:
        return None
    last = segs[-1]
    if info.file_size != last.offset + last.bufsz:
        return None
    gaps = [(len(old_head), offsets[0])]
    gaps += [(s.offset + s.bufsz, n.offset) for s, n in itertools.pairwise(segs)]
    if any(view[a:b] != bytes(b - a) for a, b in gaps):
        return None
    hashes = [segment_sha256(data, s.memsz) if s is ho else s.sha256 if s.checksummed
              else segment_sha256(content(view, s), s.memsz) for s in segs]
    new_head, new_offsets = image_head(_rebuilt(info, view, ho.index, data, False), hashes)
    if new_offsets != offsets or len(new_head) != len(old_head):
        return None
    is_last = ho is last
    slot = data if is_last else data.ljust(ho.bufsz, b"\0")
    size = ho.offset + len(data) if is_last else info.file_size
    edits = [(ho.offset, slot), (0, new_head)]
    covered = sorted([(s.offset, s.offset + s.bufsz) for s in segs if s.checksummed]
                     + [(at, at + len(b)) for at, b in edits])
    rest, at = [], 0
    for a, b in covered:
        rest.append((at, a))
        at = max(at, b)
    rest.append((at, size))
    return _EditPlan(edits, size, [(a, b) for a, b in rest if a < b])


def _rebuilt(info: ImageInfo, view: memoryview, index: int, data: bytes,
             reseal: bool) -> KexecImage:
    segs = tuple(Segment(bytes(data) if s.index == index else content(view, s), s.mem, s.memsz,
                         s.role, s.checksummed) for s in info.segments)
    sl = SegmentList(Target(info.arch, info.page_size), segs)
    d = Digest(info.regions, info.digest, ())
    if reseal and segs[index].checksummed:
        d = compute_digest(segs)
        if info.has_purgatory:
            sl = _store_into_purgatory(info, sl, d)
    return KexecImage(sl, info.policy, info.entry, info.cmdline.encode(), info.handover_style,
                      info.symbols, d, info.has_purgatory)


def _store_into_purgatory(info: ImageInfo, sl: SegmentList, d: Digest) -> SegmentList:
    purg = info.segment(Role.PURGATORY)
    if purg is None:
        raise RuleError("the note says there is a purgatory but no segment has that role",
                        fmt=FMT, field="note.has_purgatory")
    buf = bytearray(sl.segments[purg.index].content)
    for (rname, dname) in DIGEST_SYMBOLS:
        r, g = info.symbol(rname), info.symbol(dname)
        if r is None or g is None:
            continue
        for sym, value in ((r, regions_bytes(d.regions, info.little)), (g, d.digest)):
            if sym.size != len(value) or not 0 <= sym.value - purg.mem <= purg.bufsz - sym.size:
                raise RuleError(f"symbol {sym.name} cannot hold {len(value)} bytes", fmt=FMT,
                                field=f"note.symbols.{sym.name}")
            at = sym.value - purg.mem
            buf[at:at + len(value)] = value
        segs = list(sl.segments)
        segs[purg.index] = replace(segs[purg.index], content=bytes(buf))
        return replace(sl, segments=tuple(segs))
    raise RuleError("no regions/digest symbols recorded for the purgatory", fmt=FMT,
                    field="note.symbols")
