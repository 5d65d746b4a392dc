"""Hand-overs the next kernel would refuse: ``build`` and ``patch-handover`` refuse to write them
(exit 1) unless ``--force``; ``verify`` and ``inspect`` judge them (exit 1); ``--continuation``
refuses an IMA list that does not carry on the image's hand-over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from image_helpers import PURGATORY_CORPUS, gen
from kernel_helpers import kgen

from kimagekit import ima_kexec, ima_log
from kimagekit.arch.build import BuildInputs, build_x86_64
from kimagekit.cli import main
from kimagekit.errors import Refused
from kimagekit.handover import patch, verify_image

ROOT = Path(__file__).resolve().parent.parent
SMALL_LE = ROOT / "testdata" / "ima" / "small-le.bin"  # its last entry: the `ima` template
SMALL_2016 = ROOT / "testdata" / "ima" / "small-2016.kexec"  # header-less, restorable
PSERIES = "dtb/qemu-7.2-ppc64-pseries.dtb"
# The `ima` template's data has no length prefix in a dumped list, so restore finds 3 fields.
IMA_ENTRY = ("the next kernel would refuse it: ima-kexec-buffer: entry[8] at offset 0x3b4: "
             "entry header: nr of fields mismatch: expected 4, found 3 (it keeps the 8 entries "
             "before it)")
FORCE = "nothing written (--force writes it anyway)"


# the synthetic bzImage has no PE header, so build warns as kexec with KEXEC_SIG would refuse it
UNSIGNED = "not signed (no PE header): a KEXEC_SIG_FORCE kernel refuses it"


@pytest.fixture
def x86(corpus: Path, tmp_path: Path) -> list[str]:
    """``build`` arguments for a synthetic bzImage with the Debian purgatory."""
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(kgen.make_bzimage())
    return ["build", "--arch", "x86_64", "--kernel", str(kernel), "--purgatory",
            str(corpus / PURGATORY_CORPUS)]


@pytest.fixture
def good(x86: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "good.img"
    assert main([*x86, "--ima", str(gen.restorable_list(tmp_path / "good.bin")), "-o",
                 str(out)]) == 0
    capsys.readouterr()
    return out


def _list(path: Path, entries: list[ima_log.ImaEntry]) -> Path:
    path.write_bytes(ima_log.encode_list(entries))
    return path


def test_build_refuses_an_ima_template_entry(x86: list[str], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.img"
    assert main([*x86, "--ima", str(SMALL_LE), "-o", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"kimagekit: error: {SMALL_LE}: handover: segment[0]: {IMA_ENTRY}; {FORCE}\n")
    assert not out.exists()
    assert main([*x86, "--ima", str(SMALL_LE), "-o", str(out), "--force"]) == 0
    assert capsys.readouterr().err == (
        f"kimagekit: warning: {x86[4]}: {UNSIGNED}\n"
        f"kimagekit: warning: {out}: written with --force: {IMA_ENTRY}\n")
    # The forced image keeps its verdict: the digest holds, the hand-over does not.
    assert main(["verify", str(out)]) == 1
    assert capsys.readouterr().out == f"FAILED: hand-over segment 0: {IMA_ENTRY}\n"
    assert main(["inspect", "--json", str(out)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["digest_ok"] is True
    assert doc["summary"]["damage"] == [f"hand-over segment 0: {IMA_ENTRY}"]
    assert main(["inspect", str(out)]) == 1
    assert f"    DAMAGE: {IMA_ENTRY}\n" in capsys.readouterr().out


def test_build_library_refuses(corpus: Path, tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(kgen.make_bzimage())
    inputs = BuildInputs(kernel, tmp_path / "x.img", ima=SMALL_LE,
                         purgatory=corpus / PURGATORY_CORPUS)
    with pytest.raises(Refused) as e:
        build_x86_64(inputs)
    assert (str(e.value), e.value.exit_code, e.value.file) == (
        f"handover: segment[0]: {IMA_ENTRY}; {FORCE}", 1, str(SMALL_LE))
    assert not (tmp_path / "x.img").exists()


def test_ppc64_handover_forms_by_style(corpus: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    # The 2016 series (seed) took the header-less list; upstream (ima) reads a header first.
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(gen.make_vmlinux())
    base = ["build", "--arch", "ppc64le", "--no-purgatory", "--kernel", str(vmlinux), "--dtb",
            str(corpus / PSERIES), "--handover-style", "seed", "--handover", str(SMALL_2016)]
    out = tmp_path / "s.img"
    assert main([*base, "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    assert capsys.readouterr().out.startswith("ok ")
    never = tmp_path / "never.img"
    assert main([*base, "--handover-style", "ima", "-o", str(never)]) == 1
    assert capsys.readouterr().err == (
        f"kimagekit: error: {SMALL_2016}: handover: segment[0]: the next kernel would refuse "
        "it: ima-kexec-buffer: header.version at offset 0x0: version 10 is not 1: incompatible "
        f"measurement list; {FORCE}\n")
    assert not never.exists()
    # A header-less list is held to the same entry rules, offsets in its own terms.
    assert main([*base[:-1], str(SMALL_LE), "-o", str(never)]) == 1
    assert capsys.readouterr().err == (
        f"kimagekit: error: {SMALL_LE}: handover: segment[0]: the next kernel would refuse it: "
        "ima-list: entry[8] at offset 0x39c: entry header: nr of fields mismatch: expected 4, "
        f"found 3 (it keeps the 8 entries before it); {FORCE}\n")
    # A header-less list must be in the target's byte order, with SHA-1 template digests.
    for name, kind in (("small-be.bin", "big-endian binary list with 20"),
                       ("small-le-sha256.bin", "little-endian binary list with 32")):
        lst = ROOT / "testdata" / "ima" / name
        assert main([*base[:-1], str(lst), "-o", str(never)]) == 1
        assert capsys.readouterr().err == (
            f"kimagekit: error: {lst}: handover: segment[0]: the next kernel would refuse it: a "
            f"{kind}-byte digests, where it reads little-endian binary entries with 20-byte "
            f"digests; {FORCE}\n")
    # Opaque bytes in the seed style: IMA is the buffer's only reader, and it refuses them.
    raw = tmp_path / "raw"
    raw.write_bytes(b"opaque" * 10)
    assert main([*base[:-1], str(raw), "-o", str(never)]) == 1
    assert capsys.readouterr().err == (
        f"kimagekit: error: {raw}: handover: segment[0]: the next kernel would refuse it: "
        "ima-kexec-buffer: header.version at offset 0x0: version 28783 is not 1: incompatible "
        f"measurement list; {FORCE}\n")


@pytest.mark.parametrize(("make", "why"), [
    (lambda: b"", "the hand-over is empty: the next kernel reads zeros where it expects a "
                  "measurement list (version 0) and takes nothing"),
    (lambda: _flip(ima_kexec.build_buffer(gen.restorable_entries()), 24 + 4),
     "1 template digest mismatch(es), first entry[0] at offset 0x18: stored "
     "00fb2f8a6d603fd73992768a0d7275c8adb81fda, computed "
     "01fb2f8a6d603fd73992768a0d7275c8adb81fda"),
])
def test_patch_data_refused(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            make: object, why: str) -> None:
    data = tmp_path / "data"
    data.write_bytes(make())  # type: ignore[operator]
    out = tmp_path / "p.img"
    assert main(["patch-handover", str(good), "--data", str(data), "-o", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"kimagekit: error: {good}: handover: segment[0]: {why}; {FORCE}\n")
    assert not out.exists()
    with pytest.raises(Refused) as e:
        patch(good, data.read_bytes(), out=out)
    assert str(e.value) == f"handover: segment[0]: {why}; {FORCE}"


def _flip(buf: bytes, at: int) -> bytes:
    return buf[:at] + bytes([buf[at] ^ 1]) + buf[at + 1:]


def test_continuation(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    e = gen.restorable_entries()
    other = _list(tmp_path / "other.bin", e[1:])
    short = _list(tmp_path / "short.bin", e[:3])
    longer = _list(tmp_path / "longer.bin", e + e[:2])
    out = tmp_path / "p.img"
    differs = ("the new list does not extend the image's hand-over: entry[0] differs (a list "
               "from another boot?)")
    assert main(["patch-handover", str(good), "--ima", str(other), "-o", str(out)]) == 0
    assert capsys.readouterr().err == f"kimagekit: warning: {good}: {differs}\n"
    out.unlink()
    for lst, why in ((other, differs),
                     (short, "the new list has 3 entries, fewer than the 8 of the image's "
                             "hand-over: it does not extend it")):
        assert main(["patch-handover", str(good), "--ima", str(lst), "-o", str(out),
                     "--continuation"]) == 1
        assert capsys.readouterr().err == (
            f"kimagekit: error: {good}: handover: segment[0]: {why}; nothing written "
            "(--continuation)\n")
        assert not out.exists()
    assert main(["patch-handover", str(good), "--ima", str(longer), "-o", str(out),
                 "--continuation", "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert (doc["extends"], doc["warnings"], doc["ima"]["entries"], captured.err) == (
        True, [], 10, "")
    assert main(["patch-handover", str(good), "--data", str(longer), "-o", str(out),
                 "--continuation"]) == 2
    assert capsys.readouterr().err == (
        "kimagekit: error: --continuation checks an --ima list against the old hand-over\n")


def test_verify_library_verdict(good: Path) -> None:
    v = verify_image(good)
    assert (v.ok, v.problems, v.digest.ok) == (True, (), True)
    assert v.handover is not None and v.handover.restored == 8


def test_patch_without_a_handover(x86: list[str], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain.img"
    assert main([*x86, "-o", str(plain)]) == 0
    data = tmp_path / "data"
    data.write_bytes(gen.handover_buffer())
    capsys.readouterr()
    out = tmp_path / "p.img"
    for extra in ([], ["--continuation"]):
        args = ["--ima", str(SMALL_LE)] if extra else ["--data", str(data)]
        assert main(["patch-handover", str(plain), *args, "-o", str(out), *extra]) == 2
        assert capsys.readouterr().err == (
            f"kimagekit: error: {plain}: image: segments: the image has no hand-over segment\n")
    assert not out.exists()


def test_restore_stopping_mid_list_keeps_the_entries_before_it_in_both_styles() -> None:
    # an `ima`-template entry third: ima_restore_measurement_list stops there and keeps two,
    # behind the kexec header (ima style) as in the header-less 2016 list (seed style)
    import struct

    from ima_helpers import make_ima

    from kimagekit.handover import decode_ima
    from kimagekit.image import HandoverStyle

    ok = make_ima.entry(10, "ima-ng", [make_ima.d_ng("sha1", bytes(20)), make_ima.n_ng("/a")])
    body = ok + ok + make_ima.entry(10, "ima", [bytes(20), b"/x"])
    with_header = struct.pack("<HHIQQ", 1, 0, 0, 24 + len(body), 3) + body
    for buf, style, fmt, at in ((with_header, HandoverStyle.IMA, "ima-kexec-buffer",
                                 24 + 2 * len(ok)),
                                (body, HandoverStyle.SEED, "ima-list", 2 * len(ok))):
        content = decode_ima(buf, True, style)
        assert content.restored == 2
        # the `ima` entry has no data length: its header walk stops short of the buffer's end,
        # where the last entry must end. The two sizes stay in the walked buffer's terms (behind
        # a 24-byte header) in both styles; the offset is the list's own
        assert content.restore_error == (
            f"{fmt}: entry[2] at offset {at:#x}: last entry (count 3) ends at 0xd1, "
            "buffer_size is 0xe7 (it keeps the 2 entries before it)")
