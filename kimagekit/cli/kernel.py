"""``kimagekit extract-purgatory KERNEL -o FILE`` and the text of the kernel kinds of ``inspect``
(bzImage, ELF vmlinux, arm64 Image, arm64 EFI zboot)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from kimagekit.cli.common import emit_json, out
from kimagekit.cli.progress import Progress
from kimagekit.kernel_info import (
    Arm64Summary,
    BzImageSummary,
    PeSummary,
    VmlinuxSummary,
    ZbootSummary,
    extract_purgatory,
)


def register(app: typer.Typer) -> None:
    @app.command("extract-purgatory")
    def extract_purgatory_cmd(
        kernel: Path = typer.Argument(..., metavar="KERNEL", help="A bzImage or ELF vmlinux "
                                      "('-': stdin)."),
        output: Path = typer.Option(..., "-o", "--output", metavar="FILE",
                                    help="Where to write the object ('-': stdout)."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable result."),
    ) -> None:
        """Write the purgatory object a kexec_file kernel embeds; refuse when it has none.

        Example: kimagekit extract-purgatory /boot/vmlinuz -o purgatory.ro"""
        with Progress(f"decompressing {kernel}"):
            result = extract_purgatory(kernel, output)
        if as_json:
            emit_json(result)
            return
        out(f"{output}: purgatory, {result.size} bytes, sha256 {result.sha256} (found by "
            f"{result.how} at {result.offset:#x} in the {result.source})")


# --- text ----------------------------------------------------------------------------------------

def _pe_lines(p: PeSummary | None) -> list[str]:
    if p is None:
        return ["PE wrapper: none"]
    sig = (f"signed (Authenticode, {p.certificates} certificate(s), table "
           f"{p.certificate_table[1]} bytes at {p.certificate_table[0]:#x})"
           if p.signed and p.certificate_table else "not signed")
    lines = [f"PE wrapper: {p.optional_magic}, machine {p.machine:#x}, sections "
             f"{' '.join(p.sections)}; {sig}"]
    for s in p.signatures:
        if s.error is not None:
            lines.append(f"  signature {s.index} at {s.offset:#x}: unreadable: {s.error}")
            continue
        digest = "matches the file" if s.image_digest_ok else "DOES NOT MATCH the file"
        lines.append(f"  signature {s.index} at {s.offset:#x}"
                     f"{' (the one kexec checks)' if s.used_by_kexec else ''}: signer "
                     f"{s.signer or 'not in the signature'}, issuer {s.issuer}, serial "
                     f"{s.serial}, {s.digest_algorithm}, signing time "
                     f"{s.signing_time or 'none'}; image digest {digest}")
    return lines


def render_vmlinux(k: VmlinuxSummary) -> list[str]:
    kind = {2: "ET_EXEC", 3: "ET_DYN"}.get(k.e_type, str(k.e_type))
    lines = [f"ELF vmlinux: {k.arch} ({k.endian} endian), {kind}, entry {k.entry:#x}, "
             f"{'relocatable' if k.relocatable else 'not relocatable'}",
             f"build id {k.build_id or 'none'}",
             f"banner {k.banner!r}" if k.banner else "banner: none found",
             f"symbols: {k.symbols}" if k.symbols else "symbols: none (stripped)"]
    for x in k.loads:
        lines.append(f"PT_LOAD offset {x.offset:#x} vaddr {x.vaddr:#x} paddr {x.paddr:#x} "
                     f"filesz {x.filesz:#x} memsz {x.memsz:#x} align {x.align:#x}")
    return lines + _profile_lines(k.loader_profile)


def _profile_lines(lp: dict[str, object] | None) -> list[str]:
    if lp is None:
        return []
    rules = lp["rules"]
    assert isinstance(rules, dict)
    return [f"loader profile (when it performs a load): {lp['name']}, from {lp['source']}; "
            f"config {lp['config'] or 'none (newest defaults)'}",
            "  " + ", ".join(f"{k} {v}" for k, v in rules.items() if v is not None)]


def render_bzimage(b: BzImageSummary) -> list[str]:
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
    lines += _profile_lines(b.loader_profile)
    lines.append("setup header:")
    for name, value in b.header.items():
        lines.append(f"  {name:<22} {value if isinstance(value, str) else hex(value)}")
    return lines


def render_arm64(a: Arm64Summary) -> list[str]:
    return [f"arm64 Image, {a.endian} endian, text_offset {a.text_offset:#x}, image_size "
            f"{a.image_size:#x}, page size {a.page_size or 'unspecified'}, "
            f"{'anywhere' if a.phys_anywhere else 'low'} placement",
            *_pe_lines(a.pe), f"banner {a.banner!r}" if a.banner else "banner: none found",
            *_arm64_loader_line(a.kexec_file_loadable, a.not_loadable_because)]


def _arm64_loader_line(loadable: bool | None, why: str | None) -> list[str]:
    if loadable is None:
        return []
    return ["kexec_file (arm64 Image, 7.2): " + ("loadable" if loadable else f"refused: {why}")]


def render_zboot(z: ZbootSummary) -> list[str]:
    lines = [f"arm64 EFI zboot, comp_type {z.comp_type!r} ({z.compression or 'unknown'}), "
             f"payload {z.payload_size} bytes at {z.payload_offset:#x}, decompressed "
             f"{z.decompressed_size} bytes", *_pe_lines(z.pe)]
    if z.image is not None:
        lines += ["  " + line for line in render_arm64(z.image)]
    return lines + _arm64_loader_line(z.kexec_file_loadable, z.not_loadable_because)


RENDERERS: dict[str, Callable[[Any], list[str]]] = {
    "bzImage": render_bzimage,
    "arm64 zboot": render_zboot,
    "arm64 Image": render_arm64,
    "vmlinux": render_vmlinux,
}
