"""The text of ``ima check --key``: one line per signed entry, and whether any failed."""

from __future__ import annotations

from collections.abc import Sequence

from kimagekit.sig.ima_sig import EntrySignature, Status

FAILING = (Status.INVALID, Status.UNKNOWN_KEY)


def sig_lines(sigs: Sequence[EntrySignature]) -> list[str]:
    lines = []
    for s in sigs:
        if s.status == Status.NO_SIGNATURE:
            continue
        detail = [f"key {s.key_id}"] if s.key_id else []
        if s.key and s.status == Status.VALID:
            detail.append(f"verified with {s.key}")
        if s.reason:
            detail.append(s.reason)
        status = s.status.value.upper() if s.status in FAILING else s.status.value
        lines.append(f"entry {s.index} at offset {s.offset:#x} ({s.template_name}) "
                     f"{s.file_name}: signature {status}"
                     + (f" ({'; '.join(detail)})" if detail else ""))
    counts = {st: sum(1 for s in sigs if s.status == st) for st in Status}
    lines.append("signatures: " + ", ".join(f"{n} {st.value}" for st, n in counts.items()))
    return lines


def sig_failed(sigs: Sequence[EntrySignature]) -> bool:
    return any(s.status in FAILING for s in sigs)
