"""``kimagekit extract-purgatory KERNEL -o FILE`` and the kernel views of ``inspect`` (bzImage,
ELF vmlinux, arm64 Image, arm64 EFI zboot)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import typer

from kimagekit import kernels
from kimagekit import vmlinux as vm
from kimagekit.cli.common import emit_json, input_named, out
from kimagekit.cli.inspect import Kind
from kimagekit.errors import KimageError
from kimagekit.fileio import atomic_write, map_file, mapped
from kimagekit.pe_file import PeInfo


def register(app: typer.Typer) -> None:
    @app.command("extract-purgatory")
    def extract_purgatory_cmd(
        kernel: Path = typer.Argument(..., help="A bzImage or ELF vmlinux."),
        output: Path = typer.Option(..., "-o", "--output", help="Where to write the object."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable result."),
    ) -> None:
        """Write the purgatory object a kexec_file kernel embeds; refuse when it has none."""
        with input_named(kernel), mapped(kernel) as view:
            found = kernels.find_purgatory(view)
        atomic_write(output, found.data)
        result = ExtractResult(str(output), len(found.data),
                               hashlib.sha256(found.data).hexdigest(), found.offset, found.how,
                               found.vmlinux_from)
        if as_json:
            emit_json(result)
            return
        out(f"{output}: purgatory, {result.size} bytes, sha256 {result.sha256} (found by "
            f"{result.how} at {result.offset:#x} in the {result.source})")


@dataclass(frozen=True)
class ExtractResult:
    output: str
    size: int
    sha256: str
    offset: int
    how: str
    source: str


# --- views ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PeView:
    machine: int
    optional_magic: str
    sections: tuple[str, ...]
    signed: bool
    certificate_table: tuple[int, int] | None
    certificates: int


@dataclass(frozen=True)
class LoadView:
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    flags: int
    align: int


@dataclass(frozen=True)
class VmlinuxView:
    arch: str
    machine: int
    endian: str
    e_type: int
    entry: int
    relocatable: bool
    build_id: str | None
    banner: str | None
    loads: tuple[LoadView, ...]
    symbols: int
    size: int


@dataclass(frozen=True)
class PayloadView:
    offset: int
    length: int
    compression: str | None
    claimed_size: int | None
    decompressed_size: int | None
    vmlinux: VmlinuxView | None


@dataclass(frozen=True)
class BzImageView:
    size: int
    protocol: str
    version: int
    version_string: str | None
    setup_sects: int
    kernel_offset: int
    header: dict[str, int | str]
    pe: PeView | None
    signed: bool
    payload: PayloadView | None
    kexec_file_loadable: bool
    not_loadable_because: str | None


@dataclass(frozen=True)
class Arm64View:
    size: int
    text_offset: int
    image_size: int
    flags: int
    endian: str
    page_size: int | None
    phys_anywhere: bool
    pe: PeView | None
    banner: str | None


@dataclass(frozen=True)
class ZbootView:
    size: int
    comp_type: str
    payload_offset: int
    payload_size: int
    compression: str | None
    decompressed_size: int | None
    image: Arm64View | None
    pe: PeView | None
    signed: bool


def pe_view(p: PeInfo | None) -> PeView | None:
    if p is None:
        return None
    return PeView(p.machine, p.optional_magic, p.sections, p.signed, p.certificate_table,
                  len(p.certificates))


def vmlinux_view(k: vm.ElfKernel) -> VmlinuxView:
    loads = tuple(LoadView(x.p_offset, x.p_vaddr, x.p_paddr, x.p_filesz, x.p_memsz, x.p_flags,
                           x.p_align) for x in k.loads)
    return VmlinuxView(k.arch, k.machine, "little" if k.little else "big", k.e_type, k.entry,
                       k.relocatable, k.build_id, k.banner, loads, k.symbol_count, k.size)


def describe_bzimage(path: Path) -> BzImageView:
    with mapped(path) as view:
        img = kernels.read_bzimage(view, decompress=True)
        reason = None
        try:
            kernels.probe_bzimage64(view, img)
        except KimageError as err:
            reason = str(err)
    p = img.payload
    payload = None if p is None else PayloadView(
        p.offset, p.length, p.compression, p.claimed_size, p.decompressed_size,
        None if p.vmlinux is None else vmlinux_view(p.vmlinux))
    return BzImageView(img.size, img.header.protocol, img.header.version, img.version_string,
                       img.setup_sects, img.kernel_offset,
                       {f.name: f.value for f in img.header.fields}, pe_view(img.pe),
                       img.pe is not None and img.pe.signed, payload, reason is None, reason)


def describe_vmlinux(path: Path) -> VmlinuxView:
    with map_file(path) as (mm, view):
        return vmlinux_view(vm.read_elf_kernel(mm if mm is not None else bytes(view)))


def _arm64_view(a: kernels.Arm64Image) -> Arm64View:
    return Arm64View(a.size, a.text_offset, a.image_size, a.flags,
                     "big" if a.big_endian else "little", a.page_size, a.phys_anywhere,
                     pe_view(a.pe), a.banner)


def describe_arm64(path: Path) -> Arm64View:
    with mapped(path) as view:
        return _arm64_view(kernels.read_arm64_image(view))


def describe_zboot(path: Path) -> ZbootView:
    with mapped(path) as view:
        z = kernels.read_zboot(view, decompress=True)
    return ZbootView(z.size, z.comp_type, z.payload_offset, z.payload_size, z.compression,
                     z.decompressed_size, None if z.image is None else _arm64_view(z.image),
                     pe_view(z.pe), z.pe is not None and z.pe.signed)


# --- text ----------------------------------------------------------------------------------------

def _pe_lines(p: PeView | None) -> list[str]:
    if p is None:
        return ["PE wrapper: none"]
    sig = (f"signed (Authenticode, {p.certificates} certificate(s), table "
           f"{p.certificate_table[1]} bytes at {p.certificate_table[0]:#x})"
           if p.signed and p.certificate_table else "not signed")
    return [f"PE wrapper: {p.optional_magic}, machine {p.machine:#x}, sections "
            f"{' '.join(p.sections)}; {sig}"]


def render_vmlinux(k: VmlinuxView) -> list[str]:
    kind = {2: "ET_EXEC", 3: "ET_DYN"}.get(k.e_type, str(k.e_type))
    lines = [f"ELF vmlinux: {k.arch} ({k.endian} endian), {kind}, entry {k.entry:#x}, "
             f"{'relocatable' if k.relocatable else 'not relocatable'}",
             f"build id {k.build_id or 'none'}",
             f"banner {k.banner!r}" if k.banner else "banner: none found",
             f"symbols: {k.symbols}" if k.symbols else "symbols: none (stripped)"]
    for x in k.loads:
        lines.append(f"PT_LOAD offset {x.offset:#x} vaddr {x.vaddr:#x} paddr {x.paddr:#x} "
                     f"filesz {x.filesz:#x} memsz {x.memsz:#x} align {x.align:#x}")
    return lines


def render_bzimage(b: BzImageView) -> list[str]:
    lines = [f"x86 bzImage, boot protocol {b.protocol}, setup_sects {b.setup_sects}, "
             f"protected-mode kernel at {b.kernel_offset:#x}",
             f"version {b.version_string!r}" if b.version_string else "version: none"]
    lines += _pe_lines(b.pe)
    if b.payload is not None:
        p = b.payload
        lines.append(f"payload: {p.compression or 'unknown'}, {p.length} bytes at "
                     f"{p.offset:#x}, decompressed {p.decompressed_size} bytes"
                     + (f" (size trailer {p.claimed_size})" if p.claimed_size is not None
                        else ""))
        if p.vmlinux is not None:
            lines += ["  " + line for line in render_vmlinux(p.vmlinux)]
    lines.append("kexec_file (bzImage64): " + ("loadable" if b.kexec_file_loadable
                                                else f"refused: {b.not_loadable_because}"))
    lines.append("setup header:")
    for name, value in b.header.items():
        lines.append(f"  {name:<22} {value if isinstance(value, str) else hex(value)}")
    return lines


def render_arm64(a: Arm64View) -> list[str]:
    return [f"arm64 Image, {a.endian} endian, text_offset {a.text_offset:#x}, image_size "
            f"{a.image_size:#x}, page size {a.page_size or 'unspecified'}, "
            f"{'anywhere' if a.phys_anywhere else 'low'} placement",
            *_pe_lines(a.pe), f"banner {a.banner!r}" if a.banner else "banner: none found"]


def render_zboot(z: ZbootView) -> list[str]:
    lines = [f"arm64 EFI zboot, comp_type {z.comp_type!r} ({z.compression or 'unknown'}), "
             f"payload {z.payload_size} bytes at {z.payload_offset:#x}, decompressed "
             f"{z.decompressed_size} bytes", *_pe_lines(z.pe)]
    if z.image is not None:
        lines += ["  " + line for line in render_arm64(z.image)]
    return lines


def _kind_is(name: str) -> object:
    def detect(head: bytes, size: int) -> bool:
        return kernels.kernel_kind(head) == name
    return detect


def inspect_kinds() -> list[Kind]:
    return [
        Kind("bzImage", _kind_is("bzImage"), describe_bzimage, render_bzimage),  # type: ignore[arg-type]
        Kind("arm64 zboot", _kind_is("zboot"), describe_zboot, render_zboot),  # type: ignore[arg-type]
        Kind("arm64 Image", _kind_is("arm64-image"), describe_arm64, render_arm64),  # type: ignore[arg-type]
        Kind("vmlinux", _vmlinux_detect, describe_vmlinux, render_vmlinux),
    ]


def _vmlinux_detect(head: bytes, size: int) -> bool:
    """An ELF kernel, and not a kexec image: those carry the kimagekit note, found by walking
    the program headers in ``head`` (an image's headers and note come first)."""
    return kernels.kernel_kind(head) == "vmlinux" and not kernels.has_kimagekit_note(head)
