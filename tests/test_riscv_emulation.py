"""The proof by the kernel's own code: the riscv64 purgatory that 7.2.13 builds
(``scripts/build_purgatory.py riscv64``: defconfig + KEXEC_FILE, Debian's cross compiler),
relocated and filled by ``build --arch riscv64``, run under unicorn from its entry with the
segments at their physical addresses. An accepted image reaches ``riscv_kernel_entry`` with the
hart id in a0 and the tree in a1; a flipped byte in a hashed segment leaves it spinning in
``purgatory()``. Then objdump and readelf, reading the object and the image independently of
kimagekit, check that every relocated instruction and word is what the kernel would write.

Debian's own riscv64 kernel (sid's ``vmlinuz``, a flat Image: ``scripts/fetch_riscv_kernel.py``)
goes through the Image loader and the purgatory too. Cost: a synthetic 4 MiB kernel segment hashes
in about 0.5 s under emulation, Debian's 37 MB one in 8 to 17 s.
"""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import need_module, need_tool
from image_helpers import gen, riscv_gen
from realkernel_harness import built_purgatory, riscv64_kernel

from kimagekit import ima_kexec
from kimagekit.arch.riscv64 import KERNEL_ENTRY_SYMBOL
from kimagekit.cli import main
from kimagekit.image import content, open_image
from kimagekit.purgatory import load, parse_purgatory
from kimagekit.segments import Role

DTS = riscv_gen.VIRT_DTS
KERNEL_START = 0x8000_0000  # the first 2 MiB hole: RAM's start


@pytest.fixture(scope="module")
def purgatory() -> Path:
    return built_purgatory("riscv64")


@pytest.fixture(scope="module")
def image(purgatory: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("riscv")
    (d / "vmlinux").write_bytes(riscv_gen.make_riscv_vmlinux(0x300000))
    (d / "t.dts").write_text(DTS)
    (d / "initrd").write_bytes(bytes((i * 7) & 0xFF for i in range(64 << 10)))
    out = d / "full.img"
    assert main(["build", "--arch", "riscv64", "--kernel", str(d / "vmlinux"), "--dtb",
                 str(d / "t.dts"), "--purgatory", str(purgatory), "--initrd", str(d / "initrd"),
                 "--cmdline", "console=ttyS0 ro", "--ima",
                 str(gen.restorable_list(d / "ima.bin")), "--loader-version", "7.2",
                 "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def debian_vmlinuz() -> Path:
    return riscv64_kernel()


def run_image(path: Path) -> Any:
    """riscv_emu.run_image; unicorn is required under CI, as tools are."""
    need_module("unicorn")
    from riscv_emu import run_image as run

    return run(path)


def test_purgatory_accepts_and_enters_the_kernel(image: Path) -> None:
    with open_image(image) as (info, _):
        dt = info.segment(Role.DTB)
        assert dt is not None
        roles = [s.role.value for s in info.segments]
    run = run_image(image)
    assert run.outcome == "kernel-entry", run
    assert (run.pc, run.a0, run.a1) == (KERNEL_START, 3, dt.mem)
    assert run.fdt == dt.mem and run.kernel_entry == KERNEL_START
    assert roles == ["handover", "kernel", "purgatory", "initrd", "dtb"]
    print(f"{run.hashed_bytes} bytes hashed in {run.seconds:.1f} s")


def test_debians_image_through_the_real_purgatory(debian_vmlinuz: Path, purgatory: Path,
                                                   tmp_path: Path) -> None:
    """Debian's vmlinuz (EFI stub + RISC-V Image header 0.2) through image_kexec_ops: loaded
    whole at the first text_offset-aligned hole with memsz image_size; the purgatory hashes it
    and enters it there."""
    head = debian_vmlinuz.read_bytes()[:64]
    text_offset, image_size = struct.unpack_from("<QQ", head, 8)
    assert head[0x30:0x3C] == b"RISCV\0\0\0RSC\x05" and text_offset == 0x200000
    (tmp_path / "t.dts").write_text(DTS)
    out = tmp_path / "debian.img"
    assert main(["build", "--arch", "riscv64", "--kernel", str(debian_vmlinuz), "--dtb",
                 str(tmp_path / "t.dts"), "--purgatory", str(purgatory), "--cmdline",
                 "console=ttyS0", "--loader-version", "7.2", "-o", str(out)]) == 0
    with open_image(out) as (info, _):
        k, dt = info.segment(Role.KERNEL), info.segment(Role.DTB)
        assert k is not None and dt is not None
    assert (k.mem, k.memsz, k.bufsz) == (KERNEL_START, -(-image_size // 4096) * 4096,
                                         debian_vmlinuz.stat().st_size)
    run = run_image(out)
    assert run.outcome == "kernel-entry", run
    assert (run.pc, run.a0, run.a1) == (KERNEL_START, 3, dt.mem)
    print(f"Debian's Image: {run.hashed_bytes} bytes hashed in {run.seconds:.1f} s")


@pytest.mark.parametrize("role", [Role.KERNEL, Role.INITRD, Role.DTB])
def test_one_flipped_byte_makes_the_purgatory_spin(image: Path, tmp_path: Path,
                                                   role: Role) -> None:
    with open_image(image) as (info, _):
        s = info.segment(role)
        fn = info.symbol("purgatory")
        assert s is not None and s.checksummed and fn is not None
        at = s.offset + s.bufsz // 2
    data = bytearray(image.read_bytes())
    data[at] ^= 0x01
    bad = tmp_path / "bad.img"
    bad.write_bytes(bytes(data))
    run = run_image(bad)
    assert run.outcome == "spin", run
    assert fn.value <= run.pc < fn.value + fn.size


def _readelf(tool: str, *args: str) -> str:
    return subprocess.run([tool, "-W", *args], check=True, capture_output=True,
                          text=True).stdout


_RELA = re.compile(r"^([0-9a-f]{16})\s+[0-9a-f]{16}\s+(R_RISCV_\w+)\s+([0-9a-f]{16})?\s*(.*?)"
                   r"\s*([+-]\s*[0-9a-f]+)?$")


def _relocations(tool: str, obj: Path) -> dict[str, list[tuple[int, str, int | None, int]]]:
    """readelf -r: per relocation section, (offset, type, symbol value, addend)."""
    out: dict[str, list[tuple[int, str, int | None, int]]] = {}
    sec = ""
    for line in _readelf(tool, "-r", str(obj)).splitlines():
        m = re.match(r"Relocation section '(\S+)'", line)
        if m:
            sec = m[1]
            out[sec] = []
            continue
        r = _RELA.match(line.strip())
        if r:
            addend = int(r[5].replace(" ", ""), 16) if r[5] else 0
            out[sec].append((int(r[1], 16), r[2], int(r[3], 16) if r[3] else None, addend))
    return out


def test_objdump_reads_the_targets_the_kernel_would_write(image: Path, purgatory: Path) -> None:
    """Every PC-relative relocation of the real purgatory's .text, read back from the image by
    objdump: a branch, jump or call lands on its symbol + addend (all symbols are .text-local
    or in sections loaded at kimagekit's layout, checked through the loaded sh_addr), an
    auipc pair on its target; readelf gives the relocations, objdump decodes the words."""
    objdump = need_tool("riscv64-linux-gnu-objdump")
    readelf = need_tool("readelf")
    obj = parse_purgatory(purgatory.read_bytes())
    with open_image(image) as (info, view):
        p = info.segment(Role.PURGATORY)
        assert p is not None
        seg = bytes(content(view, p))
    lp = load(obj, p.mem)  # where each section went (the layout rule is tested elsewhere)
    text = next(s for s in obj.sections if s.name == ".text")
    base = lp.sh_addr[text.index]
    dump = Path(str(image) + ".text.bin")
    dump.write_bytes(seg[lp.buf_offset[text.index]:][:text.sh_size])
    lines = subprocess.run([objdump, "-D", "-b", "binary", "-m", "riscv:rv64",
                            f"--adjust-vma={base:#x}", str(dump)], check=True,
                           capture_output=True, text=True).stdout.splitlines()
    insn = {}
    for line in lines:
        m = re.match(r"\s*([0-9a-f]+):\s+[0-9a-f]+\s+(\S+)\s*(.*)$", line)
        if m:
            insn[int(m[1], 16)] = (m[2], m[3])
    secs = {s.name: lp.sh_addr[s.index] for s in obj.sections}
    sym_sec = _symbol_sections(readelf, purgatory)
    checked = 0
    for off, rtype, value, addend in _relocations(readelf, purgatory)[".rela.text"]:
        if rtype in ("R_RISCV_RELAX", "R_RISCV_ALIGN", "R_RISCV_PCREL_LO12_I"):
            continue
        assert value is not None
        name = sym_sec[(off, rtype)]
        want = secs[name] + value + addend
        at = base + off
        mnemonic, args = insn[at] if rtype not in ("R_RISCV_CALL", "R_RISCV_CALL_PLT",
                                                   "R_RISCV_PCREL_HI20") else insn[at + 4]
        got = int(re.findall(r"(?:0x)?([0-9a-f]+)(?:\s*<[^>]*>)?$", args)[-1], 16)
        assert got == want, (hex(off), rtype, mnemonic, args, hex(want))
        checked += 1
    assert checked == 110 + 36 + 24 + 16 + 68 + 41  # readelf's counts of those types
    entry = info.symbol(KERNEL_ENTRY_SYMBOL)
    assert entry is not None
    at = entry.value - p.mem
    assert struct.unpack_from("<Q", seg, at)[0] == KERNEL_START


def _symbol_sections(readelf: str, obj: Path, all_sections: bool = False
                     ) -> dict[Any, str]:
    """The section each relocation's symbol lives in, by readelf's symbol table: keyed by
    (offset, type) for .rela.text, or (section, offset, type) for all."""
    shnames = {}
    for line in _readelf(readelf, "-S", str(obj)).splitlines():
        m = re.match(r"\s*\[\s*(\d+)\]\s+(\S+)", line)
        if m:
            shnames[m[1]] = m[2]
    syms = {}
    for line in _readelf(readelf, "-s", str(obj)).splitlines():
        f = line.split()
        if len(f) >= 7 and f[0].endswith(":") and f[6].isdigit():
            syms[int(f[0][:-1])] = shnames[f[6]]
    out: dict[Any, str] = {}
    sec = ""
    for line in _readelf(readelf, "-r", str(obj)).splitlines():
        m = re.match(r"Relocation section '(\S+)'", line)
        sec = m[1] if m else sec
        f = line.split()
        if len(f) >= 3 and f[2].startswith("R_RISCV") and len(f[0]) == 16:
            where = syms.get(int(f[1], 16) >> 32, "")
            if all_sections:
                out[(sec, int(f[0], 16), f[2])] = where
            elif sec == ".rela.text":
                out[(int(f[0], 16), f[2])] = where
    return out


def test_data_relocations_hold_what_the_kernel_writes(image: Path, purgatory: Path) -> None:
    """R_RISCV_64 and the ADD/SUB pairs of the real purgatory's data sections (.alternative,
    .export_symbol, __bug_table), from readelf's relocations and the object's own bytes:
    ``*(u64 *)loc = val``, ``*(uN *)loc += val`` / ``-= val`` (machine_kexec_file.c lines
    236-255)."""
    readelf = need_tool("readelf")
    obj = parse_purgatory(purgatory.read_bytes())
    raw = purgatory.read_bytes()
    with open_image(image) as (info, view):
        p = info.segment(Role.PURGATORY)
        assert p is not None
        seg = bytes(content(view, p))
    lp = load(obj, p.mem)
    secs = {s.name: s for s in obj.sections}
    addr = {s.name: lp.sh_addr[s.index] for s in obj.sections}
    sym_sec = _symbol_sections(readelf, purgatory, all_sections=True)
    width = {"R_RISCV_64": 8, "R_RISCV_ADD16": 2, "R_RISCV_SUB16": 2, "R_RISCV_ADD32": 4,
             "R_RISCV_SUB32": 4}
    checked = 0
    for rsec, entries in _relocations(readelf, purgatory).items():
        if rsec == ".rela.text":
            continue
        target = secs[rsec.removeprefix(".rela")]
        want: dict[int, tuple[int, int]] = {}  # offset: (value, width)
        for off, rtype, value, addend in entries:
            n = width[rtype]
            assert value is not None
            val = addr[sym_sec[(rsec, off, rtype)]] + value + addend
            cur = want.get(off, (int.from_bytes(raw[target.sh_offset + off:][:n], "little"),
                                 n))[0]
            sign = -1 if "SUB" in rtype else 1
            want[off] = (val if rtype == "R_RISCV_64" else (cur + sign * val) % (1 << (8 * n)),
                         n)
            checked += 1
        for off, (v, n) in want.items():
            got = int.from_bytes(seg[lp.buf_offset[target.index] + off:][:n], "little")
            assert got == v, (rsec, hex(off))
    assert checked == 6 + 15 * 2 + 34 * 2  # R_RISCV_64, ADD/SUB16, ADD/SUB32


def test_patched_handover_still_passes(image: Path, tmp_path: Path) -> None:
    """Under 7.2's rules (upstream-6.15) the IMA segment is left out of the digest: a longer
    list patched in (as the reboot notifier fills it) leaves the purgatory content."""
    entries = gen.restorable_entries()
    longer = tmp_path / "new.kexec"
    longer.write_bytes(ima_kexec.build_buffer([*entries, *entries]))
    out = tmp_path / "patched.img"
    assert main(["patch-handover", str(image), "--data", str(longer), "-o", str(out)]) == 0
    with open_image(out) as (info, view):
        ho = info.segment(Role.HANDOVER)
        assert ho is not None and not ho.checksummed
        assert bytes(content(view, ho)) == longer.read_bytes()
    run = run_image(out)
    assert run.outcome == "kernel-entry", run
