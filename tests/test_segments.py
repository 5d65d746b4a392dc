"""Segment placement, sanity checks and update_segment, with the kernel's rules."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kimagekit.errors import RuleError, UsageError
from kimagekit.segments import (
    KexecBuf,
    MemRange,
    Role,
    Segment,
    SegmentList,
    Target,
    add_buffer,
    parse_mem_ranges,
    sanity_check,
    update_segment,
)

MiB = 1 << 20
RAM = (MemRange(0x100000, 255 * MiB),)  # 1 MiB .. 256 MiB


def sl(**kw: object) -> SegmentList:
    return SegmentList(Target("x86_64", ram=RAM, **kw))  # type: ignore[arg-type]


def test_memsz_rounded_and_top_down() -> None:
    _, seg = add_buffer(sl(), KexecBuf(b"x" * 10, 10, Role.OTHER, top_down=True))
    assert (seg.mem, seg.memsz, seg.bufsz) == (256 * MiB - 0x1000, 0x1000, 10)


def test_bottom_up_from_buf_min_with_alignment() -> None:
    _, seg = add_buffer(sl(), KexecBuf(b"", 0x1001, Role.OTHER, buf_min=0x123456,
                                       buf_align=0x10000))
    assert (seg.mem, seg.memsz) == (0x130000, 0x2000)


def test_top_down_skips_existing_segments() -> None:
    s, a = add_buffer(sl(), KexecBuf(b"", 0x3000, Role.OTHER, top_down=True))
    s, b = add_buffer(s, KexecBuf(b"", 0x1000, Role.OTHER, top_down=True, buf_align=0x2000))
    assert a.mem == 256 * MiB - 0x3000
    # 0xfffe000 (the first aligned candidate) overlaps a; the kernel steps a page down and
    # re-aligns: 0xfffc000.
    assert b.mem == 256 * MiB - 0x4000


def test_reserved_ranges_are_not_free() -> None:
    s = sl(reserved=(MemRange(256 * MiB - 0x10000, 0x10000),))
    _, seg = add_buffer(s, KexecBuf(b"", 0x1000, Role.OTHER, top_down=True))
    assert seg.mem == 256 * MiB - 0x11000


def test_walk_order_and_legacy_bound() -> None:
    ram = (MemRange(0x100000, MiB), MemRange(0x1000000, MiB))
    new = SegmentList(Target("x86_64", ram=ram))
    old = SegmentList(Target("x86_64", ram=ram, reverse_top_down_walk=False,
                             legacy_top_down_bound=True))
    kb = KexecBuf(b"", 0x1000, Role.OTHER, top_down=True)
    assert add_buffer(new, kb)[1].mem == 0x10FF000  # top of the highest range (6.8+)
    assert add_buffer(old, kb)[1].mem == 0x1FE000  # first range, one page lower (off-by-one)


def test_no_hole() -> None:
    with pytest.raises(RuleError) as e:
        add_buffer(sl(), KexecBuf(b"", 512 * MiB, Role.INITRD))
    assert str(e.value) == ("kexec: segment[0](initrd): no free memory for 0x20000000 bytes "
                            "aligned to 0x1000 in [0x0, 0xffffffffffffffff] (bottom-up)")


def test_bufsz_over_memsz() -> None:
    with pytest.raises(RuleError) as e:
        add_buffer(sl(), KexecBuf(b"x" * 0x1001, 0x1000, Role.OTHER))
    assert str(e.value) == "kexec: segment[0](other): bufsz 0x1001 exceeds memsz 0x1000"


def test_at_most_16() -> None:
    s = sl()
    for _ in range(16):
        s, _seg = add_buffer(s, KexecBuf(b"", 1, Role.OTHER))
    with pytest.raises(RuleError) as e:
        add_buffer(s, KexecBuf(b"", 1, Role.OTHER))
    assert str(e.value) == "kexec: segment[16](other): already 16 segments, the kernel's maximum"


def test_fixed_address_checked_not_searched() -> None:
    s, seg = add_buffer(sl(), KexecBuf(b"k", 0x2000, Role.KERNEL, mem=0x200000))
    assert seg.mem == 0x200000
    with pytest.raises(RuleError) as e:
        add_buffer(s, KexecBuf(b"", 0x1000, Role.OTHER, mem=0x201000))
    assert str(e.value) == ("kexec: segment[1](other): fixed range 0x201000-0x201fff overlaps "
                            "segment[0]")
    with pytest.raises(RuleError) as e:
        add_buffer(s, KexecBuf(b"", 0x1000, Role.OTHER, mem=0x80000))
    assert str(e.value) == ("kexec: segment[1](other): fixed range 0x80000-0x80fff is not "
                            "inside free RAM")
    with pytest.raises(RuleError) as e:
        add_buffer(s, KexecBuf(b"", 0x1000, Role.OTHER, mem=0x300800))
    assert str(e.value) == ("kexec: segment[1](other): fixed address 0x300800 is not aligned "
                            "to 0x1000")


def seg(mem: int, memsz: int, bufsz: int = 0, checksummed: bool = True,
        role: Role = Role.OTHER) -> Segment:
    return Segment(b"\1" * bufsz, mem, memsz, role, checksummed)


@pytest.mark.parametrize(("segs", "text"), [
    ((seg(0x100800, 0x1000),), "kexec: segment[0]: mem 0x100800 or end 0x101800 is not page "
                               "aligned (0x1000)"),
    ((seg(0x100000, 0x2000), seg(0x101000, 0x1000)), "kexec: segment[1]: overlaps segment[0]"),
    ((seg(0x100000, 0x1000, 0x1001),), "kexec: segment[0]: bufsz 0x1001 exceeds memsz 0x1000"),
    ((seg(0x100000, 200 * MiB),), "kexec: segment[0]: segments take more than half of RAM "
                                  "(65280 pages)"),
])
def test_sanity_check(segs: tuple[Segment, ...], text: str) -> None:
    with pytest.raises(RuleError) as e:
        sanity_check(SegmentList(Target("x86_64", ram=RAM), segs))
    assert str(e.value) == text


def test_destination_limit() -> None:
    t = Target("x86_64", ram=RAM, destination_limit=0x200000)
    with pytest.raises(RuleError) as e:
        sanity_check(SegmentList(t, (seg(0x100000, 0x100000),)))
    assert str(e.value) == ("kexec: segment[0]: end 0x200000 is not below the destination "
                            "limit 0x200000")


def test_update_segment_rules() -> None:
    s = SegmentList(Target("x86_64", ram=RAM),
                    (seg(0x100000, 0x1000, 4), seg(0x200000, 0x2000, 4, checksummed=False,
                                                   role=Role.HANDOVER)))
    new = update_segment(s, 0x200000, 0x2000, b"y" * 0x2000)
    assert new.segments[1].content == b"y" * 0x2000
    assert new.segments[0] is s.segments[0]
    with pytest.raises(RuleError) as e:
        update_segment(s, 0x200000, 0x2000, b"y" * 0x2003)
    assert str(e.value) == ("kexec: segment[1]: new contents are 8195 bytes, 3 more than the "
                            "segment's memsz 8192")
    with pytest.raises(RuleError) as e:
        update_segment(s, 0x100000, 0x1000, b"z")
    assert str(e.value) == ("kexec: segment[0]: the other segment is checksummed: only a "
                            "segment left out of the checksum may change")
    with pytest.raises(RuleError) as e:
        update_segment(s, 0x200000, 0x1000, b"z")
    assert str(e.value) == "kexec: segments: no segment at mem 0x200000 with memsz 0x1000"
    assert update_segment(s, 0x100000, 0x1000, b"z", allow_checksummed=True).segments[0].content \
        == b"z"


def test_parse_mem_ranges() -> None:
    assert parse_mem_ranges("0x100000-0x1fffff, 0x40000000+0x1000") == (
        MemRange(0x100000, 0x100000), MemRange(0x40000000, 0x1000))
    with pytest.raises(UsageError) as e:
        parse_mem_ranges("0x10-")
    assert str(e.value) == "--mem: '0x10-' is not START-LAST or START+SIZE"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 8 * MiB), st.booleans(),
                          st.sampled_from([0, 0x10000, 0x200000])), min_size=1, max_size=16))
@example([(8 * MiB, i % 2 == 0, 0) for i in range(16)])
def test_placements_always_pass_sanity(reqs: list[tuple[int, bool, int]]) -> None:
    """Whatever is requested, what add_buffer places passes the kernel's checks, inside RAM;
    only the total can break the kernel's half-of-RAM rule, which add_buffer does not apply."""
    s = sl()
    for size, top, align in reqs:
        s, _ = add_buffer(s, KexecBuf(b"", size, Role.OTHER, top_down=top, buf_align=align))
    assert len(s.segments) == len(reqs)
    totals = list(itertools.accumulate(-(-size // 0x1000) for size, _, _ in reqs))
    over = next((i for i, t in enumerate(totals) if t > 65280 // 2), None)
    if over is None:
        sanity_check(s)
    else:  # e.g. 16 requests of 8 MiB: 32768 pages of 65280
        with pytest.raises(RuleError) as e:
            sanity_check(s)
        assert str(e.value) == (f"kexec: segment[{over}]: segments take more than half of RAM "
                                "(65280 pages)")
    for g, (size, _top, align) in zip(s.segments, reqs, strict=True):
        # memsz is the request rounded up to a page; mem honours the alignment asked for
        assert g.memsz == -(-size // 0x1000) * 0x1000
        assert g.mem % max(align, 0x1000) == 0
        assert any(r.start <= g.mem and g.mem + g.memsz <= r.end for r in RAM)
    # checked here, not by sanity_check: no two segments share a byte
    spans = sorted((g.mem, g.mem + g.memsz) for g in s.segments)
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))
