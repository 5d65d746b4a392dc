"""Many lists at once: a per-file function run over several files, in order, on one process or on
a pool of them.

The per-file functions (:func:`kimagekit.ima_files.check_file`,
:func:`kimagekit.ima_files.replay_file`, :func:`check_with_keys`) are pure: they read their file
and return a frozen dataclass. They and :func:`attempt` are module-level, so a
``functools.partial`` of them pickles, and any executor can run them: the process pool of
:func:`run_all`, or Dask (the README's ``dask.bag`` recipe).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from kimagekit import ima_files
from kimagekit.errors import KimageError, about_file, input_named

__all__ = ["Checked", "Outcome", "Pathish", "attempt", "check_with_keys", "run_all"]

Pathish = str | os.PathLike[str]


@dataclass(frozen=True)
class Outcome:
    """One file's result: what the per-file function returned, or the error it raised (with the
    file named on it), never both."""

    file: str
    value: Any = None
    error: KimageError | None = None


def attempt(fn: Callable[[Pathish], Any], path: Pathish) -> Outcome:
    """``fn(path)`` as an :class:`Outcome`: a :class:`KimageError` is kept, not raised."""
    try:
        return Outcome(str(path), fn(path))
    except KimageError as err:
        return Outcome(str(path), error=about_file(err, path))


def run_all(fn: Callable[[Pathish], Any], paths: Sequence[Pathish],
            jobs: int = 1) -> Iterator[Outcome]:
    """:func:`attempt` on every path, yielded in the order of ``paths``; with ``jobs`` > 1 on
    that many worker processes."""
    if jobs <= 1 or len(paths) <= 1:
        for p in paths:
            yield attempt(fn, p)
        return
    from concurrent.futures import ProcessPoolExecutor  # only when there is a pool to run

    with ProcessPoolExecutor(max_workers=min(jobs, len(paths))) as pool:
        yield from pool.map(partial(attempt, fn), paths)


@dataclass(frozen=True)
class Checked:
    """``ima check`` of one file: the digest recheck, and the file signatures when keys were
    given."""

    result: ima_files.CheckResult
    signatures: tuple[Any, ...] | None = None  # kimagekit.sig.ima_sig.EntrySignature
    policy: Any = None  # kimagekit.keylime_policy.PolicyReport

    @property
    def ok(self) -> bool:
        return self.result.ok and (self.policy is None or self.policy.ok)


def check_with_keys(path: Pathish, keys: Sequence[Pathish] = (), policy: Any = None,
                    progress: Callable[[int], None] | None = None) -> Checked:
    """:func:`~kimagekit.ima_files.check_file`, and with ``keys`` each entry's file signature
    checked as evmctl does; with ``policy`` (a
    :class:`~kimagekit.keylime_policy.RuntimePolicy`) each entry judged as keylime does."""
    res = ima_files.check_file(path, progress)
    sigs = None
    if keys:
        # the X.509/PKCS#7 stack only when signatures are asked for
        from kimagekit.sig import ima_sig
        sigs = ima_sig.check_file(path, list(keys))
    report = None
    if policy is not None:
        from kimagekit import ima_ascii, ima_log, keylime_policy
        with input_named(path), ima_log.open_list(path) as (fmt, view):
            lines = None if fmt.kind != "ascii" else (
                line for _, line in ima_ascii.entry_lines(view))
            report = keylime_policy.judge_entries(
                ima_log.iter_entries(view, fmt), policy,
                altered=[m.index for m in res.report.mismatches], bank=fmt.bank, lines=lines)
    return Checked(res, sigs, report)
