"""The loading kernel's own IMA hand-over (save side), per loader profile: sizing, the half-RAM
refusal, the segment filled and hashed at load (4.10-6.14) or added empty and filled at
execute (6.15+), and what ``ls``/``inspect`` show of it. Each rule's kernel source line is in
its test's docstring (security/integrity/ima/ima_kexec.c, kernel/kexec_file.c)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from image_helpers import PURGATORY_CORPUS, gen
from kernel_helpers import kgen

from kimagekit import ima_kexec
from kimagekit.arch.build import BuildInputs, build_x86_64
from kimagekit.arch.common import add_ima_buffer
from kimagekit.cli import main
from kimagekit.errors import RuleError
from kimagekit.image import read_image
from kimagekit.loader_profile import LoaderProfile
from kimagekit.purgatory import DigestPolicy
from kimagekit.segments import MemRange, Role, SegmentList, Target

ENTRIES = gen.restorable_entries()
FULL = ima_kexec.build_buffer(ENTRIES)  # the list with its header


def test_extra_memory_of_zero_or_less_is_half_a_page() -> None:
    """ima_add_kexec_buffer (6.15+): ``if (CONFIG_IMA_KEXEC_EXTRA_MEMORY_KB <= 0) extra_memory =
    PAGE_SIZE / 2; else extra_memory = CONFIG_IMA_KEXEC_EXTRA_MEMORY_KB * 1024;`` then
    ``kexec_segment_size = ALIGN(binary_runtime_size, PAGE_SIZE);``"""
    assert len(FULL) == 948
    for extra in (None, 0, -5):
        assert ima_kexec.segment_size(len(FULL), extra=extra) == 4096
    assert ima_kexec.segment_size(2048, extra=0) == 4096
    assert ima_kexec.segment_size(2049, extra=-1) == 8192
    assert ima_kexec.segment_size(len(FULL), extra=3 * 1024) == 4096  # 948 + 3072 = 4020
    assert ima_kexec.segment_size(len(FULL), extra=4 * 1024) == 8192  # 948 + 4096
    assert ima_kexec.segment_size(len(FULL), page_size=65536, extra=0) == 65536


def test_profile_spare_room_by_version() -> None:
    """The option exists since 6.15 (``IMA_KEXEC_EXTRA_MEMORY_KB``); before, ``ALIGN(
    ima_get_binary_runtime_size() + PAGE_SIZE / 2, PAGE_SIZE)``."""
    assert LoaderProfile((6, 14, 0), "t", "c", ima_extra_memory_kb=64).ima_extra_memory is None
    assert LoaderProfile((6, 15, 0), "t", "c", ima_extra_memory_kb=64).ima_extra_memory == 65536
    assert LoaderProfile((6, 15, 0), "t", "c", ima_extra_memory_kb=0).ima_extra_memory is None


def test_more_pages_than_half_of_ram_is_refused() -> None:
    """ima_add_kexec_buffer: ``if ((kexec_segment_size == ULONG_MAX) || ((kexec_segment_size >>
    PAGE_SHIFT) > totalram_pages() / 2)) { pr_err("Binary measurement list too large.\\n");
    return; }`` -- no segment is added."""
    ima_kexec.check_segment_size(4 * 4096, 8 * 4096, 4096)  # exactly half: taken
    ima_kexec.check_segment_size(4 * 4096, 9 * 4096, 4096)  # 9 // 2 = 4 pages
    with pytest.raises(RuleError) as e:
        ima_kexec.check_segment_size(5 * 4096, 9 * 4096, 4096)
    assert str(e.value) == (
        "ima-kexec-buffer: segment.memsz: IMA segment of 0x5000 bytes (5 pages) is more than "
        "half of the 9 RAM pages: the loading kernel adds no hand-over (\"Binary measurement "
        "list too large\")")


def test_loader_refuses_over_half_of_ram_under_upstream_policies_only() -> None:
    """The check is in ima_add_kexec_buffer since 4.10; the 2016 series (``seed``) only
    refused ``kexec_segment_size >= (ULONG_MAX - sizeof(long))``."""
    target = Target("x86_64", 4096, (MemRange(0x100000, 8 * 4096),))
    sl = SegmentList(target)
    for policy in (DigestPolicy.UPSTREAM_4_10, DigestPolicy.UPSTREAM_6_15):
        _, seg = add_ima_buffer(sl, FULL, 4 * 4096, policy)
        assert seg == (0x100000 + 4 * 4096, 4 * 4096)
        with pytest.raises(RuleError, match=r"\(5 pages\) is more than half of the 8 RAM"):
            add_ima_buffer(sl, FULL, 5 * 4096, policy)
    _, seg = add_ima_buffer(sl, FULL, 5 * 4096, DigestPolicy.SEED)
    assert seg == (0x100000 + 3 * 4096, 5 * 4096)


def test_fill_at_execute_copies_what_fits() -> None:
    """ima_dump_measurement_list (6.15+): ``if (ima_kexec_file.count < ima_kexec_file.size) {
    khdr.count++; ima_measurements_show(&ima_kexec_file, qe); } else { ret = -EINVAL; break; }``,
    ``khdr.buffer_size = ima_kexec_file.count;``; bytes go one by one (``ima_putc``:
    ``seq_putc``), dropped past ``size``; ima_update_kexec_buffer: ``memcpy(ima_kexec_buffer,
    buf, buf_size);``"""
    assert ima_kexec.fill_at_execute(ENTRIES, 4096) == FULL
    ends = []
    at = ima_kexec.HDR_SIZE
    for e in ENTRIES:
        at += len(ima_kexec.build_buffer([e])) - ima_kexec.HDR_SIZE
        ends.append(at)
    # cut inside entry 2: entries 0-2 counted, buffer_size the cut
    cut = ends[1] + 10
    got = ima_kexec.fill_at_execute(ENTRIES, cut)
    assert got[ima_kexec.HDR_SIZE:] == FULL[ima_kexec.HDR_SIZE:cut]
    assert struct.unpack_from("<HHIQQ", got) == (1, 0, 0, cut, 3)
    with pytest.raises(ima_kexec.RestoreStopped) as e:
        ima_kexec.restore(got)
    assert e.value.kept == 2
    # a cut at an entry's end: the next entry is not started, the list restores
    got = ima_kexec.fill_at_execute(ENTRIES, ends[1])
    assert struct.unpack_from("<HHIQQ", got) == (1, 0, 0, ends[1], 2)
    assert len(ima_kexec.restore(got).entries) == 2


def _build(tmp_path: Path, corpus: Path, version: tuple[int, int, int], policy: DigestPolicy,
           handover_size: int | None = None, copies: int = 1) -> tuple[Path, bytes]:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(kgen.make_bzimage(init_size=0x3000000))
    out = tmp_path / "x.img"
    ima = tmp_path / "ima.bin"
    ima.write_bytes(gen.encode_list(ENTRIES * copies, "<"))
    build_x86_64(BuildInputs(kernel, out, ima=ima, purgatory=corpus / PURGATORY_CORPUS,
                             policy=policy, handover_size=handover_size),
                 profile=LoaderProfile(version, "test", "cfg"))
    return out, out.read_bytes()


def test_4_10_to_6_14_fills_and_hashes_at_load(tmp_path: Path, corpus: Path) -> None:
    """ima_add_kexec_buffer (4.10-6.14): ``ima_dump_measurement_list(&kexec_buffer_size,
    &kexec_buffer, kexec_segment_size);`` ``kbuf.buffer = kexec_buffer; kbuf.bufsz =
    kexec_buffer_size; kbuf.memsz = kexec_segment_size;``; kexec_calculate_store_digests hashes
    every segment but the purgatory (``if (ksegment->kbuf == pi->purgatory_buf) continue;``)."""
    _, data = _build(tmp_path, corpus, (6, 14, 0), DigestPolicy.UPSTREAM_4_10)
    info = read_image(data)
    ho = info.segments[0]
    assert (ho.role, ho.memsz, ho.bufsz, ho.bufsz_at_load, ho.checksummed) == (
        Role.HANDOVER, 4096, 948, 948, True)
    assert not ho.filled_at_execute
    assert data[ho.offset:ho.offset + ho.bufsz] == FULL
    assert (ho.mem, ho.memsz) in info.regions


def test_6_15_adds_empty_at_load_and_leaves_it_out(tmp_path: Path, corpus: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """ima_add_kexec_buffer (6.15+): ``size_t kexec_buffer_size = 0; void *kexec_buffer =
    NULL;`` ... ``kbuf.bufsz = kexec_buffer_size;``; kexec_calculate_store_digests: ``if
    (image->is_ima_segment_index_set && i == image->ima_segment_index) continue;``. The file
    holds the list at execute; the table at load shows bufsz 0."""
    path, data = _build(tmp_path, corpus, (6, 15, 0), DigestPolicy.UPSTREAM_6_15)
    info = read_image(data)
    ho = info.segments[0]
    assert (ho.role, ho.memsz, ho.bufsz, ho.bufsz_at_load, ho.checksummed) == (
        Role.HANDOVER, 4096, 948, 0, False)
    assert ho.filled_at_execute
    assert data[ho.offset:ho.offset + ho.bufsz] == FULL
    assert (ho.mem, ho.memsz) not in info.regions
    assert main(["ls", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (f" 0 handover    {ho.mem:#18x}     0x1000        0x0 no  "
                        f"{ho.offset:#10x}")
    assert lines[5] == ("segment 0 (handover): added empty at load (bufsz 0), filled at "
                        "execute: the file holds 0x3b4 bytes, the list at execute")
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"   0 handover    mem {ho.mem:#x} memsz 0x1000 bufsz 0x0 (filled at execute: " \
           "0x3b4 bytes) not checksummed sha256 " in text
    assert main(["inspect", "--json", str(path)]) == 0
    assert '"bufsz_at_load": 0' in capsys.readouterr().out


def test_6_15_overflowing_list_is_cut_and_judged(tmp_path: Path, corpus: Path) -> None:
    """ima_update_kexec_buffer: ``ret = ima_dump_measurement_list(&buf_size, &buf,
    kexec_segment_size);`` -- the size set at load, page-aligned (``ALIGN(binary_runtime_size,
    PAGE_SIZE)``): a list at execute longer than the segment is cut there; the next kernel's
    restore then stops at the cut entry, which build refuses unless --force."""
    assert len(gen.encode_list(ENTRIES * 5, "<")) + 24 == 4644
    # --handover-size 3000 is a 4096-byte segment: the cut is at 4096, inside entry 35
    # (0xfc2-0x1046: 8 entries of 924 bytes a copy), after its name length
    with pytest.raises(RuleError) as e:
        _build(tmp_path, corpus, (6, 15, 0), DigestPolicy.UPSTREAM_6_15, 3000, copies=5)
    assert str(e.value) == (
        "handover: segment[0]: the next kernel would refuse it: ima-kexec-buffer: entry[35] "
        "at offset 0xfc2: entry header: nr of fields mismatch: expected 4, found 3 (it keeps "
        "the 35 entries before it); nothing written (--force writes it anyway)")
    # written with --force: the header counts the 36 entries started, the last one cut
    kernel = tmp_path / "bzImage"
    built = build_x86_64(BuildInputs(kernel, tmp_path / "f.img", ima=tmp_path / "ima.bin",
                                     purgatory=corpus / PURGATORY_CORPUS, force=True,
                                     policy=DigestPolicy.UPSTREAM_6_15, handover_size=3000),
                         profile=LoaderProfile((6, 15, 0), "test", "cfg"))
    assert built.result.handover_entries == 36
    assert built.warnings == (
        "written with --force: the next kernel would refuse it: ima-kexec-buffer: entry[35] at "
        "offset 0xfc2: entry header: nr of fields mismatch: expected 4, found 3 (it keeps the "
        "35 entries before it)",
        "written with --force: entries cannot be read: ima-list: entry[35].template_data_len "
        "at offset 0xfe5: template_data_len 93 exceeds the 23 bytes left")
    # the same list fits the 8192-byte segment IMA sizes for it
    _, data = _build(tmp_path, corpus, (6, 15, 0), DigestPolicy.UPSTREAM_6_15, copies=5)
    ho = read_image(data).segments[0]
    assert (ho.memsz, ho.bufsz, ho.bufsz_at_load) == (8192, 4644, 0)
