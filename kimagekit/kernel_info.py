"""What ``inspect`` reports about a kernel file, and ``extract-purgatory``: summaries built from
the models of :mod:`kimagekit.kernels`, :mod:`kimagekit.vmlinux` and :mod:`kimagekit.pe_file`.

A summary keeps the stable JSON shape (``endian`` as a word, a certificate count, the kexec_file
verdict) apart from the parsing models, which keep the kernel's own field names.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace

from kimagekit import kernels
from kimagekit import vmlinux as vm
from kimagekit.errors import KimageError, input_named
from kimagekit.fileio import atomic_write, map_file, mapped
from kimagekit.pe_file import PeInfo
from kimagekit.sig.authenticode import SignatureSummary, summaries

__all__ = [
    "Arm64Summary", "BzImageSummary", "ExtractResult", "LoadSummary", "Pathish", "PayloadSummary",
    "PeSummary", "VmlinuxSummary", "ZbootSummary", "arm64_summary", "describe_arm64",
    "describe_bzimage", "describe_vmlinux", "describe_zboot", "extract_purgatory", "is_vmlinux",
    "pe_summary", "vmlinux_summary",
]

Pathish = str | os.PathLike[str]


@dataclass(frozen=True)
class PeSummary:
    machine: int
    optional_magic: str
    sections: tuple[str, ...]
    signed: bool
    certificate_table: tuple[int, int] | None
    certificates: int
    signatures: tuple[SignatureSummary, ...] = ()  # each PKCS#7 entry; needs the file's bytes


@dataclass(frozen=True)
class LoadSummary:
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    flags: int
    align: int


@dataclass(frozen=True)
class VmlinuxSummary:
    arch: str
    machine: int
    endian: str
    e_type: int
    entry: int
    relocatable: bool
    build_id: str | None
    banner: str | None
    loads: tuple[LoadSummary, ...]
    symbols: int
    size: int
    # as BzImageSummary's (a vmlinux read on its own; None inside a bzImage's payload)
    loader_profile: dict[str, object] | None = None


@dataclass(frozen=True)
class PayloadSummary:
    offset: int
    length: int
    compression: str | None
    claimed_size: int | None
    decompressed_size: int | None
    vmlinux: VmlinuxSummary | None


@dataclass(frozen=True)
class BzImageSummary:
    size: int
    protocol: str
    version: int
    version_string: str | None
    setup_sects: int
    kernel_offset: int
    header: dict[str, int | str]
    pe: PeSummary | None
    signed: bool
    payload: PayloadSummary | None
    kexec_file_loadable: bool
    not_loadable_because: str | None
    # the loader profile this kernel implies when it performs a load (its version, a config
    # beside it): name, source, config, rules
    loader_profile: dict[str, object] | None = None


@dataclass(frozen=True)
class Arm64Summary:
    size: int
    text_offset: int
    image_size: int
    flags: int
    endian: str
    page_size: int | None
    phys_anywhere: bool
    pe: PeSummary | None
    banner: str | None
    # 7.2's arm64 kexec_file Image loader (probe and load checks); None: not judged
    kexec_file_loadable: bool | None = None
    not_loadable_because: str | None = None


@dataclass(frozen=True)
class ZbootSummary:
    size: int
    comp_type: str
    payload_offset: int
    payload_size: int
    compression: str | None
    decompressed_size: int | None
    image: Arm64Summary | None
    pe: PeSummary | None
    signed: bool
    kexec_file_loadable: bool = False  # 7.2's arm64 loader has no zboot path
    not_loadable_because: str | None = None


def pe_summary(p: PeInfo | None, data: bytes | memoryview | None = None) -> PeSummary | None:
    """``data``: the PE file itself, to describe its signatures (the whole file is hashed)."""
    if p is None:
        return None
    sigs = summaries(data) if data is not None and p.signed else ()
    return PeSummary(p.machine, p.optional_magic, p.sections, p.signed, p.certificate_table,
                     len(p.certificates), sigs)


def vmlinux_summary(k: vm.ElfKernel) -> VmlinuxSummary:
    loads = tuple(LoadSummary(x.p_offset, x.p_vaddr, x.p_paddr, x.p_filesz, x.p_memsz,
                              x.p_flags, x.p_align) for x in k.loads)
    return VmlinuxSummary(k.arch, k.machine, "little" if k.little else "big", k.e_type, k.entry,
                          k.relocatable, k.build_id, k.banner, loads, k.symbol_count, k.size)


def arm64_summary(a: kernels.Arm64Image,
                  data: bytes | memoryview | None = None) -> Arm64Summary:
    return Arm64Summary(a.size, a.text_offset, a.image_size, a.flags,
                        "big" if a.big_endian else "little", a.page_size, a.phys_anywhere,
                        pe_summary(a.pe, data), a.banner)


def describe_bzimage(path: Pathish) -> BzImageSummary:
    """The bzImage with its payload decompressed, and whether ``bzImage64_probe`` takes it."""
    with mapped(path) as view:
        img = kernels.read_bzimage(view, decompress=True)
        reason = None
        try:
            kernels.probe_bzimage64(view, img)
        except KimageError as err:
            reason = str(err)
        pe = pe_summary(img.pe, view)
    p = img.payload
    payload = None if p is None else PayloadSummary(
        p.offset, p.length, p.compression, p.claimed_size, p.decompressed_size,
        None if p.vmlinux is None else vmlinux_summary(p.vmlinux))
    return BzImageSummary(img.size, img.header.protocol, img.header.version, img.version_string,
                          img.setup_sects, img.kernel_offset,
                          {f.name: f.value for f in img.header.fields}, pe,
                          img.pe is not None and img.pe.signed, payload, reason is None, reason,
                          _profile(path))


def _profile(kernel: Pathish) -> dict[str, object]:
    """The loader profile ``kernel`` implies when it performs a load (its version, a config
    beside it), as inspect reports it."""
    from kimagekit.loader_profile import resolve

    prof = resolve(kernel=kernel)
    return {"name": prof.name, "source": prof.source, "config": prof.config,
            "rules": prof.rules()}


def describe_vmlinux(path: Pathish) -> VmlinuxSummary:
    with map_file(path) as (mm, view):
        summary = vmlinux_summary(vm.read_elf_kernel(mm if mm is not None else bytes(view)))
    return replace(summary, loader_profile=_profile(path))


def describe_arm64(path: Pathish) -> Arm64Summary:
    with mapped(path) as view:
        summary = arm64_summary(kernels.read_arm64_image(view), view)
        why = _arm64_refusal(view)
    return replace(summary, kexec_file_loadable=why is None, not_loadable_because=why)


def _arm64_refusal(data: bytes | memoryview) -> str | None:
    """Why 7.2's arm64 kexec_file loader refuses the kernel (None: it takes it)."""
    from kimagekit.arch import arm64  # the loader: not needed to describe other kernels

    try:
        arm64.probe(data)
    except KimageError as err:
        return err.message
    return None


def describe_zboot(path: Pathish) -> ZbootSummary:
    with mapped(path) as view:
        z = kernels.read_zboot(view, decompress=True)
        pe = pe_summary(z.pe, view)
        why = _arm64_refusal(view)
    return ZbootSummary(z.size, z.comp_type, z.payload_offset, z.payload_size, z.compression,
                        z.decompressed_size, None if z.image is None else arm64_summary(z.image),
                        pe, z.pe is not None and z.pe.signed, why is None, why)


def is_vmlinux(head: bytes) -> bool:
    """An ELF kernel, and not a kexec image: those carry the kimagekit note, found by walking
    the program headers in ``head`` (an image's headers and note come first)."""
    return kernels.kernel_kind(head) == "vmlinux" and not kernels.has_kimagekit_note(head)


@dataclass(frozen=True)
class ExtractResult:
    output: str
    size: int
    sha256: str
    offset: int
    how: str
    source: str


def extract_purgatory(kernel: Pathish, output: Pathish) -> ExtractResult:
    """Write the purgatory object a kexec_file kernel embeds to ``output`` (atomically)."""
    with input_named(kernel), mapped(kernel) as view:
        found = kernels.find_purgatory(view)
    atomic_write(output, found.data, inputs=(kernel,))
    return ExtractResult(str(output), len(found.data), hashlib.sha256(found.data).hexdigest(),
                         found.offset, found.how, found.vmlinux_from)
