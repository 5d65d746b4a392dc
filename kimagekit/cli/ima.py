"""``kimagekit ima ...``: show, check, replay, convert and append IMA measurement lists."""

from __future__ import annotations

import enum
import json
import os
import stat
import sys
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import typer

from kimagekit import ima_batch, ima_binary, ima_files, ima_log, ima_replay, ima_show, pcrs
from kimagekit.cli.common import emit_json, emit_line, input_named, jsonable, out, warn
from kimagekit.cli.ima_summary import render_summary
from kimagekit.cli.progress import Progress, ticking
from kimagekit.errors import UsageError, escape
from kimagekit.ima_log import ImaEntry, ListFormat

__all__ = ["app", "render_summary"]

app = typer.Typer(no_args_is_help=True, help="IMA measurement lists and kexec buffers.")

ListArg = typer.Argument(..., help="Binary list (any byte order, any bank), kexec buffer or ASCII.")


def _entry_json(e: ImaEntry) -> dict[str, Any]:
    own = ima_log.BANK_BY_SIZE.get(len(e.template_digest))
    ok = None if e.is_violation or own is None else e.digest_for(own) == e.template_digest
    return {
        "index": e.index,
        "offset": e.offset,
        "pcr": e.pcr,
        "template_digest": e.template_digest.hex(),
        "template_name": e.template_name,
        "violation": e.is_violation,
        "digest_ok": ok,
        "path": ima_binary.entry_path(e),
        "fields": [
            {"id": f.id, "length": len(f.data), "data": f.data.hex(), "shown": f.shown,
             **({"algo": f.algo} if f.algo else {}),
             **({"digest": f.digest.hex()} if f.digest is not None else {})}
            for f in e.fields
        ],
    }


def _format_json(fmt: ListFormat) -> dict[str, Any]:
    return {"kind": fmt.kind, "endian": "little" if fmt.endian == "<" else "big",
            "bank": fmt.bank, "digest_size": fmt.digest_size}


@app.command("show")
def show(
    file: Path = ListArg,
    ascii_: bool = typer.Option(False, "--ascii", help="Exactly the kernel's ASCII list."),
    as_json: bool = typer.Option(False, "--json", help="Every entry, field by field, as JSON."),
    path_prefix: str | None = typer.Option(
        None, "--path-prefix", metavar="PREFIX", show_default=False,
        help="Only entries whose file name (n/n-ng field) starts with PREFIX."),
    template: str | None = typer.Option(
        None, "--template", metavar="NAME", show_default=False,
        help="Only entries of this template (ima-ng, ima-sig, ima-buf, d-ng|n-ng, ...)."),
    pcr: int | None = typer.Option(None, "--pcr", metavar="N", min=0, max=63,
                                   show_default=False, help="Only entries extending PCR N."),
    index: str | None = typer.Option(
        None, "--index", metavar="A:B", show_default=False,
        help="Only entries A to B-1: 0-based, B excluded; A: or :B leave a side open."),
    violations: bool = typer.Option(False, "--violations",
                                    help="Only violations (all-zero template digest)."),
) -> None:
    """Decode every entry field by field, checking each template digest. The filters combine:
    an entry is shown when it passes every one given.

    Example: kimagekit ima show LIST --path-prefix /usr/bin/ --index 0:100
    """
    if ascii_ and as_json:
        raise UsageError("--ascii and --json exclude each other")
    start, stop = ima_show.parse_index(index) if index is not None else (0, None)
    sel = ima_show.Selection(path_prefix, template, pcr, start, stop, violations)
    # a bar only while stdout is not the terminal it would be drawn among
    bar = Progress(f"reading {file}", _size(file)) if not sys.stdout.isatty() else None
    with input_named(file), ima_log.open_list(file) as (fmt, view), bar or nullcontext():
        recs = ima_show.records(view, fmt)
        if bar is not None:
            recs = ticking(recs, bar, lambda rec: rec[1])
        recs = ima_show.select(recs, sel, fmt.endian)
        if ascii_:
            for block in ima_show.ascii_lines(recs, fmt.endian):
                sys.stdout.write(block)
            return
        if as_json:
            # streamed, so a huge list never sits in memory as one document
            sys.stdout.write('{"file": ' + json.dumps(str(file)) + ', "format": '
                             + json.dumps(_format_json(fmt)) + ', "entries": [')
            for block in ima_show.json_entries(recs, fmt.endian):
                sys.stdout.write(block)
            sys.stdout.write("\n]}\n")
            return
        out(f"{file}: {fmt.kind} list, {'little' if fmt.endian == '<' else 'big'}-endian, "
            f"{fmt.bank} template digests")
        shown = 0
        for index_, offset, pcr_, digest, name, data, _base in recs:
            e = ImaEntry(pcr_, digest, name, data, fmt.endian, index_, offset)
            d = _entry_json(e)
            status = ("violation" if e.is_violation else
                      "digest ok" if d["digest_ok"] else
                      "no check" if d["digest_ok"] is None else
                      f"DIGEST MISMATCH: {d['path'] or 'no file name'}")
            out(f"#{e.index} @{e.offset:#x} pcr {e.pcr} {e.template_name} "
                f"{e.template_digest.hex()} [{status}]")
            for f in d["fields"]:
                out(f"    {f['id']:<12} {f['shown']}")
            shown += 1
        if sel.active:
            out(f"{shown} entr{'y' if shown == 1 else 'ies'} selected")


MoreArg = typer.Argument(None, metavar="FILE", show_default=False,
                         help="More lists, each checked the same way.")
JobsOpt = typer.Option(1, "--jobs", "-j", help="Check several lists on N processes.")
JsonlOpt = typer.Option(False, "--jsonl", help="One JSON result per line, per list.")


@app.command("check")
def check(
    file: Path = ListArg,
    more: list[Path] | None = MoreArg,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable result."),
    key: list[Path] = typer.Option([], "--key", help="X.509 certificate (PEM or DER) to check "
                                   "file signatures with, as evmctl's --key; repeatable."),
    policy: Path | None = typer.Option(
        None, "--policy", metavar="FILE", show_default=False,
        help="A keylime runtime policy (JSON, as keylime-policy create runtime writes it): "
        "each entry allowed, excluded, not in policy, digest not allowed, ... as keylime "
        "judges it."),
    jobs: int = JobsOpt,
    jsonl: bool = JsonlOpt,
) -> None:
    """Recompute every template digest (never trusting the stored one); for a kexec buffer also
    apply the next kernel's restore rules; with --key check each entry's file signature; with
    --policy judge each entry by a keylime runtime policy. Exit 1 on any mismatch or refusal (or
    a signature invalid or by an unknown key, or an entry the policy does not allow).

    Example: kimagekit ima check LIST --policy runtime-policy.json
    """
    rules = None
    if policy is not None:
        from kimagekit import keylime_policy
        with input_named(policy):
            rules = keylime_policy.load_policy(policy)
    fn = partial(ima_batch.check_with_keys, keys=tuple(key), policy=rules)
    run_files([file, *(more or [])], fn, _check_view, as_json, jsonl, jobs)


def _check_view(file: Path, checked: ima_batch.Checked) -> tuple[dict[str, Any], list[str], bool]:
    """The JSON object, the text lines and the verdict of one checked file."""
    res, sigs = checked.result, checked.signatures
    fmt, report, restore_error = res.fmt, res.report, res.restore_error
    if sigs is not None:
        from kimagekit.cli.ima_sig import sig_failed, sig_lines
    judged = checked.policy
    ok = res.ok and not (sigs and sig_failed(sigs)) and (judged is None or judged.ok)
    obj = {"file": str(file), "format": _format_json(fmt), "entries": report.entries,
           "violations": report.violations, "mismatches": report.mismatches,
           "restore_error": restore_error, "ok": ok,
           **({"signatures": sigs} if sigs is not None else {}),
           **({"policy": _policy_json(judged)} if judged is not None else {})}
    lines = []
    for m in report.mismatches:
        lines.append(f"entry {m.index} ({m.path or 'no file name'}) at offset {m.offset:#x} "
                     f"({m.template_name}): template digest mismatch: stored {m.stored.hex()}, "
                     f"computed {m.computed.hex()}")
    if restore_error:
        lines.append(f"the next kernel would refuse this buffer: {restore_error}")
    lines += sig_lines(sigs) if sigs is not None else []
    lines += _policy_lines(judged) if judged is not None else []
    verdict = "OK" if ok else "FAILED"
    lines.append(f"{verdict}: {report.entries} entries, {report.violations} violations, "
                 f"{len(report.mismatches)} template digest mismatches ({fmt.bank})")
    return obj, lines, ok


def _policy_json(judged: Any) -> dict[str, Any]:
    return {"entries": [{"index": v.index, "offset": v.offset, "pcr": v.pcr,
                         "template_name": v.template_name, "path": v.path, "digest": v.digest,
                         "status": v.status, "pcr_ok": v.pcr_ok, "signed": v.signed,
                         "ok": v.ok}
                        for v in judged.verdicts],
            "counts": judged.counts, "failed": judged.failed, "problems": list(judged.problems),
            "notes": list(judged.notes), "ok": judged.ok}


def _policy_lines(judged: Any) -> list[str]:
    """One line per entry, then the counts: what keylime's verifier would say of each."""
    lines = []
    for v in judged.verdicts:
        status = v.status if v.ok or v.status in ("allowed", "excluded", "ignored keyring") \
            else v.status.upper()
        pcr = "" if v.pcr_ok else f"; PCR {v.pcr}, NOT 10"
        lines.append(f"entry {v.index} ({v.template_name}) {v.path or 'no file name'} "
                     f"{v.digest or '-'}: {status}{pcr}")
    lines += [f"note: {n}" for n in judged.notes]
    lines += [f"POLICY: {p}" for p in judged.problems]
    counts = ", ".join(f"{n} {s}" for s, n in judged.counts.items())
    lines.append(f"policy: {len(judged.verdicts)} entries: {counts or 'none'}; "
                 f"{judged.failed} fail")
    return lines


View = Callable[[Path, Any], tuple[dict[str, Any], list[str], bool]]


def _size(path: Path) -> int | None:
    """A regular file's size, for a bar; None (a spinner) for a pipe or stdin."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def run_files(files: list[Path], fn: Callable[..., Any], view: View, as_json: bool,
              jsonl: bool, jobs: int) -> None:
    """Run ``fn`` on each file (on ``jobs`` processes) and report each in order. One file
    reports as it always has; several: text lines prefixed with the file name, ``--json`` a list
    of the per-file objects, ``--jsonl`` one object a line; a file that cannot be read is an
    error line on stderr (and an ``error`` object) and the others still run. Exit 2 if any file
    could not be read, else 1 if any check failed."""
    if as_json and jsonl:
        raise UsageError("--json and --jsonl exclude each other")
    if jobs < 1:
        raise UsageError(f"--jobs {jobs}: give at least 1")
    if len(files) == 1 and not jsonl:
        with Progress(f"reading {files[0]}", _size(files[0])) as one:
            value = fn(files[0], progress=one.callback)
        single, text, ok = view(files[0], value)
        if as_json:
            emit_json(single)
        for line in [] if as_json else text:
            out(line)
        if not ok:
            raise typer.Exit(1)
        return
    worst, objs = 0, []
    obj: dict[str, Any]
    lines: list[str]
    # a bar over the files while stdout (the results, as they come) is not the terminal
    many = Progress(f"{len(files)} lists", len(files)) if not sys.stdout.isatty() else None
    with many or nullcontext():
        for n, o in enumerate(ima_batch.run_all(fn, files, jobs), 1):
            if many is not None:
                many.update(n)
            if o.error is not None:
                worst = max(worst, o.error.exit_code)
                sys.stderr.write(f"kimagekit: error: {escape(o.file)}: {o.error}\n")
                obj = {"file": o.file, "error": str(o.error), "exit_code": o.error.exit_code}
                lines = []
            else:
                obj, lines, ok = view(Path(o.file), o.value)
                worst = max(worst, 0 if ok else 1)
            if jsonl:
                emit_line(obj)
            elif as_json:
                objs.append(obj)
            else:
                for line in lines:
                    out(f"{escape(o.file)}: {line}")
    if as_json:
        emit_json(objs)
    if worst:
        raise typer.Exit(worst)


@app.command("replay")
def replay(
    file: Path = ListArg,
    more: list[Path] | None = MoreArg,
    bank: list[str] = typer.Option([], "--bank", help="sha1, sha256, sha384, sha512 or sm3_256 "
                                   "(default: the first four)."),
    expect: list[str] = typer.Option([], "--expect", help="PCR:BANK=HEX, repeatable."),
    pcrs_file: list[Path] = typer.Option([], "--pcrs", help="Expected values: evmctl "
                                         "'PCR-NN: hex' (optionally BANK,FILE) or JSON."),
    recomputed: bool = typer.Option(False, "--recomputed", help="Extend every bank with the "
                                    "recomputed template hash, even where the list stores it."),
    prefix: bool = typer.Option(False, "--prefix", help="Accept a quote that a prefix of the "
                                "list reaches (the list grew after the quote)."),
    trace: bool = typer.Option(False, "--trace", help="Also the PCR value after each entry, in "
                               "every bank replayed (--bank), marking where a quoted value is "
                               "reached."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable result."),
    jobs: int = JobsOpt,
    jsonl: bool = JsonlOpt,
) -> None:
    """Replay the list into PCR values (stored digests in the list's own bank), recheck every
    template digest, and compare with the expected (quoted) values.

    Example: kimagekit ima replay LIST --expect 10:sha256=HEX --trace
    """
    expected: pcrs.Expected = {}
    for spec in expect:
        b, pcr, value = pcrs.parse_expect(spec)
        expected.setdefault(b, {})[pcr] = value
    for pf in pcrs_file:
        for b, table in pcrs.parse_pcr_file(pf).items():
            expected.setdefault(b, {}).update(table)
    banks = list(dict.fromkeys(bank)) or list(ima_log.BANKS)
    for b in expected:
        if b not in banks:
            banks.append(b)
    ima_replay.check_banks(banks)
    method: ima_replay.Method = "recomputed" if recomputed else "per-bank"
    # the text report never shows the sha1-padded tables: replay them only when a verdict needs
    fn = partial(ima_files.replay_file, banks=banks, method=method, expected=expected,
                 legacy=True if as_json or jsonl else None, trace=trace)
    view = partial(_replay_view, banks=banks, method=method, expected=expected, prefix=prefix)
    run_files([file, *(more or [])], fn, view, as_json, jsonl, jobs)


def _replay_view(file: Path, report: ima_log.ListReport, *, banks: list[str],
                 method: ima_replay.Method, expected: pcrs.Expected,
                 prefix: bool) -> tuple[dict[str, Any], list[str], bool]:
    assert report.replayed is not None
    verdicts = ima_replay.judge(expected, report.replayed, method)
    differ = [v for v in verdicts
              if v.status == "mismatch" or (v.status == "prefix" and not prefix)]
    compared = [v for v in verdicts if v.status != "untouched"]
    altered = report.mismatches
    chain = None if not expected else bool(compared) and not differ
    ok = not altered and chain is not False
    obj = {"file": str(file), "method": method,
           "pcrs": _tables(report.pcrs), "pcrs_sha1_padded": _tables(report.padded),
           "verdicts": jsonable(verdicts),
           "mismatches": [{"bank": v.bank, "pcr": v.pcr, "expected": v.expected.hex(),
                           "replayed": (v.replayed or b"").hex()} for v in differ],
           "altered": jsonable(altered), "chain_matches": chain, "ok": ok}
    lines = []
    steps = report.replayed.trace
    if steps is not None:
        obj["trace"] = [{"index": t.index, "offset": t.offset, "pcr": t.pcr,
                         "template_name": t.template_name, "path": t.path,
                         "values": {b: v.hex() for b, v in t.values.items()},
                         "quoted": [b for b, v in t.values.items()
                                    if expected.get(b, {}).get(t.pcr) == v]}
                        for t in steps]
        lines += _trace_lines(steps, expected)
    for b in banks:
        for p, v in sorted(report.pcrs[b].items()):
            lines.append(f"{b} PCR-{p:02d}: {v.hex()}")
    lines += _verdict_lines(verdicts, prefix)
    for m in altered:
        lines.append(f"entry {m.index} ({m.path or 'no file name'}) altered: template digest "
                     f"stored {m.stored.hex()}, computed {m.computed.hex()}")
    summary = _replay_summary(verdicts, differ, compared, len(altered), bool(expected))
    if summary:
        lines.append(summary)
    return obj, lines, ok


def _trace_lines(steps: tuple[ima_replay.TraceStep, ...], expected: pcrs.Expected) -> list[str]:
    """One line per entry and bank: the PCR's value after that entry; ``= quote`` where it
    equals the expected value of that PCR and bank."""
    lines = []
    for t in steps:
        name = f"{t.template_name} {t.path}" if t.path is not None else t.template_name
        for b, v in t.values.items():
            mark = " = quote" if expected.get(b, {}).get(t.pcr) == v else ""
            lines.append(f"entry {t.index} ({name}): {b} PCR-{t.pcr:02d} {v.hex()}{mark}")
    return lines


def _tables(t: dict[str, dict[int, bytes]]) -> dict[str, dict[str, str]]:
    return {b: {str(p): v.hex() for p, v in sorted(table.items())} for b, table in t.items()}


_METHOD_TEXT = {"stored": "stored template digests", "recomputed": "recomputed template digests",
                "sha1-padded": "SHA-1 template digests zero-padded, as before Linux 5.8", "": ""}


def _verdict_lines(verdicts: list[ima_replay.PcrVerdict], prefix: bool) -> list[str]:
    lines = []
    untouched = [f"{v.bank} PCR-{v.pcr:02d}" for v in verdicts if v.status == "untouched"]
    for v in verdicts:
        name = f"{v.bank} PCR-{v.pcr:02d}"
        if v.status == "match":
            lines.append(f"{name}: matches the quote after entry {v.reached_at} "
                         f"({_METHOD_TEXT[v.method or '']})")
        elif v.status == "prefix":
            tail = "accepted (--prefix)" if prefix else "accept with --prefix"
            lines.append(f"{name}: matches the quote after entry {v.reached_at}; entries up to "
                         f"{v.last_entry} extend it further: the list grew after the quote, "
                         f"{tail} ({_METHOD_TEXT[v.method or '']})")
        elif v.status == "mismatch":
            lines.append(f"MISMATCH {name}: expected {v.expected.hex()}, replayed "
                         f"{(v.replayed or b'').hex()}")
    if untouched:
        lines.append("not compared, the list never extends them: " + ", ".join(untouched))
    return lines


def _replay_summary(verdicts: list[ima_replay.PcrVerdict], differ: list[ima_replay.PcrVerdict],
                    compared: list[ima_replay.PcrVerdict], altered: int,
                    expected: bool) -> str | None:
    n = len(compared)
    values = f"{n} expected PCR value{'s' if n != 1 else ''}"
    entries = f"{altered} entr{'ies' if altered != 1 else 'y'} altered"
    if not expected:
        return f"FAILED: {entries}" if altered else None
    if not compared:
        return f"FAILED: the list extends none of the {len(verdicts)} PCRs expected"
    if differ:
        return (f"FAILED: chain does not match the quote: {len(differ)} of {values} not "
                "reproduced"
                + (f"; {entries}" if altered else ""))
    if altered:
        return f"FAILED: chain matches the quote ({values} reproduced), but {entries}"
    return f"OK: chain matches the quote, {values} reproduced"


class Form(enum.StrEnum):
    """--to's choices (ima_files.FORMS)."""

    ASCII = "ascii"
    BINARY = "binary"
    CANONICAL = "canonical"
    KEXEC_BUFFER = "kexec-buffer"


class Endian(enum.StrEnum):
    """--endian's choices."""

    LITTLE = "little"
    BIG = "big"


@app.command("convert")
def convert(
    file: Path = ListArg,
    to: Form = typer.Option(..., "--to", help="The form to write: the kernel's ASCII list, a "
                            "binary list, the canonical (little-endian) list, or a kexec buffer."),
    output: Path = typer.Option(..., "-o", "--output", metavar="OUT",
                                help="Where to write it (atomically; '-' for stdout)."),
    endian: Endian | None = typer.Option(None, "--endian", help="Byte order of a binary list or "
                                         "kexec buffer (default: the input's)."),
    bank: str = typer.Option("", "--bank", help="Template digest bank of a binary output."),
    headerless: bool = typer.Option(False, "--headerless",
                                    help="kexec-buffer without ima_kexec_hdr (2016 form)."),
    force: bool = typer.Option(False, "--force", help="Write a kexec buffer even when the next "
                               "kernel would refuse it or a template digest is wrong."),
) -> None:
    """Write the list in another form; the output is re-read and compared before success. A
    kexec buffer the next kernel would refuse is not written (exit 1) unless --force.

    Example: kimagekit ima convert binary_runtime_measurements --to ascii -o list.txt"""
    if bank and bank not in ima_log.BANKS:
        raise UsageError(f"--bank {bank!r}: choose one of {', '.join(ima_log.BANKS)}")
    order: ima_log.Endian | None = "<" if endian == "little" else ">" if endian == "big" else None
    w = ima_files.convert_file(file, output, to.value, endian=order,
                               bank=bank or None, header=not headerless, force=force)
    warn(f"wrote {output}: {w.entries} entries, {w.size} bytes ({to})")


@app.command("append")
def append(
    file: Path = ListArg,
    new: Path = typer.Argument(..., metavar="NEW", help="A list whose entries are appended."),
    output: Path = typer.Option(..., "-o", "--output", metavar="OUT",
                                help="Where to write the longer list (atomically; '-' for "
                                "stdout)."),
    force: bool = typer.Option(False, "--force", help="Write a kexec buffer even when the next "
                               "kernel would refuse it."),
) -> None:
    """Append the entries of NEW to FILE (binary list or kexec buffer), in FILE's encoding. A
    kexec buffer the next kernel would refuse is not written (exit 1) unless --force.

    Example: kimagekit ima append handover.bin since-load.bin -o handover-new.bin"""
    w = ima_files.append_file(file, new, output, force=force)
    warn(f"wrote {output}: {w.entries} entries, {w.size} bytes")
