#!/usr/bin/env python3
"""Mutation campaign over the commands (build, ima convert, ima append, patch-handover), not only
the parsers.

    python fuzz/campaign.py --entry build-ppc64 --runs 100000 [--seed 1] [--resume]
    python fuzz/campaign.py --entry all --runs 10000

Each entry point (see ``ENTRIES`` in fuzz/entries.py) has named input files (kernel, dtb, initrd,
purgatory, ima, ...) and options. Input ``i`` of seed ``s`` is rebuilt from ``(entry, s, i)``
alone: one input file or the options are mutated (fuzz/mutations.py), the files are written to a
scratch directory and the library function the CLI calls runs on them, its output written there.

Outcomes: ``ok`` (with the output checked against the entry's size bound), ``refused`` (a
KimageError), or a finding: any other exception (MemoryError included), an output larger than
the bound, a hang (no answer in ``--timeout`` s), a dead worker, or ``stale``: a refusal
(KimageError) that left the output file behind. The inputs run in a worker
process under ``RLIMIT_AS`` (``--rss-mib``, default 2048), one core. Findings are deduplicated by
exception type and the innermost kimagekit frame; the first input of each is saved under
``--out`` (default fuzz/out/, not committed) with its seed and index. State (the next index,
counts, findings) is saved every ``--chunk`` inputs, so ``--resume`` carries on where a run
stopped and gives the same results as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import multiprocessing.connection as mpc
import resource
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "fuzz"))

import entries  # noqa: E402

from kimagekit.errors import KimageError  # noqa: E402


@dataclass
class Outcome:
    kind: str  # ok, refused; findings: exception, oversize, hang, died, stale
    detail: str = ""  # refused: the error class; finding: its key
    trace: str = ""
    out_size: int = 0
    bound: int = 0


def _location(exc: BaseException) -> str:
    """The innermost frame in kimagekit (else the innermost at all): where to look."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/kimagekit/" in f.filename] or frames
    if not ours:
        return "?"
    f = ours[-1]
    return f"{Path(f.filename).name}:{f.lineno}:{f.name}"


def run_one(entry: str, seed: int, index: int, scratch: Path) -> Outcome:
    """Input ``index`` of ``seed`` through ``entry``, in ``scratch`` (emptied first)."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    case = entries.make_case(entry, seed, index, scratch)
    try:
        produced, bound, why = case.run()
    except KimageError as err:
        if case.output.exists():  # refused, yet the output is there for the next tool to take
            return Outcome("stale", f"output left by {type(err).__name__} at {_location(err)}",
                           f"{case.mutated}\n{type(err).__name__}: {err}")
        return Outcome("refused", type(err).__name__)
    except Exception as exc:  # every other exception is the finding we look for
        key = f"{type(exc).__name__} at {_location(exc)}"
        return Outcome("exception", key, traceback.format_exc(limit=12))
    size = produced.stat().st_size if produced.exists() else 0
    if size > bound:
        key = f"oversize in {entry}, mutated {case.mutated.split(':')[0]}"
        return Outcome("oversize", key, f"output {size} > bound {bound} = {why}; {case.mutated}",
                       size, bound)
    return Outcome("ok", out_size=size, bound=bound)


def _worker(entry: str, seed: int, start: int, stop: int, rss: int,
            conn: mpc.Connection) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (rss, rss))
    with tempfile.TemporaryDirectory(prefix="kimagekit-campaign-",
                                     dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        for i in range(start, stop):
            conn.send(("start", i))
            try:
                res = run_one(entry, seed, i, Path(tmp) / "case")
            except MemoryError:
                res = Outcome("exception", "MemoryError (in the harness)")
            conn.send(("done", i, res))
    conn.send(("end", stop))


@dataclass
class State:
    entry: str
    seed: int
    next: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""  # what a person changed by hand, if anything

    def path(self, out: Path) -> Path:
        return out / f"{self.entry}-seed{self.seed}.json"

    def save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path(out).write_text(json.dumps(self.__dict__, indent=1, sort_keys=True))

    @classmethod
    def load(cls, out: Path, entry: str, seed: int) -> State:
        p = cls(entry, seed).path(out)
        return cls(**json.loads(p.read_text())) if p.exists() else cls(entry, seed)


def _record(st: State, out: Path, index: int, res: Outcome) -> None:
    name = res.kind if res.kind in ("ok", "hang", "died", "stale", "oversize") else (
        f"refused:{res.detail}" if res.kind == "refused" else "exception")
    st.counts[name] = st.counts.get(name, 0) + 1
    if res.kind in ("ok", "refused"):
        return
    key = res.detail or res.kind
    seen = st.findings.get(key)
    if seen is not None:
        seen["count"] += 1
        return
    st.findings[key] = {"count": 1, "seed": st.seed, "index": index, "kind": res.kind,
                        "trace": res.trace}
    # save the input of the first occurrence (rebuilt: the worker may be gone)
    where = out / st.entry / f"seed{st.seed}-{index}"
    entries.make_case(st.entry, st.seed, index, where)
    (where / "finding.txt").write_text(f"{key}\nrebuild: python fuzz/campaign.py --entry "
                                       f"{st.entry} --seed {st.seed} --only {index}\n"
                                       f"{res.trace}")


def campaign(entry: str, runs: int, *, seed: int = 1, out: Path = ROOT / "fuzz/out",
             resume: bool = False, timeout: float = 20.0, rss_mib: int = 2048,
             chunk: int = 500, quiet: bool = False) -> State:
    """Run inputs ``[next, runs)`` of ``entry`` (``next`` = 0 unless resuming)."""
    st = State.load(out, entry, seed) if resume else State(entry, seed)
    ctx = mp.get_context("fork")
    entries.prepare(entry)  # seeds made once, inherited by every worker
    while st.next < runs:
        stop = min(runs, st.next + chunk)
        began = time.monotonic()
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(entry, seed, st.next, stop, rss_mib << 20,
                                                 child))
        proc.start()
        child.close()
        current = st.next
        while True:
            if not parent.poll(timeout):
                proc.kill()
                _record(st, out, current, Outcome("hang", f"hang over {timeout}s in {entry}"))
                st.next = current + 1
                break
            try:
                msg = parent.recv()
            except EOFError:
                proc.join(5)
                _record(st, out, current, Outcome("died", f"worker died in {entry} "
                                                  f"(exit {proc.exitcode})"))
                st.next = current + 1
                break
            if msg[0] == "start":
                current = msg[1]
            elif msg[0] == "done":
                _record(st, out, msg[1], msg[2])
                st.next = msg[1] + 1
            else:
                break
        proc.join(5)
        parent.close()
        st.seconds += time.monotonic() - began
        st.save(out)
        if not quiet:
            print(f"{entry}: {st.next}/{runs} {st.next / max(st.seconds, 1e-9):.1f}/s "
                  f"{len(st.findings)} findings", file=sys.stderr, flush=True)
    return st


def report(st: State) -> str:
    lines = [f"{st.entry} (seed {st.seed}): {st.next} inputs in {st.seconds:.0f} s "
             f"({st.next / max(st.seconds, 1e-9):.1f}/s)"]
    lines += [f"  {k}: {v}" for k, v in sorted(st.counts.items())]
    for key, f in st.findings.items():
        lines.append(f"  FINDING x{f['count']} (first: seed {f['seed']} input {f['index']}): "
                     f"{key}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entry", choices=[*sorted(entries.ENTRIES), "all"], required=True)
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "fuzz/out")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--rss-mib", type=int, default=2048)
    ap.add_argument("--only", type=int, help="run input ONLY in-process and show the outcome")
    args = ap.parse_args()
    names = sorted(entries.ENTRIES) if args.entry == "all" else [args.entry]
    if args.only is not None:
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                case = entries.make_case(name, args.seed, args.only, Path(tmp) / name)
                print(f"{name}: mutated {case.mutated}")
                print(run_one(name, args.seed, args.only, Path(tmp) / name))
        return 0
    found = False
    for name in names:
        st = campaign(name, args.runs, seed=args.seed, out=args.out, resume=args.resume,
                      timeout=args.timeout, rss_mib=args.rss_mib)
        print(report(st), flush=True)
        found = found or bool(st.findings)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
