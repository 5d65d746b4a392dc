"""``kimagekit build``: the options checked and turned into one call of
:mod:`kimagekit.arch.build` (ppc64 ELF loader or x86-64 bzImage loader), the result rendered."""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum
from pathlib import Path

import typer

from kimagekit.arch import ppc64_dt
from kimagekit.arch.build import (
    ARM64_PAGE_SIZE,
    PPC_ARCHES,
    Arm64BuildResult,
    BuildInputs,
    Built,
    Riscv64BuildResult,
    X86BuildResult,
    build_arm64,
    build_ppc64,
    build_riscv64,
    build_x86_64,
)
from kimagekit.arch.ppc64_crash import CrashInputs, parse_crashkernel
from kimagekit.cli.common import DtStyle, emit_json, out, warn
from kimagekit.cli.image import ls_lines
from kimagekit.cli.memory_map import map_lines, write_svg
from kimagekit.cli.progress import Progress
from kimagekit.errors import UsageError
from kimagekit.ima_kexec_events import KexecEvents
from kimagekit.image import HandoverStyle, check_page_size
from kimagekit.kho_load import KhoLoad, read_scratch
from kimagekit.loader_profile import LoaderProfile, resolve
from kimagekit.memory_map import file_map
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


class DtbFrom(StrEnum):
    FIRMWARE = "firmware"
    RUNNING = "running"


class ImaHash(StrEnum):
    SHA1 = "sha1"
    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"


class Arch(StrEnum):
    PPC64LE = "ppc64le"
    PPC64 = "ppc64"
    X86_64 = "x86_64"
    ARM64 = "arm64"
    RISCV64 = "riscv64"


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build_cmd(
        arch: Arch = typer.Option(..., "--arch", help="The target kernel's architecture."),
        kernel: Path = typer.Option(
            ..., "--kernel", metavar="KERNEL", help="The kernel to load: ppc64le/ppc64 take "
            "the ELF vmlinux, x86_64 the bzImage (/boot/vmlinuz), arm64 the Image (PE-wrapped "
            "or not; not an EFI zboot, which 7.2's loader refuses), riscv64 the ELF vmlinux or "
            "the Image (Debian's vmlinuz)."),
        dtb: Path | None = typer.Option(
            None, "--dtb", metavar="DTB", help="ppc64, arm64, riscv64: the running system's "
            "tree (.dtb or .dts): RAM, reservations, and the /chosen the next kernel gets."),
        output: Path = typer.Option(..., "-o", "--output", metavar="FILE",
                                    help="Where to write the image (a regular file: it is "
                                    "re-read and verified)."),
        initrd: Path | None = typer.Option(None, "--initrd", metavar="FILE",
                                           help="Initial ramdisk."),
        cmdline: str = typer.Option("", "--cmdline", metavar="TEXT",
                                    help="Kernel command line (bootargs)."),
        purgatory: Path | None = typer.Option(
            None, "--purgatory", metavar="FILE",
            help="Purgatory object (extract-purgatory writes one; riscv64 and ppc64: "
            "scripts/build_purgatory.py builds the kernel's own)."),
        dtb_from: DtbFrom = typer.Option(
            DtbFrom.FIRMWARE, "--dtb-from",
            help="ppc64: what --dtb is. running: the running kernel's tree (/sys/firmware/fdt): "
            "/cpus is rebuilt and its reserved ranges (RTAS, TCE, reserved-ranges) get "
            "/memreserve/ entries, as setup_new_fdt_ppc64 does. firmware: a firmware or QEMU "
            "dump, which lacks what the running kernel adds at boot: /chosen is edited only."),
        crash: bool = typer.Option(
            False, "--crash", help="ppc64: a kdump load (KEXEC_FILE_ON_CRASH): everything in "
            "the crash kernel region, backup and ELF core header segments, elfcorehdr= on the "
            "command line, linux,usable-memory in the tree. Needs --dtb-from running and the "
            "--crashkernel, --crash-mem, --crash-notes, --crash-notes-size, --vmcoreinfo facts."),
        crashkernel: str | None = typer.Option(
            None, "--crashkernel", metavar="SIZE@BASE", help="--crash: the region the running "
            "kernel reserved (/proc/iomem \"Crash kernel\"), e.g. 512M@0x20000000."),
        crash_mem: str | None = typer.Option(
            None, "--crash-mem", metavar="RANGES", help="--crash: the running kernel's memblock "
            "regions (/proc/iomem \"System RAM\"), START-LAST or START+SIZE, comma separated."),
        crash_notes: str | None = typer.Option(
            None, "--crash-notes", metavar="ADDRS", help="--crash: each possible CPU's "
            "crash_notes address (/sys/devices/system/cpu/cpuN/crash_notes), comma separated."),
        crash_notes_size: str | None = typer.Option(
            None, "--crash-notes-size", metavar="N", help="--crash: their size "
            "(/sys/devices/system/cpu/cpu0/crash_notes_size)."),
        vmcoreinfo: str | None = typer.Option(
            None, "--vmcoreinfo", metavar="ADDR,SIZE", help="--crash: the vmcoreinfo note "
            "(/sys/kernel/vmcoreinfo)."),
        crash_hotplug: bool = typer.Option(
            False, "--crash-hotplug", help="--crash: the loading kernel has CONFIG_CRASH_HOTPLUG "
            "and MEMORY_HOTPLUG: room for 8192 memory ranges in the ELF headers, tree not "
            "packed."),
        no_purgatory: bool = typer.Option(
            False, "--no-purgatory", help="ppc64: build without the purgatory the kernel always "
            "loads: an image for inspection only."),
        purgatory_from: Path | None = typer.Option(
            None, "--purgatory-from", metavar="BZIMAGE",
            help="x86_64: take the purgatory from this kernel."),
        mem: str | None = typer.Option(
            None, "--mem", metavar="RANGES", help="x86_64: RAM ranges START-LAST or "
            "START+SIZE, comma separated (default 1 MiB-4 GiB)."),
        exclude: str | None = typer.Option(
            None, "--exclude", metavar="RANGES", help="ppc64: memory the loading kernel keeps "
            "segments out of that its tree does not show, START-LAST or START+SIZE, comma "
            "separated: at least its own image, 0 to __pa(_end) (kexec_load refuses a segment "
            "below it). The tree is unchanged."),
        ima: Path | None = typer.Option(None, "--ima", metavar="LIST",
                                        help="IMA list for the hand-over."),
        ima_events: KexecEvents = typer.Option(
            KexecEvents.NONE, "--ima-events",
            help="Append the loading kernel's critical-data entries (6.15+, a policy measuring "
            "func=CRITICAL_DATA) to --ima: execute: kexec_execute (--ima is the list just "
            "before reboot); load+execute: kexec_load then kexec_execute (--ima is the list at "
            "load)."),
        ima_hash: ImaHash | None = typer.Option(
            None, "--ima-hash", help="IMA's hash for --ima-events (default: the loader "
            "config's CONFIG_IMA_DEFAULT_HASH, else sha1)."),
        handover: Path | None = typer.Option(None, "--handover", metavar="FILE",
                                             help="ppc64, arm64: raw hand-over bytes."),
        handover_size: str | None = typer.Option(
            None, "--handover-size", metavar="N",
            help="memsz of the hand-over (default: as IMA sizes it)."),
        handover_style: DtStyle = typer.Option(
            DtStyle.IMA, "--handover-style",
            help="ppc64, arm64, riscv64: how /chosen announces the hand-over. ima: "
            "linux,ima-kexec-buffer "
            "(upstream, 4.10 on); seed: linux,kexec-handover-buffer-start/-end (the 2016 "
            "\"kexec hand-over buffer\" series)."),
        policy: DigestPolicy | None = typer.Option(
            None, "--digest-policy", help="Which segments the digest leaves out (default: "
            "the named loader's, else seed)."),
        page_size: str | None = typer.Option(
            None, "--page-size", metavar="N",
            help=f"ppc64: target page size (default: the profile's, else "
            f"{ppc64_dt.PPC64_PAGE_SIZE}); arm64: the loading kernel's (default "
            f"{ARM64_PAGE_SIZE})."),
        hole_search: HoleSearch | None = typer.Option(
            None, "--hole-search",
            help="x86_64: the loading kernel's hole search (default: its profile's)."),
        ima_kexec: bool | None = typer.Option(
            None, "--ima-kexec/--no-ima-kexec",
            help="x86_64: the loading kernel has CONFIG_IMA_KEXEC (room for SETUP_IMA)."),
        force_dtb: Path | None = typer.Option(
            None, "--force-dtb", metavar="DTB", help="x86_64: carry this running-system tree "
            "(/sys/firmware/fdt) in SETUP_DTB, as the KEXEC_FILE_FORCE_DTB flag does (6.18+)."),
        five_level: bool = typer.Option(
            False, "--five-level-paging", help="x86_64: the loading kernel runs with 5-level "
            "paging (a kernel without XLF_5LEVEL is then refused)."),
        kho_fdt: str | None = typer.Option(
            None, "--kho-fdt", metavar="ADDR", help="x86_64: KHO is active in the loading "
            "kernel and its tree (kho_out.fdt, one page) is at this physical address; needs "
            "--kho-scratch."),
        kho_scratch: str | None = typer.Option(
            None, "--kho-scratch", metavar="RANGES|DIR|FILE", help="x86_64: the loading "
            "kernel's KHO scratch areas in its order: START+SIZE,... or a copy of "
            "/sys/kernel/debug/kho/out (scratch_phys, scratch_len) or the raw array."),
        loader_version: str | None = typer.Option(
            None, "--loader-version", metavar="VERSION",
            help="The kernel that performs the load (6.1, 6.12.117, 7.2, newest): its "
            "placement rules (default: --kernel's version)."),
        loader_config: Path | None = typer.Option(
            None, "--loader-config", metavar="CONFIG",
            help="That kernel's config (/boot/config-*): IMA_KEXEC, IMA_KEXEC_EXTRA_MEMORY_KB, "
            "KEXEC_HANDOVER, page size (default: a config beside --kernel)."),
        force: bool = typer.Option(False, "--force", help="Write a hand-over the next kernel "
                                   "would refuse."),
        require_signature: Path | None = typer.Option(
            None, "--require-signature", metavar="CERT|DIR", help="x86_64, arm64: refuse a kernel "
            "whose signature does not chain to this certificate (or a directory of them), as "
            "KEXEC_SIG_FORCE does."),
        svg: Path | None = typer.Option(None, "--svg", metavar="FILE", help="Also write the "
                                        "image's memory map as SVG ('-': stdout)."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable result."),
    ) -> None:
        """Place kernel, initrd, hand-over, device tree (and purgatory) as kexec_file_load does;
        seal, write atomically, re-read and verify.

        Prints the segments and the memory map (RAM, reservations, segments, free holes).

        Example: kimagekit build --arch ppc64le --kernel vmlinux --dtb system.dtb --ima
        binary_runtime_measurements -o kexec.img"""
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
                             require_signature=require_signature, ima_events=ima_events,
                             ima_hash=None if ima_hash is None else ima_hash.value)
        if ima_events != KexecEvents.NONE and ima is None:
            raise UsageError("--ima-events needs --ima")
        if arch == "x86_64":
            if no_purgatory:
                raise UsageError("--no-purgatory is a ppc64 option")
            if dtb_from != DtbFrom.FIRMWARE or crash:
                raise UsageError("--dtb-from and --crash are ppc64 options")
            if dtb is not None or handover is not None or exclude is not None:
                raise UsageError("x86_64 takes no --dtb, --handover or --exclude (the hand-over "
                                 "is --ima; the RAM is --mem)")
            size = _number(handover_size, "--handover-size")
            ram = parse_mem_ranges(mem) if mem else DEFAULT_RAM
            if (purgatory is None) == (purgatory_from is None):
                raise UsageError("x86_64 needs exactly one of --purgatory P and "
                                 "--purgatory-from KERNEL")
            kho = _kho(kho_fdt, kho_scratch)
            with Progress(f"building {output}"):  # decompressing, hashing: seconds
                built = build_x86_64(replace(inputs, handover_size=size),
                                     purgatory_from=purgatory_from, ram=ram,
                                     hole_search=hole_search, ima_kexec=x86_ima_kexec,
                                     profile=profile, force_dtb=force_dtb,
                                     five_level=five_level, kho=kho)
        elif arch in ("arm64", "riscv64") and (kho_fdt is not None or kho_scratch is not None
                                               or exclude is not None):
            raise UsageError("--kho-fdt and --kho-scratch are x86_64 options, --exclude a ppc64 "
                             "one")
        elif arch == "arm64":
            if crash:
                raise UsageError("--crash is a ppc64 option (arm64 crash loads are not modelled)")
            if dtb_from != DtbFrom.FIRMWARE:
                raise UsageError("--dtb-from is a ppc64 option (arm64 edits only /chosen)")
            built = _arm64(inputs, dtb=dtb, no_purgatory=no_purgatory,
                           x86_only=(purgatory_from, mem, force_dtb, hole_search),
                           five_level=five_level, ima_kexec=ima_kexec, page_size=page_size,
                           handover_size=handover_size, handover_style=handover_style,
                           profile=profile)
        elif arch == "riscv64":
            if dtb_from != DtbFrom.FIRMWARE or crash:
                raise UsageError("--dtb-from and --crash are ppc64 options")
            built = _build_riscv64(inputs, dtb, no_purgatory, purgatory_from, mem, force_dtb,
                                   five_level, hole_search, ima_kexec, page_size, handover_size,
                                   handover_style, profile, output)
        else:
            assert arch.value in PPC_ARCHES  # the choice's other values
            if dtb is None or purgatory_from is not None or mem is not None:
                raise UsageError("ppc64 needs --dtb and takes no --purgatory-from or --mem")
            if force_dtb is not None or five_level or kho_fdt is not None or \
                    kho_scratch is not None:
                raise UsageError("--force-dtb, --five-level-paging, --kho-fdt and --kho-scratch "
                                 "are x86_64 options")
            if hole_search is not None or ima_kexec is False:
                # powerpc has its own exclude-list search, the same in 6.1 and upstream; and
                # no setup_data room to size (--ima-kexec only overrides a profile's refusal)
                raise UsageError("--hole-search and --no-ima-kexec are x86_64 options")
            if ima is not None and handover is not None:
                raise UsageError("--ima and --handover exclude each other")
            page = (_number(page_size, "--page-size") or profile.ppc_page_size
                    or ppc64_dt.PPC64_PAGE_SIZE)
            why = check_page_size(page)
            if why is not None:
                raise UsageError(f"--page-size {why}")
            size = _number(handover_size, "--handover-size")
            if size is not None and ima is None and handover is None:
                raise UsageError("--handover-size needs --ima or --handover")
            with Progress(f"building {output}"):
                built = build_ppc64(replace(inputs, handover_size=size),
                                    arch=arch.value, dtb=dtb,
                                    handover_style=HandoverStyle(handover_style.value),
                                    page_size=page, profile=profile,
                                    no_purgatory=no_purgatory,
                                    running_tree=dtb_from == DtbFrom.RUNNING,
                                    crash=_crash_inputs(crash, crashkernel, crash_mem,
                                                        crash_notes, crash_notes_size,
                                                        vmcoreinfo, crash_hotplug),
                                    exclude=parse_mem_ranges(exclude, "--exclude")
                                    if exclude else ())
        if isinstance(built.result, X86BuildResult | Arm64BuildResult) \
                and built.result.signature_warning:
            warn(f"warning: {built.result.signature_warning}")
        for w in built.warnings:
            warn(f"warning: {output}: {w}")
        memory = file_map(built.result.output)
        if svg is not None:
            write_svg(svg, memory, (kernel, dtb, initrd, purgatory, ima, handover))
        if as_json:
            emit_json(built)
            return
        for line in [*ls_lines(built.image), "", *map_lines(memory)]:
            out(line)
        out(_summary_line(built))
        if isinstance(built.result, Arm64BuildResult):
            for note in built.result.notes:
                out(f"note: {note}")


def _arm64(inputs: BuildInputs, *, dtb: Path | None, no_purgatory: bool,
           x86_only: tuple[object, ...], five_level: bool, ima_kexec: bool | None,
           page_size: str | None, handover_size: str | None, handover_style: DtStyle,
           profile: LoaderProfile) -> Built:
    if dtb is None:
        raise UsageError("arm64 needs --dtb (the running system's tree)")
    if inputs.purgatory is not None or no_purgatory:
        raise UsageError("arm64 loads no purgatory: --purgatory and --no-purgatory are not "
                         "taken")
    if any(x is not None for x in x86_only) or five_level or ima_kexec is False:
        raise UsageError("--purgatory-from, --mem, --force-dtb, --hole-search, "
                         "--five-level-paging and --no-ima-kexec are x86_64 options")
    if inputs.ima is not None and inputs.handover is not None:
        raise UsageError("--ima and --handover exclude each other")
    page = _number(page_size, "--page-size") or ARM64_PAGE_SIZE
    why = check_page_size(page)
    if why is not None:
        raise UsageError(f"--page-size {why}")
    size = _number(handover_size, "--handover-size")
    if size is not None and inputs.ima is None and inputs.handover is None:
        raise UsageError("--handover-size needs --ima or --handover")
    with Progress(f"building {inputs.output}"):
        return build_arm64(replace(inputs, handover_size=size), dtb=dtb,
                           handover_style=HandoverStyle(handover_style.value), page_size=page,
                           profile=profile)


def _build_riscv64(inputs: BuildInputs, dtb: Path | None, no_purgatory: bool,
                   purgatory_from: Path | None, mem: str | None, force_dtb: Path | None,
                   five_level: bool, hole_search: HoleSearch | None, ima_kexec: bool | None,
                   page_size: str | None, handover_size: str | None, style: DtStyle,
                   profile: LoaderProfile, output: Path) -> Built:
    if dtb is None or inputs.purgatory is None:
        raise UsageError("riscv64 needs --dtb and --purgatory (the kernel always loads one)")
    others = {"--no-purgatory": no_purgatory, "--purgatory-from": purgatory_from is not None,
              "--mem": mem is not None, "--force-dtb": force_dtb is not None,
              "--five-level-paging": five_level, "--hole-search": hole_search is not None,
              "--no-ima-kexec": ima_kexec is False, "--page-size": page_size is not None,
              "--handover": inputs.handover is not None}
    given = [name for name, on in others.items() if on]
    if given:
        raise UsageError(f"riscv64 takes no {', '.join(given)}")
    size = _number(handover_size, "--handover-size")
    if size is not None and inputs.ima is None:
        raise UsageError("--handover-size needs --ima")
    with Progress(f"building {output}"):
        return build_riscv64(replace(inputs, handover_size=size), dtb=dtb,
                             handover_style=HandoverStyle(style.value), profile=profile)


def _crash_inputs(crash: bool, crashkernel: str | None, mem: str | None, notes: str | None,
                  notes_size: str | None, vmcoreinfo: str | None, hotplug: bool
                  ) -> CrashInputs | None:
    """The running system's crash facts from the options; all of them or none."""
    given = {"--crashkernel": crashkernel, "--crash-mem": mem, "--crash-notes": notes,
             "--crash-notes-size": notes_size, "--vmcoreinfo": vmcoreinfo}
    if not crash:
        extra = [k for k, v in given.items() if v is not None] + (["--crash-hotplug"]
                                                                   if hotplug else [])
        if extra:
            raise UsageError(f"{', '.join(extra)} need --crash")
        return None
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise UsageError(f"--crash needs {', '.join(missing)}: the running system's crash "
                         "facts cannot be known offline")
    assert crashkernel and mem and notes and notes_size and vmcoreinfo
    vm = [_number(v, "--vmcoreinfo") or 0 for v in vmcoreinfo.split(",")]
    if len(vm) != 2:
        raise UsageError(f"--vmcoreinfo {vmcoreinfo!r}: not ADDR,SIZE")
    return CrashInputs(
        parse_crashkernel(crashkernel), tuple((r.start, r.size) for r in parse_mem_ranges(mem)),
        tuple(_number(a, "--crash-notes") or 0 for a in notes.split(",")),
        _number(notes_size, "--crash-notes-size") or 0, (vm[0], vm[1]), hotplug)


def _kho(fdt: str | None, scratch: str | None) -> KhoLoad | None:
    if fdt is None and scratch is None:
        return None
    if fdt is None or scratch is None:
        raise UsageError("an active KHO needs both --kho-fdt and --kho-scratch")
    try:
        addr = int(fdt, 0)
    except ValueError:
        raise UsageError(f"not an address: {fdt!r}", fmt="--kho-fdt") from None
    return KhoLoad(addr, read_scratch(scratch))


def _summary_line(built: Built) -> str:
    r = built.result
    if isinstance(r, Arm64BuildResult):
        return (f"{r.output}: entry {r.entry:#x} (the kernel; no purgatory), device tree "
                f"{r.dtb:#x} (x0), digest {r.digest} (kimagekit's: nothing checks it at "
                "reboot), verified")
    if isinstance(r, Riscv64BuildResult):
        return (f"{r.output}: entry {r.entry:#x} (purgatory), kernel entry {r.kernel_entry:#x}, "
                f"device tree {r.dtb:#x}, digest {r.digest} ({r.policy} policy), verified")
    if isinstance(r, X86BuildResult):
        return (f"{r.output}: entry {r.entry:#x} (purgatory), kernel entry {r.kernel_entry:#x}, "
                f"boot_params {r.boot_params:#x}, digest {r.digest} ({r.policy} policy), "
                "verified")
    return f"{r.output}: entry {r.entry:#x}, digest {r.digest} ({r.policy} policy), verified"
