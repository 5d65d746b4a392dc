"""``build --purgatory-from`` decompresses a bzImage's payload only until the embedded purgatory
is complete; what it finds is what the whole decompression finds, and every failure is the
whole decompression's own error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from image_helpers import gen
from kernel_helpers import kgen

from kimagekit import decompress as dz
from kimagekit import kernels
from kimagekit.errors import KimageError, ParseError, RuleError

PURG = gen.make_purgatory()
MiB = 1 << 20


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "xz", "lzma", "lz4", "zstd"])
@pytest.mark.parametrize("symbols", [True, False])
def test_the_same_purgatory_as_the_whole_decompression(compression: str, symbols: bool) -> None:
    bz = kgen.make_bzimage(kgen.make_vmlinux(purgatory=PURG, symbols=symbols),
                           compression=compression)
    assert kernels.find_purgatory(bz).data == PURG
    assert kernels.purgatory_while_decompressing(bz) == PURG


def test_decompression_stops_once_the_purgatory_is_complete(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """32 MiB of payload after the vmlinux: the first 4 MiB piece holds the purgatory, and no
    other piece is asked for."""
    bz = kgen.make_bzimage(kgen.make_vmlinux(purgatory=PURG, symbols=False) + bytes(32 * MiB))
    real = dz.stream
    pieces: list[int] = []

    def counted(*a: object, **k: object) -> Iterator[bytes]:
        for piece in real(*a, **k):  # type: ignore[arg-type]
            pieces.append(len(piece))
            yield piece

    monkeypatch.setattr(dz, "stream", counted)
    assert kernels.purgatory_while_decompressing(bz) == PURG
    assert pieces == [4 * MiB]


def test_a_purgatory_split_across_pieces_is_waited_for() -> None:
    """The object starts 100 bytes before the first 4 MiB piece ends."""
    vm = kgen.make_vmlinux(symbols=False)
    payload = vm + bytes(4 * MiB - 100 - len(vm)) + PURG + bytes(MiB)
    assert kernels.purgatory_while_decompressing(kgen.make_bzimage(payload)) == PURG


def test_no_purgatory_is_the_same_refusal() -> None:
    bz = kgen.make_bzimage(kgen.make_vmlinux())
    with pytest.raises(RuleError) as whole:
        kernels.find_purgatory(bz)
    with pytest.raises(RuleError) as early:
        kernels.purgatory_while_decompressing(bz)
    assert str(early.value) == str(whole.value) == (
        "kernel: kexec_purgatory: this kernel embeds no purgatory: no kexec_purgatory symbol "
        "and no relocatable ELF object for its machine inside (built without "
        "CONFIG_KEXEC_FILE?)")


def test_a_stream_damaged_before_the_purgatory_is_the_same_error() -> None:
    payload = dz_compress_truncated(kgen.make_vmlinux(purgatory=PURG, symbols=False), 40)
    bz = kgen.make_bzimage(raw_payload=payload)
    with pytest.raises(ParseError) as whole:
        kernels.find_purgatory(bz)
    with pytest.raises(ParseError) as early:
        kernels.purgatory_while_decompressing(bz)
    assert str(early.value) == str(whole.value) == (
        "bzImage: payload at offset 0xe00: bad gzip stream: the gzip stream ends before its end "
        "marker")


def test_a_stream_damaged_after_the_purgatory_still_gives_it() -> None:
    """The one difference, by design: the payload past the purgatory is not read, so damage
    there (which kexec_file_load never looks at either) does not stop the build."""
    vm = kgen.make_vmlinux(purgatory=PURG, symbols=False)
    whole = kgen.compress(vm + bytes(16 * MiB), "gzip")
    bz = kgen.make_bzimage(raw_payload=whole[:len(whole) // 2] + whole[-4:])
    with pytest.raises(KimageError) as e:
        kernels.find_purgatory(bz)
    assert str(e.value) == ("bzImage: payload at offset 0xe00: bad gzip stream: Error -3 while "
                            "decompressing data: invalid code lengths set")
    assert kernels.purgatory_while_decompressing(bz) == PURG


def dz_compress_truncated(data: bytes, keep: int) -> bytes:
    """``data`` gzip-compressed, cut to ``keep`` bytes, with the size trailer of the whole."""
    whole = kgen.compress(data, "gzip")
    return whole[:keep] + whole[-4:]
