"""``kimagekit verify|ls|extract`` and ``inspect`` on images: golden output and exit codes."""

from __future__ import annotations

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


def test_verify_ok(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(image)]) == 0
    digest = read_image(image.read_bytes()).digest.hex()
    assert capsys.readouterr().out == f"ok {digest}\n"


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
        " 4 handover            0x7fff3000     0x4000      0x320 no      0xf000\n")


def test_ls_json(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", str(image), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["role"] for s in doc["segments"]] == ["purgatory", "boot-params", "kernel",
                                                    "initrd", "handover"]
    assert doc["policy"] == "seed" and doc["handover_style"] == "seed"


def test_extract(image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rd"
    assert main(["extract", str(image), "initrd", "-o", str(out)]) == 0
    assert out.read_bytes() == gen.filler(0x5000, 3)
    assert capsys.readouterr().out == f"segment 3 (initrd): 20480 bytes -> {out}\n"
    assert main(["extract", str(image), "9", "-o", str(out)]) == 2
    assert "segment 9 does not exist (the image has 5)" in capsys.readouterr().err


def test_inspect_reports_handover_damage(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(image.read_bytes())
    ho = read_image(data).segment(Role.HANDOVER)
    assert ho is not None
    data[ho.offset + 3] ^= 1
    image.write_bytes(data)
    assert main(["verify", str(image)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(image)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{image}: kexec image\n")
    assert ("  hand-over: 0x7fff3000 size 0x4000 used 0x320 style seed (content changed since "
            "written)\n") in text
    assert ": ok\n" in text
    assert main(["inspect", "--json", str(image)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "kexec image"
    assert doc["summary"]["handover"]["unchanged"] is False
    assert doc["summary"]["digest_ok"] is True
