"""``kimagekit verify|ls|extract`` and ``inspect`` on images: golden output and exit codes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from image_helpers import gen

from kimagekit.cli import main
from kimagekit.image import read_image, write_image
from kimagekit.segments import Role


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "x.img"
    write_image(p, gen.x86_like_image())
    return p


# (role, mem, memsz, bufsz, checksummed, file offset): the table test_ls_golden pins
LAYOUT = [("purgatory", 0x7FFFE000, 0x2000, 0x1000, False, 0x1000),
          ("boot-params", 0x7FFFC000, 0x2000, 0x1800, True, 0x2000),
          ("kernel", 0x1000000, 0xC000, 0x6000, True, 0x4000),
          ("initrd", 0x7FFF7000, 0x5000, 0x5000, True, 0xA000),
          ("handover", 0x7FFF3000, 0x4000, 0x3B4, False, 0xF000)]


# PCR 10 replayed from the 8 restorable entries of testdata/ima/small-le.bin (the default
# hand-over of gen.x86_like_image)
PCR10_SHA1 = "53a0939b63230a270291efb8df695ffcceb6bdc2"
PCR10_SHA256 = "9f2a0bb6e0360e765c27ccf35821cf51b8d350942ae82725d7bca5256b2e2975"


def _padded(data: bytes, offset: int, bufsz: int, memsz: int) -> bytes:
    return data[offset:offset + bufsz] + bytes(memsz - bufsz)


def _purgatory_digest(data: bytes) -> str:
    """The purgatory's SHA-256, recomputed from the file's bytes: the checksummed segments in
    order, each content then zeros up to memsz."""
    h = hashlib.sha256()
    for _role, _mem, memsz, bufsz, summed, offset in LAYOUT:
        if summed:
            h.update(_padded(data, offset, bufsz, memsz))
    return h.hexdigest()


def test_verify_ok(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(image)]) == 0
    assert capsys.readouterr().out == f"ok {_purgatory_digest(image.read_bytes())}\n"


def test_verify_fails_naming_segment(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(image.read_bytes())
    k = read_image(data).segment(Role.KERNEL)
    assert k is not None
    data[k.offset] ^= 0x80
    image.write_bytes(data)
    assert main(["verify", str(image)]) == 1
    assert capsys.readouterr().out == (
        "FAILED: segment 2 (kernel, region 1 at 0x1000000) differs from what was sealed\n")


def test_verify_bad_input_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "short"
    p.write_bytes(b"\x7fELF")
    assert main(["verify", str(p)]) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: {p}: image: ehdr at offset 0x0: file is 4 bytes, shorter than an "
        "ELF64 header (64)\n")


def test_ls_golden(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", str(image)]) == 0
    assert capsys.readouterr().out == (
        " # role                       mem      memsz      bufsz sum     offset\n"
        " 0 purgatory           0x7fffe000     0x2000     0x1000 no      0x1000\n"
        " 1 boot-params         0x7fffc000     0x2000     0x1800 yes     0x2000\n"
        " 2 kernel               0x1000000     0xc000     0x6000 yes     0x4000\n"
        " 3 initrd              0x7fff7000     0x5000     0x5000 yes     0xa000\n"
        " 4 handover            0x7fff3000     0x4000      0x3b4 no      0xf000\n"
        "\n" + "".join(f"{line}\n" for line in MAP_LINES))


# The memory map of gen.x86_like_image: its boot_params segment is filler, so no RAM
MAP_LINES = [
    "memory map (RAM and reservations: the boot_params segment's e820 table cannot be read: "
    "e820 entry 0 (0x645d564f48413a33+0x9c958e878079726b) runs past 2^64):",
    "  0x1000000 |K" + " " * 59 + "HIBP| 0x80000000",
    "  B boot_params, H hand-over, I initrd, K kernel, P purgatory; one column 31.75 MiB",
    "  range                                             size  kind     label",
    "  [0x1000000, 0x100c000)                          48 KiB  segment  kernel #2",
    "  [0x7fff3000, 0x7fff7000)                        16 KiB  segment  hand-over #4",
    "  [0x7fff7000, 0x7fffc000)                        20 KiB  segment  initrd #3",
    "  [0x7fffc000, 0x7fffe000)                         8 KiB  segment  boot_params #1",
    "  [0x7fffe000, 0x80000000)                         8 KiB  segment  purgatory #0"]


def test_ls_json(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", str(image), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    data = image.read_bytes()
    # sha256: as recorded in the note at write time, over the content padded to memsz
    assert doc["segments"] == [
        {"index": i, "role": role, "mem": mem, "memsz": memsz, "bufsz": bufsz,
         "checksummed": summed, "offset": offset,
         "sha256": hashlib.sha256(_padded(data, offset, bufsz, memsz)).hexdigest(),
         "bufsz_at_load": bufsz}
        for i, (role, mem, memsz, bufsz, summed, offset) in enumerate(LAYOUT)]
    assert doc["regions"] == [[mem, memsz] for _, mem, memsz, _, summed, _ in LAYOUT if summed]
    assert doc["digest"] == _purgatory_digest(data)
    assert {k: doc[k] for k in ("arch", "machine", "little", "page_size", "entry", "policy",
                                "handover_style", "has_purgatory", "cmdline", "file_size")} == {
        "arch": "x86_64", "machine": 62, "little": True, "page_size": 4096,
        "entry": 0x7FFFE010, "policy": "seed", "handover_style": "none", "has_purgatory": True,
        "cmdline": "console=ttyS0 root=/dev/vda", "file_size": len(data)}
    memory = doc["memory_map"]
    assert (memory["ram"], memory["reserved"], memory["free"]) == ([], [], [])
    assert memory["segments"][0] == {"kind": "segment", "start": 0x7FFFE000,
                                     "end": 0x80000000, "label": "purgatory #0"}


def test_extract(image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rd"
    assert main(["extract", str(image), "initrd", "-o", str(out)]) == 0
    assert out.read_bytes() == gen.filler(0x5000, 3)
    assert capsys.readouterr().out == f"segment 3 (initrd): 20480 bytes -> {out}\n"
    assert main(["extract", str(image), "9", "-o", str(out)]) == 2
    assert capsys.readouterr().err == (f"kimagekit: error: {image}: image: segment: segment 9 "
                                       "does not exist (the image has 5)\n")
    assert out.read_bytes() == gen.filler(0x5000, 3)  # the refused extract left it alone


def test_inspect_reports_handover_damage(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The hand-over header's version 1 -> 3: the digest (which leaves the hand-over out) holds,
    # but the next kernel refuses the list, so verify and inspect both fail (exit 1).
    data = bytearray(image.read_bytes())
    ho = read_image(data).segment(Role.HANDOVER)
    assert ho is not None
    data[ho.offset] ^= 2
    image.write_bytes(data)
    refusal = ("ima-kexec-buffer: header.version at offset 0x0: version 3 is not 1: "
               "incompatible measurement list")
    assert main(["verify", str(image)]) == 1
    assert capsys.readouterr().out == (
        f"FAILED: hand-over segment 4: the next kernel would refuse it: {refusal}\n")
    assert main(["inspect", str(image)]) == 1
    text = capsys.readouterr().out
    # sha256 here: of each segment as it lies in memory now (content, then zeros to memsz)
    now = [hashlib.sha256(_padded(bytes(data), o, b, m)).hexdigest()
           for _, _, m, b, _, o in LAYOUT]
    assert text == (
        f"{image}: kexec image\n"
        "  arch x86_64, entry 0x7fffe010, digest policy seed, purgatory yes\n"
        "  cmdline 'console=ttyS0 root=/dev/vda'\n"
        "  segments:\n"
        f"     0 purgatory   mem 0x7fffe000 memsz 0x2000 bufsz 0x1000 not checksummed sha256 "
        f"{now[0]}\n"
        f"     1 boot-params mem 0x7fffc000 memsz 0x2000 bufsz 0x1800 checksummed sha256 "
        f"{now[1]}\n"
        f"     2 kernel      mem 0x1000000 memsz 0xc000 bufsz 0x6000 checksummed sha256 "
        f"{now[2]}\n"
        f"     3 initrd      mem 0x7fff7000 memsz 0x5000 bufsz 0x5000 checksummed sha256 "
        f"{now[3]}\n"
        f"     4 handover    mem 0x7fff3000 memsz 0x4000 bufsz 0x3b4 not checksummed sha256 "
        f"{now[4]} (changed since written)\n"
        "  regions: 0x7fffc000+0x2000, 0x1000000+0xc000, 0x7fff7000+0x5000\n"
        f"  digest {_purgatory_digest(data)}: ok\n"
        "  hand-over: 0x7fff3000 size 0x4000 used 0x3b4 style none (content changed since "
        "written)\n"
        "    IMA unknown: 8 entries, restore FAILED\n"
        f"    PCR 10 sha1 {PCR10_SHA1}\n"
        f"    PCR 10 sha256 {PCR10_SHA256}\n"
        f"    DAMAGE: the next kernel would refuse it: {refusal}\n"
        + "".join(f"  {line}\n" for line in MAP_LINES))
    assert main(["inspect", "--json", str(image)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "kexec image"
    s = doc["summary"]
    assert [(g["sha256"], g["unchanged"]) for g in s["segments"]] == [
        (h, i != 4) for i, h in enumerate(now)]
    assert (s["digest"], s["digest_ok"], s["digest_status"]) == (_purgatory_digest(data), True,
                                                                  "ok")
    assert {k: v for k, v in s["handover"].items() if k != "ima"} == {
        "address": 0x7FFF3000, "size": 0x4000, "used": 0x3B4, "style": "none",
        "unchanged": False, "announced": None}
    assert s["handover"]["ima"]["damage"] == [f"the next kernel would refuse it: {refusal}"]
    assert s["damage"] == [f"hand-over segment 4: the next kernel would refuse it: {refusal}"]
