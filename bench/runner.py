"""The shared benchmark runner: a Case is one operation timed against its reference.

Every measurement is a fresh child process. A command line (list) is spawned as is; a callable is
pickled and run by a fresh interpreter (so both sides pay the same interpreter start), or, when it
cannot be pickled (a lambda, a closure), in a forked child (its peak RSS then includes the pages
inherited from the runner: prefer module-level functions or functools.partial). CPU time
(user+sys) comes from os.wait4 of that child, peak RSS from GNU time around it where installed
(else from os.wait4, which also counts the runner's own pages), wall time from perf_counter.

Runs are paired: each round runs the kimagekit side and the reference side back to back (the
order alternates between rounds), after one unmeasured warm-up of each. The table reports medians
over the rounds; the ratio is the median of the per-round ratios (CPU and wall), so a burst of
load from another process hits both sides of a pair and mostly cancels.

Goals are small expressions joined by "," and all must hold, e.g. "cpu<=0.2x, rss<=64MiB":
``cpu`` / ``wall`` compare the ratio, ``rss`` the kimagekit side's peak RSS in MiB (``+file``
may follow a number: "rss<=16MiB+file" adds ``Case.file_size`` bytes); "wall<=5s" is a ceiling
in seconds on the kimagekit side's median, for cases with no reference. A bare "<=2x" is ``cpu``.
Anything else is printed as is and judged "?".
"""

from __future__ import annotations

import os
import pickle
import re
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20

#: how to start kimagekit from this checkout (the console script would add entry-point lookup)
KIMAGEKIT = [sys.executable, "-m", "kimagekit"]

Side = list[str] | Callable[[], None]

_QUICK = False


def quick() -> bool:
    """True under ``run_all.py --quick``: cases() may pick smaller inputs."""
    return _QUICK


def set_quick(value: bool) -> None:
    global _QUICK  # noqa: PLW0603 - one switch read by every cmp module's cases()
    _QUICK = value


@dataclass(frozen=True)
class Case:
    name: str
    kimagekit: Side
    reference: Side | None
    goal: str = ""
    setup: Callable[[], None] | None = None
    #: run after every measured kimagekit run (e.g. compare outputs); raise to fail the case
    check: Callable[[], None] | None = None
    #: run once after the case (delete big inputs)
    teardown: Callable[[], None] | None = None
    #: exit statuses that count as success, for both sides
    ok_codes: tuple[int, ...] = (0,)
    #: the input's size in bytes, for "rss<=NMiB+file" goals
    file_size: int = 0
    #: extra environment for both sides (PYTHONPATH is always the checkout)
    env: dict[str, str] = field(default_factory=dict)
    #: run before every measured run of either side (e.g. restore an image patched in place);
    #: not timed
    before_each: Callable[[], None] | None = None


@dataclass(frozen=True)
class Sample:
    cpu: float
    wall: float
    rss: int  # bytes


@dataclass(frozen=True)
class Result:
    case: Case
    module: str
    kimagekit: list[Sample]
    reference: list[Sample]
    error: str = ""

    def median(self, side: str, what: str) -> float:
        samples = self.kimagekit if side == "k" else self.reference
        return statistics.median(getattr(s, what) for s in samples) if samples else float("nan")

    def ratio(self, what: str) -> float:
        pairs = zip(self.kimagekit, self.reference, strict=False)
        ratios = [getattr(k, what) / max(getattr(r, what), 1e-6) for k, r in pairs]
        return statistics.median(ratios) if ratios else float("nan")

    def peak_rss(self, side: str) -> int:
        samples = self.kimagekit if side == "k" else self.reference
        return max((s.rss for s in samples), default=0)


class BenchError(Exception):
    pass


_CHILD = (
    "import pickle, sys\n"
    "sys.path.insert(0, sys.argv[2])\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    fn = pickle.load(f)\n"
    "fn()\n"
)


def _env(case: Case) -> dict[str, str]:
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + old if old else "")
    env.update(case.env)
    return env


#: GNU time, when present, reports the child's own peak RSS: os.wait4's ru_maxrss of a child
#: spawned from this process also counts the runner's pages it shared until exec.
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def _spawn(argv: Sequence[str], env: dict[str, str], err_path: str,
           rss_path: str | None = None) -> int:
    if GNU_TIME is not None and rss_path is not None:
        argv = [GNU_TIME, "-q", "-f", "%M", "-o", rss_path, *argv]
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, err_path, os.O_WRONLY | os.O_TRUNC, 0),
    ]
    return os.posix_spawnp(argv[0], list(argv), env, file_actions=actions)


def _fork(fn: Callable[[], None], err_path: str) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            err = os.open(err_path, os.O_WRONLY | os.O_TRUNC)
            os.dup2(err, 2)
            fn()
        except BaseException:  # report anything, never return into the runner
            traceback.print_exc()
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    return pid


def run_once(side: Side, case: Case, work: Path) -> Sample:
    """One measured run of one side in a fresh child process."""
    err_path = str(work / "stderr")
    Path(err_path).write_bytes(b"")
    if case.before_each is not None:
        case.before_each()
    rss_path = str(work / "rss")
    Path(rss_path).write_bytes(b"")
    start = time.perf_counter()
    if isinstance(side, list):
        pid = _spawn(side, _env(case), err_path, rss_path)
        what = " ".join(side)
    else:
        what = getattr(side, "__qualname__", repr(side))
        try:
            blob = pickle.dumps(side)
        except (pickle.PicklingError, AttributeError, TypeError):
            pid = _fork(side, err_path)
        else:
            fn_path = work / "callable.pickle"
            fn_path.write_bytes(blob)
            pid = _spawn([sys.executable, "-c", _CHILD, str(fn_path), str(ROOT)], _env(case),
                         err_path, rss_path)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in case.ok_codes:
        tail = Path(err_path).read_text(errors="replace").strip().splitlines()[-3:]
        raise BenchError(f"{what}: exit {code}: " + " | ".join(tail))
    reported = Path(rss_path).read_text().strip()
    rss_kib = int(reported) if reported.isdigit() else usage.ru_maxrss
    return Sample(usage.ru_utime + usage.ru_stime, wall, rss_kib * 1024)


def measure(case: Case, module: str, rounds: int) -> Result:
    """Warm up each side once, then ``rounds`` paired runs (order alternating)."""
    ks: list[Sample] = []
    rs: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="kbench-run") as tmp:
        work = Path(tmp)
        try:
            if case.setup is not None:
                case.setup()
            sides: list[tuple[Side, list[Sample]]] = [(case.kimagekit, ks)]
            if case.reference is not None:
                sides.append((case.reference, rs))
            for side, _ in sides:
                run_once(side, case, work)
                if side is case.kimagekit and case.check is not None:
                    case.check()
            for i in range(rounds):
                order = sides if i % 2 == 0 else sides[::-1]
                for side, out in order:
                    out.append(run_once(side, case, work))
                    if side is case.kimagekit and case.check is not None:
                        case.check()
        except Exception as exc:  # one failing case must not stop the table
            return Result(case, module, ks, rs, error=f"{type(exc).__name__}: {exc}")
        finally:
            if case.teardown is not None:
                case.teardown()
    return Result(case, module, ks, rs)


_CLAUSE = re.compile(
    r"^\s*(?:(cpu|wall|rss)\s*)?<=\s*([0-9.]+)\s*(x|MiB|s)?\s*(\+\s*file)?\s*$")


def judge(result: Result) -> str:
    """'yes', 'NO' or '?' for the case's goal."""
    goal = result.case.goal.strip()
    if not goal or result.error:
        return "?"
    verdicts: list[bool] = []
    for clause in goal.split(","):
        m = _CLAUSE.match(clause)
        if m is None:
            return "?"
        metric, num, unit, plus_file = m.group(1) or "cpu", float(m.group(2)), *m.group(3, 4)
        if metric == "rss":
            if unit not in (None, "MiB"):
                return "?"
            limit = num * MiB + (result.case.file_size if plus_file else 0)
            verdicts.append(result.peak_rss("k") <= limit)
        elif unit == "s":  # a ceiling in seconds on the kimagekit side's median
            verdicts.append(result.median("k", metric) <= num)
        else:
            if not result.reference or unit not in (None, "x"):
                return "?"
            verdicts.append(result.ratio(metric) <= num)
    return "yes" if all(verdicts) else "NO"


HEADER = ("operation", "kimagekit cpu / wall", "reference cpu / wall", "ratio cpu / wall",
          "goal", "met?", "peak RSS k / ref")


def row(result: Result) -> tuple[str, ...]:
    c = result.case
    if result.error:
        return (c.name, "error", result.error, "", c.goal, "?", "")
    k = f"{result.median('k', 'cpu'):.3f} s / {result.median('k', 'wall'):.3f} s"
    if result.reference:
        r = f"{result.median('r', 'cpu'):.3f} s / {result.median('r', 'wall'):.3f} s"
        ratio = f"{result.ratio('cpu'):.2f}x / {result.ratio('wall'):.2f}x"
        rss = f"{result.peak_rss('k') / MiB:.1f} / {result.peak_rss('r') / MiB:.1f} MiB"
    else:
        r, ratio = "-", "-"
        rss = f"{result.peak_rss('k') / MiB:.1f} MiB / -"
    return (c.name, k, r, ratio, c.goal or "-", judge(result), rss)


def text_table(rows: Sequence[tuple[str, ...]]) -> str:
    all_rows = [HEADER, *rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in all_rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: Sequence[tuple[str, ...]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(HEADER), line(["---"] * len(HEADER)), *(line(r) for r in rows)])
