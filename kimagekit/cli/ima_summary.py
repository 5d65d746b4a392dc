"""The text ``inspect`` shows for an IMA list or kexec buffer (apart from the ``ima`` commands,
so that ``inspect`` does not import them)."""

from __future__ import annotations

from kimagekit.ima_log import ListSummary


def render_summary(s: ListSummary) -> list[str]:
    digests = "all verify" if not s.digest_mismatches else (
        f"{s.digest_mismatches} MISMATCH (first at offset {s.first_mismatch or 0:#x})")
    lines = [f"encoding: {s.endian}-endian, {s.bank} template digests ({s.digest_size} bytes)",
             f"size: {s.size} bytes",
             f"entries: {s.entries} ({s.violations} violations)",
             "templates: " + ", ".join(f"{k} x{v}" for k, v in s.templates.items()),
             f"template digests: {digests}"]
    if s.kexec_header:
        h = s.kexec_header
        lines.append(f"kexec header: version {h['version']}, buffer_size {h['buffer_size']}, "
                     f"count {h['count']}")
        lines.append(f"restore: {s.restore_error or 'the next kernel would accept it'}")
    for bank, table in s.pcrs.items():
        for pcr, value in table.items():
            lines.append(f"{bank} PCR-{pcr:02d}: {value}")
    return lines
