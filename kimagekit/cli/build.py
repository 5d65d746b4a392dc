"""``kimagekit build``: the options checked and turned into one call of
:mod:`kimagekit.arch.build` (ppc64 ELF loader or x86-64 bzImage loader), the result rendered."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from kimagekit.arch import ppc64_dt
from kimagekit.arch.build import (
    PPC_ARCHES,
    BuildInputs,
    Built,
    X86BuildResult,
    build_ppc64,
    build_x86_64,
)
from kimagekit.cli.common import emit_json, out, warn
from kimagekit.cli.image import ls_lines
from kimagekit.errors import UsageError
from kimagekit.image import HandoverStyle, check_page_size
from kimagekit.loader_profile import resolve
from kimagekit.purgatory import DigestPolicy
from kimagekit.segments import DEFAULT_RAM, HoleSearch, parse_mem_ranges


def _number(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"{what}: not a number: {text!r}") from None
    if value <= 0:
        raise UsageError(f"{what}: must be positive, not {text}")
    return value


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build_cmd(
        arch: str = typer.Option(..., "--arch", help="Target: ppc64le, ppc64 or x86_64."),
        kernel: Path = typer.Option(..., "--kernel", help="The vmlinux (ELF) to load."),
        dtb: Path | None = typer.Option(
            None, "--dtb", help="The running system's tree (.dtb or .dts); ppc64 only."),
        output: Path = typer.Option(..., "-o", "--output", help="Where to write the image."),
        initrd: Path | None = typer.Option(None, "--initrd", help="Initial ramdisk."),
        cmdline: str = typer.Option("", "--cmdline", help="Kernel command line (bootargs)."),
        purgatory: Path | None = typer.Option(None, "--purgatory", help="Purgatory object."),
        purgatory_from: Path | None = typer.Option(
            None, "--purgatory-from", help="x86_64: take the purgatory from this kernel."),
        mem: str | None = typer.Option(
            None, "--mem", help="x86_64: RAM ranges START-LAST or START+SIZE, comma separated."),
        ima: Path | None = typer.Option(None, "--ima", help="IMA list for the hand-over."),
        handover: Path | None = typer.Option(None, "--handover", help="Raw hand-over bytes."),
        handover_size: str | None = typer.Option(
            None, "--handover-size", help="memsz of the hand-over (default: as IMA sizes it)."),
        handover_style: HandoverStyle = typer.Option(
            HandoverStyle.SEED, "--handover-style", help="seed or ima."),
        policy: DigestPolicy | None = typer.Option(
            None, "--digest-policy", help="Which segments the digest leaves out (default: "
            "the named loader's, else seed)."),
        page_size: str | None = typer.Option(
            None, "--page-size", help=f"Target page size (default {ppc64_dt.PPC64_PAGE_SIZE})."),
        hole_search: HoleSearch | None = typer.Option(
            None, "--hole-search",
            help="x86_64: the loading kernel's hole search (default: its profile's)."),
        ima_kexec: bool | None = typer.Option(
            None, "--ima-kexec/--no-ima-kexec",
            help="x86_64: the loading kernel has CONFIG_IMA_KEXEC (room for SETUP_IMA)."),
        loader_version: str | None = typer.Option(
            None, "--loader-version", help="The kernel that performs the load (6.1, 6.12.117, "
            "7.2, newest): its placement rules (default: --kernel's version)."),
        loader_config: Path | None = typer.Option(
            None, "--loader-config", help="That kernel's config (/boot/config-*): IMA_KEXEC, "
            "IMA_KEXEC_EXTRA_MEMORY_KB, KEXEC_HANDOVER, page size (default: a config beside "
            "--kernel)."),
        force: bool = typer.Option(False, "--force", help="Write a hand-over the next kernel "
                                   "would refuse."),
        require_signature: Path | None = typer.Option(
            None, "--require-signature", help="x86_64: refuse a kernel whose signature does "
            "not chain to this certificate (or a directory of them), as KEXEC_SIG_FORCE does."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable result."),
    ) -> None:
        """Place kernel, initrd, hand-over, device tree (and purgatory) as kexec_file_load does;
        seal, write atomically, re-read and verify."""
        named = loader_version is not None or loader_config is not None
        profile = resolve(loader_version, loader_config, kernel=kernel)
        if policy is None:
            # a named loader seals as it would; otherwise kimagekit's own (seed) policy
            policy = profile.digest_policy if named else DigestPolicy.SEED
        x86_ima_kexec = ima_kexec
        if (ima is not None or handover is not None) and not profile.ima_kexec and \
                ima_kexec is None:
            if named:
                raise UsageError(f"the loader profile {profile.name} ({profile.config}) has no "
                                 "CONFIG_IMA_KEXEC: it hands over no IMA list (--ima-kexec "
                                 "overrides)")
            # a config found beside --kernel only guesses the loader's: the hand-over asked
            # for is built as a loader with CONFIG_IMA_KEXEC builds it
            x86_ima_kexec = True
        inputs = BuildInputs(kernel, output, initrd=initrd, cmdline=cmdline, purgatory=purgatory,
                             ima=ima, handover=handover, policy=policy, force=force,
                             require_signature=require_signature)
        if arch == "x86_64":
            if dtb is not None or handover is not None:
                raise UsageError("x86_64 takes no --dtb or --handover (the hand-over is --ima)")
            size = _number(handover_size, "--handover-size")
            ram = parse_mem_ranges(mem) if mem else DEFAULT_RAM
            if (purgatory is None) == (purgatory_from is None):
                raise UsageError("x86_64 needs exactly one of --purgatory P and "
                                 "--purgatory-from KERNEL")
            built = build_x86_64(replace(inputs, handover_size=size),
                                 purgatory_from=purgatory_from, ram=ram,
                                 hole_search=hole_search, ima_kexec=x86_ima_kexec,
                                 profile=profile)
        else:
            if arch not in PPC_ARCHES:
                raise UsageError(f"--arch {arch}: this build supports "
                                 f"{', '.join((*PPC_ARCHES, 'x86_64'))}")
            if dtb is None or purgatory_from is not None or mem is not None:
                raise UsageError("ppc64 needs --dtb and takes no --purgatory-from or --mem")
            if hole_search is not None or ima_kexec is False:
                # powerpc has its own exclude-list search, the same in 6.1 and upstream; and
                # no setup_data room to size (--ima-kexec only overrides a profile's refusal)
                raise UsageError("--hole-search and --no-ima-kexec are x86_64 options")
            if ima is not None and handover is not None:
                raise UsageError("--ima and --handover exclude each other")
            if handover_style not in (HandoverStyle.SEED, HandoverStyle.IMA):
                raise UsageError(f"--handover-style {handover_style}: a device tree takes seed "
                                 "or ima")
            page = (_number(page_size, "--page-size") or profile.ppc_page_size
                    or ppc64_dt.PPC64_PAGE_SIZE)
            why = check_page_size(page)
            if why is not None:
                raise UsageError(f"--page-size {why}")
            size = _number(handover_size, "--handover-size")
            if size is not None and ima is None and handover is None:
                raise UsageError("--handover-size needs --ima or --handover")
            built = build_ppc64(replace(inputs, handover_size=size),
                                arch=arch, dtb=dtb, handover_style=handover_style,
                                page_size=page, profile=profile)
        if isinstance(built.result, X86BuildResult) and built.result.signature_warning:
            warn(f"warning: {built.result.signature_warning}")
        for w in built.warnings:
            warn(f"warning: {output}: {w}")
        if as_json:
            emit_json(built)
            return
        for line in ls_lines(built.image):
            out(line)
        out(_summary_line(built))


def _summary_line(built: Built) -> str:
    r = built.result
    if isinstance(r, X86BuildResult):
        return (f"{r.output}: entry {r.entry:#x} (purgatory), kernel entry {r.kernel_entry:#x}, "
                f"boot_params {r.boot_params:#x}, digest {r.digest} ({r.policy} policy), "
                "verified")
    return f"{r.output}: entry {r.entry:#x}, digest {r.digest} ({r.policy} policy), verified"
