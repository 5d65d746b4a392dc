"""The ppc64 purgatory as current kernels treat it: no relocations applied (any RELA section into a
loaded section refused), filled by ``setup_purgatory_ppc64``, and always required."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from image_helpers import gen, ppc_gen

from kimagekit.arch.ppc64 import build
from kimagekit.arch.ppc64_dt import opal_from_tree
from kimagekit.arch.ppc64_purgatory import PurgatoryArgs, setup_purgatory
from kimagekit.cli import main
from kimagekit.dtb_file import load_tree
from kimagekit.errors import RuleError, UsageError
from kimagekit.formats import elf
from kimagekit.image import read_image, verify, write_image
from kimagekit.purgatory import RELOCATIONS, LoadedPurgatory, load, parse_purgatory
from kimagekit.segments import MemRange, Role, Target

M = 0x2000_0000
DATA = 0x180  # .data's buffer offset: after the 0x180-byte .text
SLAVE = bytes(range(256))  # stands for the kernel's first 0x100 bytes
ARGS = PurgatoryArgs(kernel=0x1230000, dt_offset=0x3FF0000)


def loaded(little: bool = True, **kw: object) -> LoadedPurgatory:
    return load(parse_purgatory(ppc_gen.make_ppc64_purgatory(little=little, **kw)), M)


def slot(lp: LoadedPurgatory, off: int, size: int = 8) -> bytes:
    return lp.buffer[DATA + off:DATA + off + size]


# --- 1. no relocations ------------------------------------------------------------------------

def test_no_ppc64_relocation_table() -> None:
    """include/linux/kexec.h: without arch_kexec_apply_relocations_add (powerpc has none) the
    stub fails every RELA section kexec_apply_relocations (kernel/kexec_file.c) hands it."""
    assert elf.EM_PPC64 not in RELOCATIONS
    assert set(RELOCATIONS) == {elf.EM_X86_64, 243}  # 243: EM_RISCV


def test_rela_section_refused_naming_section_and_offset() -> None:
    obj = parse_purgatory(ppc_gen.make_ppc64_purgatory(rela=True))
    with pytest.raises(RuleError) as e:
        load(obj, M)
    assert str(e.value) == (
        "purgatory: section[2](.rela.text) at offset 0x1c0: .rela.text holds relocations for "
        ".text, but the ppc64 kernel applies none (RELA relocation unsupported): a kexec_file "
        "purgatory for it must need no relocations")


def test_rela_for_an_unloaded_section_is_skipped_as_the_kernel_skips_it() -> None:
    """kexec_apply_relocations: ``if (!(section->sh_flags & SHF_ALLOC)) continue;``."""
    data = bytearray(ppc_gen.make_ppc64_purgatory(rela=True))
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    struct.pack_into("<I", data, shoff + 2 * 64 + 44, 4)  # .rela.text's sh_info -> .symtab
    lp = load(parse_purgatory(bytes(data)), M)
    assert lp.buffer[:0x180] == ppc_gen.text_bytes()  # nothing applied


def test_cli_build_refuses_a_relocatable_purgatory(ppc_vmlinux: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    purg = tmp_path / "rela.o"
    purg.write_bytes(ppc_gen.make_ppc64_purgatory(rela=True))
    assert main(["build", "--arch", "ppc64le", "--kernel", str(ppc_vmlinux), "--dtb",
                 str(SMALL_DTB), "--purgatory", str(purg), "-o", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {purg}: purgatory: section[2](.rela.text) at offset 0x1c0: "
        ".rela.text holds relocations for .text, but the ppc64 kernel applies none (RELA "
        "relocation unsupported): a kexec_file purgatory for it must need no relocations\n")
    assert not (tmp_path / "o").exists()


# --- 2. setup_purgatory_ppc64 -----------------------------------------------------------------

@pytest.mark.parametrize("little", [True, False])
def test_slave_code_kernel_and_dt_offset(little: bool) -> None:
    """arch/powerpc/kexec/file_load.c setup_purgatory: purgatory_start gets SLAVE_CODE_SIZE
    bytes of the kernel with its own first word (master_entry = slave_code_buf[0]) put back,
    then ``kernel`` and ``dt_offset``; setup_purgatory_ppc64 (file_load_64.c) then writes
    ``backup_start`` (image->arch.backup_start: 0 for a normal load)."""
    lp = setup_purgatory(loaded(little), SLAVE, ARGS)
    first = struct.pack("<I" if little else ">I", ppc_gen.FIRST_WORD)
    assert lp.buffer[:0x100] == first + SLAVE[4:]
    assert lp.buffer[0x100:0x180] == ppc_gen.text_bytes(little)[0x100:]
    order = "little" if little else "big"
    assert slot(lp, 0x00) == (0x1230000).to_bytes(8, order)
    assert slot(lp, 0x08) == (0x3FF0000).to_bytes(8, order)
    assert slot(lp, 0x10) == bytes(8)
    # no /ibm,opal: opal_base and opal_entry untouched; the digest slots are seal's
    assert slot(lp, 0x18, 16) == b"\xee" * 16


def test_run_at_load_only_for_crash_loads() -> None:
    """setup_purgatory_ppc64: ``if (image->type == KEXEC_TYPE_CRASH)`` run_at_load = 1 (a u32),
    after the slave code was copied over it: a normal load keeps the kernel's word at 0x5c."""
    normal = setup_purgatory(loaded(), SLAVE, ARGS)
    assert normal.buffer[0x5C:0x60] == bytes([0x5C, 0x5D, 0x5E, 0x5F])
    crash = setup_purgatory(loaded(), SLAVE, PurgatoryArgs(1, 2, backup_start=0x7000,
                                                             crash=True))
    assert crash.buffer[0x5C:0x60] == b"\x01\0\0\0"
    assert slot(crash, 0x10) == (0x7000).to_bytes(8, "little")
    be = setup_purgatory(loaded(False), SLAVE, PurgatoryArgs(1, 2, crash=True))
    assert be.buffer[0x5C:0x60] == b"\0\0\0\x01"


@pytest.mark.parametrize("little", [True, False])
def test_opal_base_and_entry(little: bool) -> None:
    """setup_purgatory_ppc64: of_find_node_by_path("/ibm,opal"), then opal_base and opal_entry
    from opal-base-address / opal-entry-address (of_property_read_u64)."""
    lp = setup_purgatory(loaded(little), SLAVE, PurgatoryArgs(1, 2, opal=(0x30000000,
                                                                          0x300038C0)))
    order = "little" if little else "big"
    assert slot(lp, 0x18) == (0x30000000).to_bytes(8, order)
    assert slot(lp, 0x20) == (0x300038C0).to_bytes(8, order)


def test_symbol_rules() -> None:
    """kexec_purgatory_get_set_symbol: the symbol must exist and be exactly the size written."""
    with pytest.raises(RuleError) as e:
        setup_purgatory(loaded(sizes={"kernel": 4}), SLAVE, ARGS)
    assert str(e.value) == ("purgatory: kernel: symbol 'kernel' is 4 bytes, not the 8 to set")
    with pytest.raises(RuleError) as e:
        setup_purgatory(loaded(omit=("opal_entry",)), SLAVE, PurgatoryArgs(1, 2, opal=(3, 4)))
    assert str(e.value) == "purgatory: opal_entry: no global symbol 'opal_entry'"
    # the kernel looks opal_* up only with /ibm,opal present
    setup_purgatory(loaded(omit=("opal_entry", "opal_base")), SLAVE, ARGS)
    with pytest.raises(RuleError) as e:
        setup_purgatory(loaded(), SLAVE[:0x80], ARGS)
    assert str(e.value) == ("vmlinux: phdr[0]: the kernel's first program header holds 128 "
                            "bytes, fewer than the 256 copied into purgatory_start")


def test_opal_from_the_running_tree(corpus: Path) -> None:
    """QEMU's powernv dump has /ibm,opal without the addresses skiboot adds: since 6.12 (the
    of_property_read_u64 checks in setup_purgatory_ppc64) the kernel fails the load."""
    tree = load_tree(corpus / "dtb" / "qemu-7.2-ppc64-powernv.dtb")
    with pytest.raises(RuleError) as e:
        opal_from_tree(tree)
    assert str(e.value) == ("dtb: /ibm,opal/opal-base-address: /ibm,opal/opal-base-address is "
                            "missing: the kernel cannot set the purgatory's opal_base and "
                            "refuses the load")
    tree.set("/ibm,opal", "opal-base-address", (0x30000000).to_bytes(8, "big"))
    tree.set("/ibm,opal", "opal-entry-address", (0x300038C0).to_bytes(8, "big"))
    assert opal_from_tree(tree) == (0x30000000, 0x300038C0)
    assert opal_from_tree(load_tree(corpus / "dtb" / "qemu-7.2-ppc64-pseries.dtb")) is None


def test_build_fills_the_purgatory_last(tmp_path: Path) -> None:
    """elf64_load (arch/powerpc/kexec/elf_64.c): setup_purgatory_ppc64 runs after the tree is
    placed, with kexec_elf_load's lowest load address and the tree's address; the slave code is
    the file at the first program header's p_offset."""
    t = Target("ppc64le", page_size=0x10000, ram=(MemRange(0, 1 << 30),))
    kernel = gen.make_vmlinux()
    obj = parse_purgatory(ppc_gen.make_ppc64_purgatory())
    img = build(t, kernel, b"DTBDTB", lambda req: req.dtb + bytes(10), purgatory=obj,
                opal=(0x30000000, 0x300038C0))
    p = tmp_path / "ppc.img"
    write_image(p, img)
    info = read_image(p.read_bytes())
    assert [s.role for s in info.segments] == [Role.KERNEL, Role.PURGATORY, Role.DTB]
    kern, purg, dtb = info.segments
    body = p.read_bytes()[purg.offset:purg.offset + purg.bufsz]
    assert body[:0x100] == body[:4] + kernel[0x10004:0x10100]
    assert body[:4] == struct.pack("<I", ppc_gen.FIRST_WORD)
    data = body[DATA:DATA + 0x28]
    assert struct.unpack("<5Q", data) == (kern.mem, dtb.mem, 0, 0x30000000, 0x300038C0)
    assert info.entry == purg.mem and verify(p).ok


# --- 3. a purgatory is required ---------------------------------------------------------------

def test_library_build_without_purgatory_is_refused() -> None:
    t = Target("ppc64le", page_size=0x10000, ram=(MemRange(0, 1 << 30),))
    with pytest.raises(UsageError) as e:
        build(t, gen.make_vmlinux(), b"D", lambda req: req.dtb)
    assert str(e.value) == (
        "ppc64 needs --purgatory: the kernel always loads one (the ELF loader enters the "
        "purgatory, never the kernel); --no-purgatory builds an image for inspection only")


@pytest.mark.parametrize(("extra", "message"), [
    ([], "ppc64 needs --purgatory: the kernel always loads one (the ELF loader enters the "
         "purgatory, never the kernel); --no-purgatory builds an image for inspection only"),
    (["--no-purgatory", "--purgatory", "{purg}"],
     "--no-purgatory and --purgatory exclude each other"),
])
def test_cli_purgatory_required(ppc_vmlinux: Path, tmp_path: Path, extra: list[str],
                                message: str, capsys: pytest.CaptureFixture[str]) -> None:
    purg = tmp_path / "p.o"
    purg.write_bytes(ppc_gen.make_ppc64_purgatory())
    args = [a.replace("{purg}", str(purg)) for a in extra]
    assert main(["build", "--arch", "ppc64le", "--kernel", str(ppc_vmlinux), "--dtb",
                 str(SMALL_DTB), *args, "-o", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"kimagekit: error: {message}\n"
    assert not (tmp_path / "o").exists()


def test_cli_no_purgatory_is_x86_foreign(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    k = tmp_path / "bz"
    k.write_bytes(b"x")
    assert main(["build", "--arch", "x86_64", "--kernel", str(k), "--no-purgatory",
                 "--purgatory", str(k), "-o", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == "kimagekit: error: --no-purgatory is a ppc64 option\n"


SMALL_DTB = Path(__file__).resolve().parent.parent / "testdata" / "dtb" / "small.dtb"


@pytest.fixture
def ppc_vmlinux(tmp_path: Path) -> Path:
    p = tmp_path / "vmlinux"
    p.write_bytes(gen.make_vmlinux())
    return p


# --- 3 and 4: what verify, inspect and ls say -------------------------------------------------

NO_CHECK = ("note: the ppc64 purgatory does not check the digest at reboot: the digest is "
            "kimagekit's check, not the machine's")
INSPECTION = ("note: no purgatory (built with --no-purgatory): for inspection only; the ppc64 "
              "kernel always loads a purgatory and enters it, never the kernel")


def _built(tmp_path: Path, vmlinux: Path, purgatory: bool,
           capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / ("p.img" if purgatory else "n.img")
    if purgatory:
        (tmp_path / "p.o").write_bytes(ppc_gen.make_ppc64_purgatory())
    extra = ["--purgatory", str(tmp_path / "p.o")] if purgatory else ["--no-purgatory"]
    assert main(["build", "--arch", "ppc64le", "--kernel", str(vmlinux), "--dtb", str(SMALL_DTB),
                 *extra, "-o", str(out)]) == 0
    capsys.readouterr()
    return out


@pytest.mark.parametrize("purgatory", [True, False])
def test_verify_says_the_machine_does_not_check(ppc_vmlinux: Path, tmp_path: Path,
                                                purgatory: bool,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    img = _built(tmp_path, ppc_vmlinux, purgatory, capsys)
    digest = verify(img).digest.hex()
    assert main(["verify", str(img)]) == 0
    notes = [NO_CHECK] if purgatory else [INSPECTION, NO_CHECK]
    assert capsys.readouterr().out == "".join(f"{x}\n" for x in [f"ok {digest}", *notes])
    # a failing image says it too, after the FAILED lines
    data = bytearray(img.read_bytes())
    kern = read_image(bytes(data)).segment(Role.KERNEL)
    assert kern is not None
    data[kern.offset] ^= 1
    img.write_bytes(bytes(data))
    assert main(["verify", str(img)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("FAILED: ") and lines[1:] == notes


@pytest.mark.parametrize("purgatory", [True, False])
def test_inspect_says_it(ppc_vmlinux: Path, tmp_path: Path, purgatory: bool,
                         capsys: pytest.CaptureFixture[str]) -> None:
    img = _built(tmp_path, ppc_vmlinux, purgatory, capsys)
    assert main(["inspect", str(img)]) == 0
    lines = [ln.strip() for ln in capsys.readouterr().out.splitlines()]
    at = next(i for i, ln in enumerate(lines) if ln.startswith("digest "))
    assert lines[at] == f"digest {verify(img).digest.hex()}: ok"
    notes = [NO_CHECK] if purgatory else [INSPECTION, NO_CHECK]
    assert lines[at + 1:at + 1 + len(notes)] == notes
    assert sum(ln.startswith("note: ") for ln in lines) == len(notes)
    assert main(["inspect", "--json", str(img)]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["notes"] == notes


@pytest.mark.parametrize("purgatory", [True, False])
def test_ls_says_inspection_only(ppc_vmlinux: Path, tmp_path: Path, purgatory: bool,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    img = _built(tmp_path, ppc_vmlinux, purgatory, capsys)
    assert main(["ls", str(img)]) == 0
    table = capsys.readouterr().out.split("\n\n")[0].splitlines()
    info = read_image(img.read_bytes())
    rows = [f"{s.index:>2} {s.role.value:<11} {s.mem:#18x} {s.memsz:#10x} {s.bufsz:#10x} "
            f"{'yes' if s.checksummed else 'no':<3} {s.offset:#10x}" for s in info.segments]
    head = f"{'#':>2} {'role':<11} {'mem':>18} {'memsz':>10} {'bufsz':>10} sum {'offset':>10}"
    assert table == [head, *rows, *([] if purgatory else [INSPECTION])]


def test_x86_images_carry_no_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "x.img"
    write_image(p, gen.x86_like_image())
    assert main(["verify", str(p)]) == 0
    assert capsys.readouterr().out == f"ok {verify(p).digest.hex()}\n"


# --- the real Debian ppc64el vmlinux and QEMU trees ---------------------------------------------

def test_debian_vmlinux_slave_code_and_addresses(ppc64le_vmlinux: Path, corpus: Path,
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """elf64_load: slave_code = elf_info.buffer + elf_info.proghdrs[0].p_offset (Debian's first
    program header is its PT_LOAD at file offset 0x10000); setup_purgatory keeps
    slave_code_buf[0] (master_entry), sets kernel and dt_offset; pseries has no /ibm,opal."""
    purg = tmp_path / "p.o"
    purg.write_bytes(ppc_gen.make_ppc64_purgatory())
    out = tmp_path / "deb.img"
    assert main(["build", "--arch", "ppc64le", "--kernel", str(ppc64le_vmlinux), "--dtb",
                 str(corpus / "dtb" / "qemu-7.2-ppc64-pseries.dtb"), "--purgatory", str(purg),
                 "--cmdline", "console=hvc0", "-o", str(out)]) == 0
    capsys.readouterr()
    data = out.read_bytes()
    info = read_image(data)
    kern, purg_seg, dtb = (info.segment(r) for r in (Role.KERNEL, Role.PURGATORY, Role.DTB))
    assert kern is not None and purg_seg is not None and dtb is not None
    body = data[purg_seg.offset:purg_seg.offset + purg_seg.bufsz]
    with ppc64le_vmlinux.open("rb") as f:
        f.seek(0x10000)
        head = f.read(0x100)
    assert body[:0x100] == struct.pack("<I", ppc_gen.FIRST_WORD) + head[4:]
    assert struct.unpack("<5Q", body[DATA:DATA + 0x28]) == (kern.mem, dtb.mem, 0, *[
        int.from_bytes(b"\xee" * 8, "little")] * 2)
    # the note records the symbols where they landed
    for name, off in (("kernel", 0), ("dt_offset", 8)):
        sym = info.symbol(name)
        assert sym is not None and (sym.value, sym.size) == (purg_seg.mem + DATA + off, 8)
    assert info.entry == purg_seg.mem and verify(out).ok


def test_powernv_tree_opal(corpus: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """setup_purgatory_ppc64 on PowerNV: QEMU's dump lacks the OPAL addresses (refused, exit 2);
    with them the purgatory's opal_base/opal_entry hold them."""
    vmlinux, purg = tmp_path / "vmlinux", tmp_path / "p.o"
    vmlinux.write_bytes(gen.make_vmlinux())
    purg.write_bytes(ppc_gen.make_ppc64_purgatory())
    dtb = corpus / "dtb" / "qemu-7.2-ppc64-powernv.dtb"
    base = ["build", "--arch", "ppc64le", "--kernel", str(vmlinux), "--purgatory", str(purg),
            "-o", str(tmp_path / "o.img"), "--dtb"]
    assert main([*base, str(dtb)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {dtb}: dtb: /ibm,opal/opal-base-address: "
        "/ibm,opal/opal-base-address is missing: the kernel cannot set the purgatory's "
        "opal_base and refuses the load\n")
    tree = load_tree(dtb)
    tree.set("/ibm,opal", "opal-base-address", (0x30000000).to_bytes(8, "big"))
    tree.set("/ibm,opal", "opal-entry-address", (0x300038C0).to_bytes(8, "big"))
    fixed = tmp_path / "pnv.dtb"
    fixed.write_bytes(tree.build())
    assert main([*base, str(fixed)]) == 0
    capsys.readouterr()
    data = (tmp_path / "o.img").read_bytes()
    seg = read_image(data).segment(Role.PURGATORY)
    assert seg is not None
    at = seg.offset + DATA + 0x18
    assert struct.unpack("<2Q", data[at:at + 16]) == (0x30000000, 0x300038C0)
