"""The loading kernel's ``kexec_load``/``kexec_execute`` critical-data entries (6.15+), their exact
bytes and where ``build --ima-events`` puts them. Source lines: linux-source 7.2.13,
security/integrity/ima/. Checked on the real kernel in tests/test_realkernel_ima_save.py."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from image_helpers import PURGATORY_CORPUS, gen
from kernel_helpers import kgen

from kimagekit import ima_kexec
from kimagekit.cli import main
from kimagekit.errors import UsageError
from kimagekit.ima_binary import encode_entry
from kimagekit.ima_kexec_events import KexecEvents, event_text, kexec_event, with_kexec_events
from kimagekit.image import read_image
from kimagekit.loader_profile import resolve

ENTRIES = gen.restorable_entries()
LIST = gen.encode_list(ENTRIES, "<")


def _field(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def test_event_text() -> None:
    """ima_kexec.c:48-51: ``scnprintf(ima_kexec_event, IMA_KEXEC_EVENT_LEN,
    "kexec_segment_size=%lu;ima_binary_runtime_size=%lu;ima_runtime_measurements_count=%ld;",
    kexec_segment_size, buf_size, len)``, ``buf_size`` being ``ima_get_binary_runtime_size``,
    which adds the 24-byte header (ima_queue.c:215-218: ``return val + sizeof(struct
    ima_kexec_hdr);``)."""
    assert event_text(0x7000, 15999, 107) == (
        b"kexec_segment_size=28672;ima_binary_runtime_size=16023;"
        b"ima_runtime_measurements_count=107;")


def test_event_entry_bytes() -> None:
    """ima_kexec.c:53: ``ima_measure_critical_data("ima_kexec", event_name, ima_kexec_event, n,
    false, NULL, 0)``: process_buffer_measurement (ima_main.c:1128 ``template =
    ima_template_desc_buf();``, 1151-1152 ``if (!pcr) pcr = CONFIG_IMA_MEASURE_PCR_IDX;``,
    1155-1158 the buffer hashed with ``ima_hash_algo``); the d-ng field is ``"%s:"``, its NUL,
    then the digest (ima_template_lib.c:315-318); n-ng a string with its NUL
    (ima_template_lib.c:52-53 ``buflen = datalen + 1``); buf the bytes as they are. The template
    digest hashes each field's u32 length and bytes (ima_crypto.c:310-316); the binary list
    stores the SHA-1 one."""
    text = event_text(0x7000, 15999, 107)
    data = (_field(b"sha1:\0" + hashlib.sha1(text).digest()) + _field(b"kexec_load\0")
            + _field(text))
    want = (struct.pack("<I", 10) + hashlib.sha1(data).digest() + _field(b"ima-buf")
            + _field(data))
    e = kexec_event("kexec_load", 0x7000, 15999, 107)
    assert encode_entry(e) == want
    assert (e.pcr, e.template_name, e.path) == (10, "ima-buf", "kexec_load")
    e = kexec_event("kexec_execute", 0x7000, 15999, 107, hash_algo="sha256", pcr=11)
    assert e.pcr == 11
    assert e.fields[0].data == b"sha256:\0" + hashlib.sha256(text).digest()
    assert e.template_digest == hashlib.sha1(e.template_data).digest()


def test_events_count_what_was_measured_before_them() -> None:
    """``kexec_load`` is measured after the segment is sized (ima_kexec.c:195 then 78), so it
    sizes nothing but is in the list at execute; ``kexec_execute`` is measured in the reboot
    notifier (ima_queue.c:532-533), priority 0, before the dump notifier (ima_kexec.c:258
    ``.priority = INT_MIN``): it counts ``kexec_load`` and is itself handed over."""
    out = with_kexec_events(ENTRIES, 8192, KexecEvents.LOAD_EXECUTE)
    assert out[:-2] == ENTRIES
    load = kexec_event("kexec_load", 8192, len(LIST), len(ENTRIES))
    assert out[-2] == load
    assert out[-1] == kexec_event("kexec_execute", 8192, len(LIST) + len(encode_entry(load)),
                                  len(ENTRIES) + 1)
    assert with_kexec_events(ENTRIES, 8192, KexecEvents.EXECUTE)[-1] == kexec_event(
        "kexec_execute", 8192, len(LIST), len(ENTRIES))
    assert with_kexec_events(ENTRIES, 8192, KexecEvents.NONE) == ENTRIES


def test_profile_reads_ima_hash_and_pcr(tmp_path: Path) -> None:
    """security/integrity/ima/Kconfig: ``IMA_DEFAULT_HASH`` (default sha1) and
    ``IMA_MEASURE_PCR_IDX`` (range 8 14, default 10)."""
    cfg = tmp_path / "config"
    cfg.write_text('# Linux/x86 7.2.13 Kernel Configuration\nCONFIG_IMA_KEXEC=y\n'
                   'CONFIG_IMA_DEFAULT_HASH="sha256"\nCONFIG_IMA_MEASURE_PCR_IDX=11\n')
    p = resolve(config=cfg)
    assert (p.ima_hash, p.ima_pcr) == ("sha256", 11)
    assert (resolve("7.2").ima_hash, resolve("7.2").ima_pcr) == ("sha1", 10)
    cfg.write_text("CONFIG_IMA_MEASURE_PCR_IDX=ten\n")
    with pytest.raises(UsageError, match=r"line 1: CONFIG_IMA_MEASURE_PCR_IDX='ten' is not an "
                                         r"integer"):
        resolve(config=cfg)


def _argv(tmp_path: Path, corpus: Path, *extra: str) -> list[str]:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(kgen.make_bzimage(init_size=0x3000000))
    (tmp_path / "ima.bin").write_bytes(LIST)
    return ["build", "--arch", "x86_64", "--kernel", str(kernel), "--purgatory",
            str(corpus / PURGATORY_CORPUS), "--ima", str(tmp_path / "ima.bin"),
            "-o", str(tmp_path / "x.img"), *extra]


def test_build_appends_the_events(tmp_path: Path, corpus: Path) -> None:
    """ima_add_kexec_buffer sizes the segment from the list at load (ima_kexec.c:180-187); with
    ``load+execute`` the list given is that one and the hand-over (filled at execute) holds it
    and both events; with ``execute`` and ``--handover-size`` the list given is the one at
    reboot, in the segment sized at load."""
    assert main(_argv(tmp_path, corpus, "--loader-version", "7.2", "--ima-events",
                      "load+execute")) == 0
    data = (tmp_path / "x.img").read_bytes()
    ho = read_image(data).segments[0]
    memsz = ima_kexec.segment_size(len(LIST) + 24)
    assert (ho.memsz, ho.bufsz_at_load) == (memsz, 0)
    assert data[ho.offset:ho.offset + ho.bufsz] == ima_kexec.build_buffer(
        with_kexec_events(ENTRIES, memsz, KexecEvents.LOAD_EXECUTE))
    assert main(_argv(tmp_path, corpus, "--loader-version", "7.2", "--ima-events", "execute",
                      "--handover-size", "0x3000", "--ima-hash", "sha512")) == 0
    data = (tmp_path / "x.img").read_bytes()
    ho = read_image(data).segments[0]
    assert ho.memsz == 0x3000
    assert data[ho.offset:ho.offset + ho.bufsz] == ima_kexec.build_buffer(
        with_kexec_events(ENTRIES, 0x3000, KexecEvents.EXECUTE, hash_algo="sha512"))


def test_build_refuses_events_where_there_are_none(tmp_path: Path, corpus: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Before 6.15 the segment is filled at load (ima_kexec.c of 6.14: ``ima_dump_measurement_
    list`` in ima_add_kexec_buffer) and no event is measured."""
    assert main(_argv(tmp_path, corpus, "--loader-version", "6.14", "--ima-events",
                      "execute")) == 2
    assert capsys.readouterr().err == (
        "kimagekit: error: --ima-events: the kexec_load/kexec_execute events are measured by "
        "6.15+ loaders (digest policy upstream-6.15), not under the upstream-4.10 policy\n")
    argv = _argv(tmp_path, corpus, "--loader-version", "7.2", "--ima-events", "execute")
    argv.remove("--ima")
    argv.remove(str(tmp_path / "ima.bin"))
    assert main(argv) == 2
    assert capsys.readouterr().err == "kimagekit: error: --ima-events needs --ima\n"
