"""Replaying a list into PCR values, and judging the result against a quote.

What each bank is extended with, per entry (``method``):

- ``per-bank`` (the default): the digest the TPM was extended with. In the list's own bank (the
  size of its stored digests: sha1 for the classic list and the kexec buffer, sha256/384/512 for
  a ``_<algo>`` list) that is the stored template digest; the other banks' digests are not in the
  list, so they get the template hash recomputed in that bank, which is what the kernel extends.
- ``recomputed``: every bank, the own one included, gets the recomputed template hash.
- ``sha1-padded`` is replayed beside either on request (``legacy``; ``ima replay`` always asks),
  for the banks other than sha1: kernels
  before 5.8 extended every bank with the SHA-1 template digest zero-padded to the bank's size
  (the stored one in a SHA-1 list, else recomputed). evmctl tries it too.

A violation (all-zero stored digest) extends all-0xff bytes, the bank's size (0xff x 20 then
zeros under ``sha1-padded``). Template digests are rechecked on the side: an entry whose data no
longer hashes to its stored digest is reported as altered, whatever the PCRs say.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from kimagekit.errors import UsageError
from kimagekit.formats.ima import BANK_BY_SIZE, DIGEST_SIZES, TPM_DIGEST_SIZE
from kimagekit.hexrepr import hex_repr
from kimagekit.ima_binary import DigestMismatch, ImaEntry, ListFormat, entry_path, hash_factory

__all__ = [
    "METHODS", "PADDED", "Method", "PcrVerdict", "Record", "Replayed", "Status", "Tables",
    "TraceStep", "check_banks", "judge", "run",
]

Method = Literal["per-bank", "recomputed"]
METHODS: tuple[Method, ...] = ("per-bank", "recomputed")
PADDED = "sha1-padded"
Tables = dict[str, dict[int, bytes]]
#: (index, offset, pcr, stored digest, template name, hash input, template data)
Record = tuple[int, int, int, bytes, str, "bytes | memoryview", "bytes | memoryview"]


@dataclass(frozen=True)
class Replayed:
    """One pass over a list: counts, altered entries, PCR values, and where expectations were
    met."""

    entries: int
    violations: int
    templates: dict[str, int]
    mismatches: list[DigestMismatch]
    pcrs: Tables
    padded: Tables
    #: (bank, pcr, method or "sha1-padded") -> first entry index after which the PCR held the
    #: expected value.
    reached: dict[tuple[str, int, str], int] = field(default_factory=dict)
    #: PCR -> index of the last entry extending it (the PCRs the list touches).
    last: dict[int, int] = field(default_factory=dict)
    #: The bank whose digests the list stores (None for an unusual digest size).
    own: str | None = None
    #: With ``trace``: every entry's PCR value in each bank after it extended it.
    trace: tuple[TraceStep, ...] | None = None


@dataclass(frozen=True)
class TraceStep:
    """The PCR an entry extended and its value in each bank right after (``ima replay
    --trace``)."""

    index: int
    offset: int
    pcr: int
    template_name: str
    path: str | None
    values: dict[str, bytes]

    def __repr__(self) -> str:
        return hex_repr(self)


def check_banks(banks: Iterable[str]) -> None:
    """A UsageError for a bank that cannot be replayed here (unknown, or no SM3 in hashlib)."""
    for b in banks:
        hash_factory(b)


def run(records: Iterable[Record], fmt: ListFormat, banks: Sequence[str], *, check: bool = True,
        method: Method = "per-bank", expected: Mapping[str, Mapping[int, bytes]] | None = None,
        legacy: bool = False, trace: bool = False) -> Replayed:
    """Replay ``records`` into ``banks``; recheck each template digest against its stored one
    (``check``); note when each ``expected`` value is reached; with ``legacy``, also replay the
    non-SHA-1 banks as ``sha1-padded``; with ``trace``, keep each entry's PCR values."""
    if method not in METHODS:
        raise UsageError(f"replay method {method!r} is not one of {', '.join(METHODS)}")
    sha1 = hash_factory("sha1")
    stored_own = method == "per-bank"
    plan = []
    pcrs: Tables = {b: {} for b in banks}
    padded: Tables = {b: {} for b in banks if b != "sha1"} if legacy else {}
    for b in banks:
        h = hash_factory(b)  # refuses an unknown bank before anything is read
        size = DIGEST_SIZES[b]
        plan.append((b, h, size, pcrs[b], padded.get(b), bytes(size),
                     b"\xff" * size, (b"\xff" * TPM_DIGEST_SIZE).ljust(size, b"\0"),
                     expected.get(b) or None if expected else None))
    reached: dict[tuple[str, int, str], int] = {}
    last: dict[int, int] = {}
    mismatches: list[DigestMismatch] = []
    templates: defaultdict[str, int] = defaultdict(int)
    violations = count = 0
    size = -1
    zero = b""
    own: str | None = None
    own_hash = None
    steps: list[TraceStep] | None = [] if trace else None
    for index, offset, pcr, stored, name, blob, data in records:
        count = index + 1
        templates[name] += 1
        last[pcr] = index
        if len(stored) != size:  # once per list, but an ASCII list may mix sizes
            size = len(stored)
            zero = bytes(size)
            own = BANK_BY_SIZE.get(size)
            own_hash = hash_factory(own) if own is not None else None
        violation = stored == zero
        got = None
        if violation:
            violations += 1
        elif check and own_hash is not None:
            got = own_hash(blob).digest()
            if got != stored:
                entry = ImaEntry(pcr, stored, name, bytes(data), fmt.endian, index, offset)
                mismatches.append(DigestMismatch(index, offset, name, stored, got,
                                                 entry_path(entry)))
        sha1_digest: bytes | None = None
        for b, h, bsize, table, ptable, z, ff, pff, want in plan:
            if violation:
                d = ff
            elif b == own:
                d = stored if stored_own else (got or h(blob).digest())
            else:
                d = h(blob).digest()
                if b == "sha1":
                    sha1_digest = d
            value = table[pcr] = h(table.get(pcr, z) + d).digest()
            wanted = want.get(pcr) if want is not None else None
            if wanted is not None and value == wanted:
                reached.setdefault((b, pcr, method), index)
            if ptable is None:
                continue
            if violation:
                pd = pff
            else:
                if sha1_digest is None:
                    sha1_digest = stored if own == "sha1" else sha1(blob).digest()
                pd = sha1_digest.ljust(bsize, b"\0")
            pvalue = ptable[pcr] = h(ptable.get(pcr, z) + pd).digest()
            if wanted is not None and pvalue == wanted:
                reached.setdefault((b, pcr, PADDED), index)
        if steps is not None:
            entry = ImaEntry(pcr, stored, name, bytes(data), fmt.endian, index, offset)
            steps.append(TraceStep(index, offset, pcr, name, entry_path(entry),
                                   {b: pcrs[b][pcr] for b in banks}))
    return Replayed(count, violations, dict(templates), mismatches, pcrs, padded, reached, last,
                    BANK_BY_SIZE.get(fmt.digest_size), None if steps is None else tuple(steps))


Status = Literal["match", "prefix", "mismatch", "untouched"]


@dataclass(frozen=True)
class PcrVerdict:
    """One expected PCR value against the replay.

    ``match``: the whole list reproduces it; ``prefix``: the list reached it after entry
    ``reached_at`` and then went on (it grew after the quote); ``mismatch``: never reached;
    ``untouched``: the list never extends that PCR, so it says nothing about it (not compared).
    ``method`` says what the matching replay extended: ``stored`` (the list's own bank under
    ``per-bank``), ``recomputed`` or ``sha1-padded``.
    """

    bank: str
    pcr: int
    expected: bytes
    replayed: bytes | None
    status: Status
    method: str | None
    reached_at: int | None
    last_entry: int | None

    def __repr__(self) -> str:
        return hex_repr(self)


def judge(expected: Mapping[str, Mapping[int, bytes]], r: Replayed,
          method: Method = "per-bank") -> list[PcrVerdict]:
    """A verdict per expected value, in bank then PCR order."""
    out = []
    for bank, table in expected.items():
        for pcr, want in sorted(table.items()):
            last = r.last.get(pcr)
            if last is None:
                out.append(PcrVerdict(bank, pcr, want, None, "untouched", None, None, None))
                continue
            final = r.pcrs[bank][pcr]
            label = "stored" if method == "per-bank" and bank == r.own else "recomputed"
            pfinal = r.padded.get(bank, {}).get(pcr)
            if final == want:
                v = PcrVerdict(bank, pcr, want, final, "match", label,
                               r.reached.get((bank, pcr, method)), last)
            elif pfinal == want:
                v = PcrVerdict(bank, pcr, want, pfinal, "match", PADDED,
                               r.reached.get((bank, pcr, PADDED)), last)
            elif (bank, pcr, method) in r.reached:
                v = PcrVerdict(bank, pcr, want, final, "prefix", label,
                               r.reached[(bank, pcr, method)], last)
            elif (bank, pcr, PADDED) in r.reached:
                v = PcrVerdict(bank, pcr, want, pfinal, "prefix", PADDED,
                               r.reached[(bank, pcr, PADDED)], last)
            else:
                v = PcrVerdict(bank, pcr, want, final, "mismatch", None, None, last)
            out.append(v)
    return out
