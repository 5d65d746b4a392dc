"""The kernel's own ppc64le purgatory (``arch/powerpc/purgatory/purgatory.ro`` of Debian's
linux-source 7.2, built by ``scripts/build_purgatory.py ppc64le`` with Debian's cross gcc) in a
``build --arch ppc64le`` image of Debian's ppc64el vmlinux, checked against what binutils reads
in the object.

What 7.2's purgatory.ro holds (``trampoline_64.S`` linked ``-r -e purgatory_start``): an
ELF64 LE REL for EM_PPC64 with ``.text`` (0x1f0 bytes, 256-aligned), ``.data`` (0x120 bytes:
the digest and regions room), an empty ``.bss``, ``.note.GNU-stack``, ``.symtab``, ``.strtab``
and ``.shstrtab``: no ``SHT_RELA``/``SHT_REL`` section at all, so the kernel's relocation step
(``kexec_apply_relocations``, ``kernel/kexec_file.c:1100``, which would hand a RELA section to
the ``-ENOEXEC`` stub of ``include/linux/kexec.h:288``) has nothing to refuse or apply.
``e_entry`` is 0: ``purgatory_start`` opens ``.text``, a ``b master`` over the 0x100 bytes that
``setup_purgatory`` (``arch/powerpc/kexec/file_load.c``) overwrites with the kernel's slave code.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import need_tool
from realkernel_harness import built_purgatory

from kimagekit.cli import main
from kimagekit.dtb_file import load_tree
from kimagekit.image import read_image, verify
from kimagekit.segments import Role

PREFIX = "powerpc64le-linux-gnu-"
PAGE = 0x10000  # Debian's ppc64el kernels: CONFIG_PPC_64K_PAGES
SLAVE_CODE_SIZE = 0x100
FILLED = {"kernel", "dt_offset", "backup_start", "opal_base", "opal_entry"}
OPAL = (0x30000000, 0x300038C0)


@pytest.fixture(scope="module")
def purgatory() -> Path:
    return built_purgatory("ppc64le")


def _tool(name: str, *args: str) -> str:
    return subprocess.run([need_tool(PREFIX + name), *args], check=True, capture_output=True,
                          text=True).stdout


def sections(obj: Path) -> list[tuple[str, str, int, int, str]]:
    """readelf -SW: (name, type, size, align, flags) per section, index order."""
    out = []
    for m in re.finditer(r"^\s*\[\s*\d+\]\s+(\S*)\s+(\S+)\s+[0-9a-f]{16}\s+[0-9a-f]+\s+"
                         r"([0-9a-f]+)\s+[0-9a-f]+\s+([A-Z]*)\s+\d+\s+\d+\s+(\d+)$",
                         _tool("readelf", "-SW", str(obj)), re.M):
        out.append((m[1], m[2], int(m[3], 16), int(m[5]), m[4]))
    return out


def symbols(obj: Path) -> dict[str, tuple[int, int, str]]:
    """readelf -sW: the global symbols as {name: (value, size, section index)}."""
    out = {}
    for m in re.finditer(r"^\s*\d+: ([0-9a-f]{16})\s+(\d+) \w+\s+GLOBAL \w+\s+(\d+) (\S+)$",
                         _tool("readelf", "-sW", str(obj)), re.M):
        out[m[4]] = (int(m[1], 16), int(m[2]), m[3])
    return out


def section_bytes(obj: Path, name: str, tmp: Path) -> bytes:
    """objcopy -O binary --only-section: the section's bytes as binutils reads them."""
    out = tmp / f"{name.strip('.')}.bin"
    _tool("objcopy", "-O", "binary", f"--only-section={name}", str(obj), str(out))
    return out.read_bytes()


def test_the_real_object_holds_no_relocations(purgatory: Path) -> None:
    secs = sections(purgatory)
    assert [(n, t) for n, t, *_ in secs] == [
        ("", "NULL"), (".text", "PROGBITS"), (".data", "PROGBITS"), (".bss", "NOBITS"),
        (".note.GNU-stack", "PROGBITS"), (".symtab", "SYMTAB"), (".strtab", "STRTAB"),
        (".shstrtab", "STRTAB")]
    assert not any(t in ("RELA", "REL") for _, t, *_ in secs)
    assert "There are no relocations in this file." in _tool("readelf", "-rW", str(purgatory))
    head = _tool("readelf", "-hW", str(purgatory))
    assert re.search(r"Type:\s+REL ", head) and re.search(r"Machine:\s+PowerPC64", head)
    assert re.search(r"Entry point address:\s+0x0$", head, re.M)
    syms = symbols(purgatory)
    sizes = {n: s for n, (_, s, _) in syms.items()}
    assert sizes == {"purgatory_start": 256, "run_at_load": 4, "kernel": 8, "dt_offset": 8,
                     "backup_start": 8, "opal_base": 8, "opal_entry": 8,
                     "purgatory_sha_regions": 256, "purgatory_sha256_digest": 32}
    # the first instruction branches over the slave code to the master path
    dis = _tool("objdump", "-d", str(purgatory))
    assert re.search(r"^\s+0:\s+00 01 00 48 \tb\s+100 <master>$", dis, re.M), dis[:600]


def _build(tmp_path: Path, vmlinux: Path, purgatory: Path, dtb: Path) -> tuple[Path, bytes]:
    out = tmp_path / "real.img"
    assert main(["build", "--arch", "ppc64le", "--kernel", str(vmlinux), "--dtb", str(dtb),
                 "--purgatory", str(purgatory), "--cmdline", "console=hvc0",
                 "-o", str(out)]) == 0
    return out, out.read_bytes()


def _layout(purgatory: Path) -> dict[str, int]:
    """Where kexec_purgatory_setup_sechdrs puts each SHF_ALLOC section with content: in index
    order, each at its sh_addralign (NOBITS after them)."""
    at, out = 0, {}
    for name, typ, size, align, flags in sections(purgatory):
        if "A" in flags and typ != "NOBITS":
            at = (at + align - 1) // align * align
            out[name] = at
            at += size
    return out


@pytest.mark.parametrize("tree", ["pseries", "powernv"])
def test_image_purgatory_segment_is_the_object_as_setup_purgatory_fills_it(
        purgatory: Path, ppc64le_vmlinux: Path, corpus: Path, tmp_path: Path, tree: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """setup_purgatory_ppc64 (arch/powerpc/kexec/file_load_64.c:501): purgatory_start gets the
    kernel's first SLAVE_CODE_SIZE bytes but its own first word (file_load.c:91-93,
    ``slave_code_buf[0] = master_entry``), then kernel and dt_offset (file_load.c:99-103);
    backup_start 0 for a normal load (file_load_64.c:529); opal_base/opal_entry from /ibm,opal
    on PowerNV only (file_load_64.c:545, 553). The generic code stores the regions and digest
    (kexec_calculate_store_digests). Every other byte is the object's: nothing relocated."""
    dtb = corpus / "dtb" / f"qemu-7.2-ppc64-{tree}.dtb"
    if tree == "powernv":  # QEMU's dump lacks what skiboot adds (refused without it)
        t = load_tree(dtb)
        t.set("/ibm,opal", "opal-base-address", OPAL[0].to_bytes(8, "big"))
        t.set("/ibm,opal", "opal-entry-address", OPAL[1].to_bytes(8, "big"))
        dtb = tmp_path / "pnv.dtb"
        dtb.write_bytes(t.build())
    img, data = _build(tmp_path, ppc64le_vmlinux, purgatory, dtb)
    capsys.readouterr()
    info = read_image(data)
    kern, purg, tree_seg = (info.segment(r) for r in (Role.KERNEL, Role.PURGATORY, Role.DTB))
    assert kern is not None and purg is not None and tree_seg is not None
    seg = data[purg.offset:purg.offset + purg.bufsz]
    lay = _layout(purgatory)
    text = section_bytes(purgatory, ".text", tmp_path)
    pdata = section_bytes(purgatory, ".data", tmp_path)
    assert lay == {".text": 0, ".data": len(text)}  # 0x1f0 is 8-aligned
    assert purg.bufsz == len(text) + len(pdata) and purg.memsz == PAGE
    syms = symbols(purgatory)
    addr = {n: lay[".text" if sec == "1" else ".data"] + v for n, (v, _, sec) in syms.items()}
    # the expected segment: the object's bytes with exactly the filled fields written
    want = bytearray(text + pdata)
    with ppc64le_vmlinux.open("rb") as f:
        f.seek(0x10000)  # Debian's first program header: its PT_LOAD at file offset 0x10000
        slave = f.read(SLAVE_CODE_SIZE)
    want[4:SLAVE_CODE_SIZE] = slave[4:]

    def put(name: str, value: bytes) -> None:
        want[addr[name]:addr[name] + len(value)] = value

    put("kernel", kern.mem.to_bytes(8, "little"))
    put("dt_offset", tree_seg.mem.to_bytes(8, "little"))
    put("backup_start", bytes(8))
    if tree == "powernv":
        put("opal_base", OPAL[0].to_bytes(8, "little"))
        put("opal_entry", OPAL[1].to_bytes(8, "little"))
    regions = b"".join(s.to_bytes(8, "little") + n.to_bytes(8, "little")
                       for s, n in info.regions)
    put("purgatory_sha_regions", regions.ljust(256, b"\0"))
    put("purgatory_sha256_digest", info.digest)
    assert seg == bytes(want)
    # the first word is still the object's branch to master, as objdump reads the segment
    raw = tmp_path / "seg.bin"
    raw.write_bytes(seg)
    dis = _tool("objdump", "-D", "-b", "binary", "-m", "powerpc:common64", "-EL",
                "--stop-address=0x4", str(raw))
    assert re.search(r"^\s+0:\s+00 01 00 48 \tb\s+0x100$", dis, re.M), dis
    # the note names each filled symbol where it landed; the entry is purgatory_start
    for name in (*FILLED, "purgatory_start"):
        sym = info.symbol(name)
        assert sym is not None and (sym.value, sym.size) == (purg.mem + addr[name],
                                                             syms[name][1])
    assert info.entry == purg.mem + addr["purgatory_start"] == purg.mem
    assert verify(img).ok
    assert main(["verify", str(img)]) == 0
    assert capsys.readouterr().out == (
        f"ok {info.digest.hex()}\nnote: the ppc64 purgatory does not check the digest at "
        "reboot: the digest is kimagekit's check, not the machine's\n")
