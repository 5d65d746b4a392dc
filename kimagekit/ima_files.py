"""IMA list files as the ``ima check|convert|append`` commands use them: checked, rewritten in
another form, or extended; every output written atomically and re-read before success."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from kimagekit import ima_ascii, ima_kexec, ima_log, ima_replay
from kimagekit.errors import KimageError, Refused, RuleError, UsageError, about_file, input_named
from kimagekit.fileio import atomic_write, reread
from kimagekit.ima_log import ListFormat, ListReport

__all__ = [
    "FORMS", "CheckResult", "Form", "Pathish", "Written", "append_file", "check_file",
    "convert_file", "judge_buffer", "replay_file",
]

Pathish = str | os.PathLike[str]
Form = Literal["ascii", "binary", "canonical", "kexec-buffer"]
FORMS: tuple[Form, ...] = ("ascii", "binary", "canonical", "kexec-buffer")


@dataclass(frozen=True)
class CheckResult:
    fmt: ListFormat
    report: ListReport
    restore_error: str | None  # why the next kernel would refuse a kexec buffer

    @property
    def ok(self) -> bool:
        return not self.report.mismatches and self.restore_error is None


def check_file(path: Pathish, progress: Callable[[int], None] | None = None) -> CheckResult:
    """Every template digest recomputed; for a kexec buffer also the next kernel's restore rules
    (a refusal is reported, not raised). ``progress``: called with each entry's offset."""
    with input_named(path), ima_log.open_list(path) as (fmt, view):
        report = ima_log.analyse(view, fmt, progress=progress)
        restore_error = None
        if fmt.kind == "kexec-buffer":
            try:
                ima_kexec.restore(view, fmt.endian)
            except RuleError as err:
                restore_error = ima_kexec.refusal(err)
    return CheckResult(fmt, report, restore_error)


def replay_file(path: Pathish, banks: Sequence[str], method: ima_replay.Method = "per-bank",
                expected: Mapping[str, Mapping[int, bytes]] | None = None,
                legacy: bool | None = True, trace: bool = False,
                progress: Callable[[int], None] | None = None) -> ListReport:
    """``ima replay`` of one file: every template digest rechecked, ``banks`` replayed (with the
    pre-5.8 ``sha1-padded`` replay beside), and where each ``expected`` value is reached.

    ``legacy=None``: the ``sha1-padded`` replay only when :func:`ima_replay.judge` would look at
    it (an expected value of another bank that the replay does not end on), by a second pass;
    otherwise ``padded`` stays empty and every verdict is the same. One hash less per entry
    and bank in the usual case. ``trace``: keep every entry's PCR values; ``progress``: called
    with each entry's offset."""
    with input_named(path), ima_log.open_list(path) as (fmt, view):
        want = expected or {}
        report = ima_log.analyse(view, fmt, banks=banks, method=method, expected=want,
                                 legacy=bool(legacy), trace=trace, progress=progress)
        if legacy is None and _padded_needed(want, report):
            report = ima_log.analyse(view, fmt, banks=banks, method=method, expected=want,
                                     legacy=True, trace=trace, progress=progress)
        return report


def _padded_needed(expected: Mapping[str, Mapping[int, bytes]], report: ListReport) -> bool:
    """Would judge() consult the sha1-padded replay: an expected value of a non-SHA-1 bank, of a
    PCR the list extends, that the replay does not end on?"""
    return any(bank != "sha1" and pcr in report.pcrs.get(bank, {})
               and report.pcrs[bank][pcr] != want
               for bank, table in expected.items() for pcr, want in table.items())


@dataclass(frozen=True)
class Written:
    output: str
    entries: int  # as re-read from the output
    size: int


def convert_file(path: Pathish, output: Pathish, to: Form, *,
                 endian: ima_log.Endian | None = None, bank: str | None = None,
                 header: bool = True, force: bool = False) -> Written:
    """The list in another form. ``endian`` defaults to the source's (canonical: always little);
    ``bank`` (binary forms) to the source's digest size; ``header=False`` writes the 2016
    header-less kexec buffer. The output must re-read as the same entries. A kexec buffer is
    held to :func:`judge_buffer` unless ``force``."""
    with input_named(path):
        entries = ima_log.read_entries(path)
    e: ima_log.Endian = "<" if to == "canonical" else (
        endian or (entries[0].endian if entries else "<"))
    if to == "ascii":
        data = "".join(ima_ascii.render(entries)).encode("latin-1")
    elif to == "kexec-buffer":
        data = ima_kexec.build_buffer(entries, endian=e, header=header)
        if header and not force:
            judge_buffer(data, e, output)
    else:
        size = ima_log.DIGEST_SIZES[bank] if bank else (
            len(entries[0].template_digest) if entries else 20)
        data = ima_log.encode_list(entries, e, size)
    back = _readable(data, to, e, path, entries)
    if [(b.pcr, b.template_name) for b in back] != [(a.pcr, a.template_name) for a in entries]:
        raise UsageError(f"{output}: the output would read back as different entries; "
                         "nothing written")
    atomic_write(output, data, inputs=(path,))  # re-read and compared before the rename
    return Written(str(output), len(back), len(data))


def _readable(data: bytes, to: Form, endian: ima_log.Endian, source: Pathish,
              entries: Sequence[ima_log.ImaEntry]) -> list[ima_log.ImaEntry]:
    """The entries ``data`` (about to be written) reads back as; a form that cannot carry an
    entry (an ASCII line for a template the reader does not know) is refused before writing,
    naming that entry in the input."""
    try:
        if to == "ascii":
            return list(ima_ascii.parse_ascii(data, endian=endian))
        return list(ima_log.iter_entries(data))
    except KimageError as err:
        m = re.match(r"(?:line|entry)\[(\d+)\]", err.field or "")
        i = int(m[1]) if m and int(m[1]) < len(entries) else None
        refused = UsageError(
            f"the {to} form cannot carry this entry, it would not read back: {err.message}; "
            "nothing written", fmt="ima-list", field=None if i is None else f"entry[{i}]",
            offset=None if i is None else entries[i].offset)
        raise about_file(refused, source) from err


def judge_buffer(data: bytes, endian: ima_log.Endian, output: Pathish) -> None:
    """Refuse (:class:`Refused`, exit 1) a kexec buffer about to be written to ``output`` that
    the next kernel's restore rules reject, or whose template digests do not match their data
    (the restored list would no longer attest)."""
    try:
        ima_kexec.restore(data, endian)
    except RuleError as err:
        refused = Refused(f"not written: the next kernel would refuse it: {err.message} "
                          "(--force writes it anyway)", fmt=err.fmt, field=err.field,
                          offset=err.offset)
        raise about_file(refused, output) from err
    bad = ima_log.analyse(data).mismatches
    if bad:
        m = bad[0]
        named = f"entry {m.index}" + (f" ({m.path})" if m.path else "")
        raise about_file(Refused(
            f"not written: {named}: the template digest does not match its data "
            f"({len(bad)} such entries; --force writes it anyway)", fmt=ima_kexec.FMT,
            field=f"entry[{m.index}]", offset=m.offset), output)


def append_file(path: Pathish, new: Pathish, output: Pathish, *, force: bool = False) -> Written:
    """The entries of ``new`` appended to ``path`` (binary list or kexec buffer), in its
    encoding. A kexec buffer the next kernel would refuse (its restore rules, e.g. an ``ima``
    template entry) is :class:`Refused` unless ``force``."""
    with input_named(new):
        extra = ima_log.read_entries(new)
    with input_named(path), ima_log.open_list(path) as (fmt, view):
        if fmt.kind == "ascii":
            raise UsageError("append writes binary lists and kexec buffers; convert first")
        for _ in ima_log.iter_entries(view, fmt):  # a damaged list is named, never copied
            pass
        data = ima_kexec.append(bytes(view), extra, fmt)
    if fmt.kind == "kexec-buffer" and not force:
        judge_buffer(data, fmt.endian, output)
    atomic_write(output, data, inputs=(path, new))
    with input_named(output), reread(output, data) as view:
        n = sum(1 for _ in ima_log.iter_entries(view))
    return Written(str(output), n, len(data))
