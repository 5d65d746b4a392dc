"""The x86_64 half of ``kimagekit build``: a bzImage placed as ``kexec_file_load`` places it,
the purgatory given or taken from a kernel, the IMA hand-over announced by setup_data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kimagekit import ima_kexec, ima_log, kernels
from kimagekit.arch import x86_64
from kimagekit.cli.common import emit_json, input_named, out
from kimagekit.errors import KimageError, UsageError, about_file
from kimagekit.fileio import mapped
from kimagekit.image import read_image, write_image
from kimagekit.purgatory import DigestPolicy, PurgatoryObject, parse_purgatory
from kimagekit.segments import DEFAULT_RAM, Target, parse_mem_ranges


@dataclass(frozen=True)
class X86BuildResult:
    output: str
    arch: str
    policy: str
    entry: int
    kernel_entry: int
    boot_params: int
    digest: str
    handover_entries: int | None


def _purgatory(purgatory: Path | None, purgatory_from: Path | None) -> PurgatoryObject:
    if (purgatory is None) == (purgatory_from is None):
        raise UsageError("x86_64 needs exactly one of --purgatory P and --purgatory-from KERNEL")
    if purgatory is not None:
        with input_named(purgatory):
            return parse_purgatory(purgatory.read_bytes())
    assert purgatory_from is not None
    with input_named(purgatory_from), mapped(purgatory_from) as view:
        return parse_purgatory(kernels.find_purgatory(view).data)


def build_x86(*, kernel: Path, output: Path, initrd: Path | None, cmdline: str,
              purgatory: Path | None, purgatory_from: Path | None, ima: Path | None,
              handover_size: int | None, mem: str | None, policy: DigestPolicy,
              as_json: bool) -> None:
    ram = parse_mem_ranges(mem) if mem else DEFAULT_RAM
    target = Target("x86_64", 4096, ram)
    purg = _purgatory(purgatory, purgatory_from)
    ho, entries = None, None
    if ima is not None:
        with input_named(ima):
            listed = ima_log.read_entries(ima)
        ho, entries = ima_kexec.build_buffer(listed, endian="<"), len(listed)
        need = ima_kexec.segment_size(len(ho), page_size=target.page_size)
        if handover_size is not None and handover_size < len(ho):
            raise UsageError(f"--handover-size {handover_size} is smaller than the hand-over "
                             f"buffer ({len(ho)} bytes)")
        handover_size = handover_size or need
    elif handover_size is not None:
        raise UsageError("--handover-size needs --ima")
    rd = None if initrd is None else initrd.read_bytes()
    with mapped(kernel) as view:
        try:
            img = x86_64.build(target, view, purg, initrd=rd, cmdline=cmdline, handover=ho,
                               handover_size=handover_size, policy=policy)
        except KimageError as err:
            if err.fmt in (x86_64.FMT, "pe", "vmlinux"):
                raise about_file(err, kernel) from err.__cause__
            raise
        res = write_image(output, img)
        del img  # its kernel segment is a view into the bzImage's map
    with mapped(output) as written:
        info = read_image(written)
    from kimagekit.cli.image import ls_lines
    from kimagekit.segments import Role

    k, bp = info.segment(Role.KERNEL), info.segment(Role.BOOT_PARAMS)
    assert k is not None and bp is not None
    result = X86BuildResult(str(output), "x86_64", policy.value, info.entry, k.mem + 0x200,
                            bp.mem, res.digest.hex(), entries)
    if as_json:
        emit_json({"result": result, "image": info})
        return
    for line in ls_lines(info):
        out(line)
    out(f"{output}: entry {info.entry:#x} (purgatory), kernel entry {result.kernel_entry:#x}, "
        f"boot_params {bp.mem:#x}, digest {res.digest.hex()} ({policy} policy), verified")
