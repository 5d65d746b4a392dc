"""What every arch loader does the same way."""

from __future__ import annotations

from kimagekit.ima_kexec import check_segment_size
from kimagekit.purgatory import DigestPolicy, hashes_role
from kimagekit.segments import KexecBuf, Role, SegmentList, add_buffer

__all__ = ["NO_PURGATORY_ARCHES", "NO_PURGATORY_NOTE", "add_ima_buffer"]

#: Arches whose kexec_file loads no purgatory: nothing checks a digest at reboot, so ``verify``
#: holds every segment (the hand-over too) to the SHA-256 the image's note records.
NO_PURGATORY_ARCHES = ("arm64",)
NO_PURGATORY_NOTE = ("note: arm64 loads no purgatory: nothing checks the segments at reboot; "
                     "kimagekit checks them against its note (the digest for the hashed "
                     "segments, each recorded SHA-256 for the others)")


def add_ima_buffer(sl: SegmentList, handover: bytes | None, handover_size: int | None,
                   policy: DigestPolicy) -> tuple[SegmentList, tuple[int, int] | None]:
    """``ima_add_kexec_buffer``: the hand-over placed top-down anywhere in RAM, before the image
    loader runs; ``handover_size`` is its memsz (room for later measurements). Returns the list
    and the segment's (mem, memsz), or None without a hand-over. The upstream policies refuse a
    segment over half of RAM, as the kernel does (the 2016 series did not check)."""
    if handover is None:
        return sl, None
    memsz = max(handover_size or 0, len(handover))
    if policy != DigestPolicy.SEED:
        page = sl.target.page_size
        check_segment_size(-(-memsz // page) * page, sum(r.size for r in sl.target.ram), page)
    sl, seg = add_buffer(sl, KexecBuf(handover, memsz, Role.HANDOVER, top_down=True,
                                      checksummed=hashes_role(policy, Role.HANDOVER)))
    return sl, (seg.mem, seg.memsz)
