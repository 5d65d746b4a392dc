"""What every arch loader does the same way."""

from __future__ import annotations

from kimagekit.purgatory import DigestPolicy, hashes_role
from kimagekit.segments import KexecBuf, Role, SegmentList, add_buffer

__all__ = ["add_ima_buffer"]


def add_ima_buffer(sl: SegmentList, handover: bytes | None, handover_size: int | None,
                   policy: DigestPolicy) -> tuple[SegmentList, tuple[int, int] | None]:
    """``ima_add_kexec_buffer``: the hand-over placed top-down anywhere in RAM, before the image
    loader runs; ``handover_size`` is its memsz (room for later measurements). Returns the list
    and the segment's (mem, memsz), or None without a hand-over."""
    if handover is None:
        return sl, None
    memsz = max(handover_size or 0, len(handover))
    sl, seg = add_buffer(sl, KexecBuf(handover, memsz, Role.HANDOVER, top_down=True,
                                      checksummed=hashes_role(policy, Role.HANDOVER)))
    return sl, (seg.mem, seg.memsz)
