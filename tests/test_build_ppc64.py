"""``kimagekit build`` on the real Debian ppc64le vmlinux and QEMU pseries device trees, checked
with readelf, dtc and fdtget, and the hand-over's IMA content replayed against the TPM's PCR 10."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import PPC_CMDLINE, PPC_IMA_LIST, need_tool, ppc_initrd_bytes
from image_helpers import PPC_NOTES

from kimagekit import ima_kexec, ima_log
from kimagekit.cli import main
from kimagekit.image import content, open_image, read_image
from kimagekit.segments import Role

DTB_4G = "dtb/qemu-7.2-ppc64-pseries-smp4-4G-maxmem8G-initrd.dtb"
DTB_512M = "dtb/qemu-7.2-ppc64-pseries.dtb"
PAGE = 0x10000  # Debian ppc64el: CONFIG_PPC_64K_PAGES=y (checked below)


def run(tool: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need_tool(tool), *map(str, args)], capture_output=True, text=True,
                          check=True)


def load_lines(path: Path) -> list[list[str]]:
    text = run("readelf", "-W", "-l", path).stdout
    return [ln.split() for ln in text.splitlines() if ln.strip().startswith("LOAD")]


def test_page_size_is_the_debian_kernels(ppc64le_vmlinux: Path) -> None:
    config = ppc64le_vmlinux.parent / "config-6.1.0-50-powerpc64le"
    lines = config.read_text().splitlines()
    assert "CONFIG_PPC_64K_PAGES=y" in lines and "CONFIG_PPC_4K_PAGES=y" not in lines


def test_readelf_lists_the_segments(ppc_seed_image: Path, ppc64le_vmlinux: Path,
                                    corpus: Path) -> None:
    # The vmlinux's own PT_LOAD, read by readelf, not by kimagekit.
    (kload,) = load_lines(ppc64le_vmlinux)
    k_filesz, k_memsz = int(kload[4], 16), int(kload[5], 16)
    assert (k_filesz, k_memsz) == (0x2714EA4, 0x287C918)
    ima_len = 24 + (corpus / PPC_IMA_LIST).stat().st_size  # ima_kexec_hdr + the sha1 list
    ho_memsz = -(-(ima_len + PAGE // 2) // PAGE) * PAGE
    assert ho_memsz == 0x20000
    # hand-over: top of RAM (4 GiB); kernel: bottom-up from paddr 0, past QEMU's reservations
    # (0x400000+0x287c918 and 0x2c90000+0xd) at the next 64K page; initrd: bottom-up from 0;
    # device tree: top-down under the hand-over.
    want = [
        ["0x010000", "0x00000000fffe0000", "0x00000000fffe0000", "0x00c0c8", "0x020000"],
        ["0x030000", "0x0000000002ca0000", "0x0000000002ca0000", "0x2714ea4", "0x2880000"],
        ["0x2750000", "0x0000000000000000", "0x0000000000000000", "0x030d40", "0x040000"],
        ["0x2790000", "0x00000000fffd0000", "0x00000000fffd0000", "0x0040ea", "0x010000"],
    ]
    got = load_lines(ppc_seed_image)
    assert [ln[1:6] for ln in got] == want
    assert all(ln[6:] == ["RWE", "0x10000"] for ln in got)
    assert ima_len == 0xC0C8 and 0xFFFE0000 + ho_memsz == 1 << 32
    text = run("readelf", "-W", "-h", ppc_seed_image).stdout
    assert re.search(r"Machine:\s+PowerPC64", text) and "Entry point address:" \
        "               0x2ca0000" in text


def test_verify_passes_and_digest_is_the_purgatorys(ppc_seed_image: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(ppc_seed_image)]) == 0
    data = ppc_seed_image.read_bytes()
    info = read_image(data)
    # Recomputed here: the hashed segments in order, content then zeros up to memsz.
    h = hashlib.sha256()
    for s in info.segments:
        if s.checksummed:
            h.update(data[s.offset:s.offset + s.bufsz] + bytes(s.memsz - s.bufsz))
    assert capsys.readouterr().out == f"ok {h.hexdigest()}\n" + PPC_NOTES
    assert [s.role for s in info.segments if not s.checksummed] == [Role.HANDOVER]


def test_segments_in_ram_aligned_disjoint(ppc_seed_image: Path, corpus: Path) -> None:
    cells = [int(x, 16) for x in run("fdtget", "-t", "x", corpus / DTB_4G, "/memory@0",
                                     "reg").stdout.split()]
    ram = ((cells[0] << 32 | cells[1]), (cells[2] << 32 | cells[3]))
    assert ram == (0, 1 << 32)
    with open_image(ppc_seed_image) as (info, _):
        segs = sorted((s.mem, s.mem + s.memsz) for s in info.segments)
        assert info.page_size == PAGE
    for start, end in segs:
        assert ram[0] <= start < end <= ram[0] + ram[1]
        assert start % PAGE == 0 and end % PAGE == 0
    for (_, end), (start, _) in itertools.pairwise(segs):
        assert end <= start
    # Nothing but the kernel's new home overlaps what QEMU reserved.
    for start, end in segs:
        for rs, rn in ((0x400000, 0x287C918), (0x2C90000, 0xD)):
            assert end <= rs or start >= rs + rn


def _extract(image: Path, role: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / role
    assert main(["extract", str(image), role, "-o", str(out)]) == 0
    capsys.readouterr()
    return out


def _dtc_warnings(path: Path) -> list[str]:
    r = run("dtc", "-I", "dtb", "-O", "dts", "-o", "/dev/null", path)
    return [ln.split(": ", 1)[1] for ln in r.stderr.splitlines()]


def _fdt_u64s(path: Path, node: str, prop: str) -> list[int]:
    cells = [int(x, 16) for x in run("fdtget", "-t", "x", path, node, prop).stdout.split()]
    return [cells[i] << 32 | cells[i + 1] for i in range(0, len(cells), 2)]


def test_embedded_dtb_seed_style(ppc_seed_image: Path, corpus: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    dtb = _extract(ppc_seed_image, "dtb", tmp_path, capsys)
    assert _dtc_warnings(dtb) == _dtc_warnings(corpus / DTB_4G)
    with open_image(ppc_seed_image) as (info, _):
        ho, rd = info.segment(Role.HANDOVER), info.segment(Role.INITRD)
    assert ho is not None and rd is not None
    start = _fdt_u64s(dtb, "/chosen", "linux,kexec-handover-buffer-start")
    end = _fdt_u64s(dtb, "/chosen", "linux,kexec-handover-buffer-end")
    assert (start, end) == ([ho.mem], [ho.mem + ho.memsz]) == ([0xFFFE0000], [1 << 32])
    assert _fdt_u64s(dtb, "/chosen", "linux,initrd-start") == [rd.mem]
    assert _fdt_u64s(dtb, "/chosen", "linux,initrd-end") == [rd.mem + len(ppc_initrd_bytes())]
    assert run("fdtget", dtb, "/chosen", "bootargs").stdout == PPC_CMDLINE + "\n"
    props = run("fdtget", "-p", dtb, "/chosen").stdout.split()
    assert "rng-seed" not in props  # consumed by the running kernel, never reused
    dts = run("dtc", "-I", "dtb", "-O", "dts", dtb).stdout
    assert re.findall(r"/memreserve/\t(\S+) (\S+);", dts) == [
        ("0x0000000000400000", "0x000000000287c918"),  # QEMU's, kept (the kernel keeps them)
        ("0x0000000000000000", "0x0000000000030d40"),  # the new initrd; the old one is gone
        ("0x00000000fffe0000", "0x0000000000020000"),  # the hand-over, exactly as announced
    ]


def test_embedded_dtb_ima_style(ppc_ima_image: Path, corpus: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    dtb = _extract(ppc_ima_image, "dtb", tmp_path, capsys)
    assert _dtc_warnings(dtb) == _dtc_warnings(corpus / DTB_512M)
    with open_image(ppc_ima_image) as (info, _):
        ho = info.segment(Role.HANDOVER)
        assert [s.role for s in info.segments] == [Role.HANDOVER, Role.KERNEL, Role.DTB]
        assert [(s.mem, s.memsz) for s in info.segments] == [
            (0x1FFE0000, 0x20000), (0, 0x2880000), (0x1FFD0000, 0x10000)]
        assert all(s.checksummed for s in info.segments)  # upstream-4.10 hashes the IMA buffer
    assert ho is not None
    assert _fdt_u64s(dtb, "/chosen", "linux,ima-kexec-buffer") == [ho.mem, ho.memsz]
    props = run("fdtget", "-p", dtb, "/chosen").stdout.split()
    assert "bootargs" not in props and "linux,initrd-start" not in props


def _known_pcr10(corpus: Path) -> dict[str, str]:
    text = (corpus / "ima/binary/ibmtss-imakvtpcr10.txt").read_text().splitlines()
    return {b: "".join(ln.split(":", 1)[1].split()) for b, ln in
            zip(("sha1", "sha256", "sha384", "sha512"), text, strict=True)}


def test_handover_replays_to_the_input_lists_pcr10(ppc_seed_image: Path, corpus: Path) -> None:
    banks = ("sha1", "sha256", "sha384", "sha512")
    with open_image(ppc_seed_image) as (info, view):
        ho = info.segment(Role.HANDOVER)
        assert ho is not None
        buf = bytes(content(view, ho))
    restored = ima_kexec.restore(buf)
    assert (restored.version, restored.count, len(restored.entries)) == (1, 362, 362)
    inside = ima_log.analyse(buf, banks=banks)
    given = ima_log.analyse((corpus / PPC_IMA_LIST).read_bytes(), banks=banks)
    assert inside.mismatches == [] and inside.entries == 362
    for b in banks:
        assert inside.pcrs[b][10] == given.pcrs[b][10]
        assert inside.pcrs[b][10].hex() == _known_pcr10(corpus)[b]


def test_inspect_shows_handover_and_chosen(ppc_seed_image: Path, corpus: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(ppc_seed_image)]) == 0
    lines = capsys.readouterr().out.splitlines()
    known = _known_pcr10(corpus)
    at = lines.index("  hand-over: 0xfffe0000 size 0x20000 used 0xc0c8 style seed")
    assert lines[at + 1:at + 5] == [
        "    announced (seed): 0xfffe0000 size 0x20000, reserved, matches the segment",
        "    IMA ima-kexec-buffer: 362 entries, restore ok",
        f"    PCR 10 sha1 {known['sha1']}",
        f"    PCR 10 sha256 {known['sha256']}",
    ]
    assert '  /chosen bootargs = "console=hvc0 root=/dev/vda"' in lines
    assert "  /chosen linux,kexec-handover-buffer-start = <0x00 0xfffe0000>" in lines


def test_build_refusals(ppc64le_vmlinux: Path, corpus: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    base = ["build", "--kernel", str(ppc64le_vmlinux), "--no-purgatory", "--dtb",
            str(corpus / DTB_512M), "-o", str(tmp_path / "x.img")]
    ima = str(corpus / PPC_IMA_LIST)
    cases = [
        (["--arch", "mips"], "Invalid value for '--arch': 'mips' is not one of 'ppc64le', "
         "'ppc64', 'x86_64', 'arm64', 'riscv64'. (see 'kimagekit build --help')"),
        (["--arch", "ppc64le", "--ima", ima, "--handover-size", "4096"],
         "--handover-size 4096 is smaller than the hand-over buffer (49352 bytes)"),
        (["--arch", "ppc64le", "--handover-size", "65536"],
         "--handover-size needs --ima or --handover"),
        (["--arch", "ppc64le", "--ima", ima, "--handover-style", "setup-data"],
         "Invalid value for '--handover-style': 'setup-data' is not one of 'ima', 'seed'. "
         "(see 'kimagekit build --help')"),
        (["--arch", "ppc64le", "--page-size", "12288"],
         "--page-size 0x3000 is not a supported page size (a power of two from 0x1000 to "
         "0x10000)"),
    ]
    for extra, msg in cases:
        assert main([*base, *extra]) == 2
        assert capsys.readouterr().err == f"kimagekit: error: {msg}\n"
    # A hand-over bigger than half of the 512 MiB guest's RAM is refused by the kernel's rule.
    big = tmp_path / "big"
    big.write_bytes(b"\0" * 16)
    assert main([*base, "--arch", "ppc64le", "--handover", str(big), "--handover-size",
                 str(0x10000000)]) == 2
    assert capsys.readouterr().err == ("kimagekit: error: kexec: segment[1]: segments take more "
                                       "than half of RAM (8192 pages)\n")
    fake = tmp_path / "vmlinux"
    fake.write_bytes(b"\x7fELF\x02\x01" + bytes(100))
    assert main([*base[:2], str(fake), *base[3:], "--arch", "ppc64le"]) == 2
    assert capsys.readouterr().err == (f"kimagekit: error: {fake}: vmlinux: e_machine at offset "
                                       "0x12: e_machine 0 is not 21\n")
    assert not (tmp_path / "x.img").exists()


def test_json_keys(ppc_seed_image: Path, ppc64le_vmlinux: Path, corpus: Path, tmp_path: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--json", str(ppc_seed_image)]) == 0
    s = json.loads(capsys.readouterr().out)["summary"]
    assert list(s) == ["arch", "entry", "policy", "cmdline", "purgatory", "segments", "regions",
                       "digest", "digest_ok", "digest_status", "handover", "chosen", "dtb_error",
                       "damage", "memory_map", "notes"]
    assert s["damage"] == []
    assert s["handover"]["announced"] == {"style": "seed", "start": 0xFFFE0000,
                                          "size": 0x20000, "reserved": True, "matches": True}
    assert list(s["handover"]["ima"]) == ["form", "entries", "restored", "restore_error",
                                          "digest_mismatches", "first_mismatch", "pcr10",
                                          "damage"]
    assert s["chosen"]["bootargs"] == '"console=hvc0 root=/dev/vda"'
    # A .dts input is compiled in memory, as every dtb command does.
    out = tmp_path / "dts.img"
    assert main(["build", "--arch", "ppc64le", "--no-purgatory",
                 "--kernel", str(ppc64le_vmlinux), "--dtb",
                 str(corpus / "dtb/qemu-7.2-ppc64-pseries.dts"), "--json", "-o", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["result"]) == ["output", "arch", "page_size", "policy", "entry", "digest",
                                   "handover_entries"]
    assert (doc["result"]["page_size"], doc["result"]["handover_entries"]) == (PAGE, None)
    assert [g["role"] for g in doc["image"]["segments"]] == ["kernel", "dtb"]
