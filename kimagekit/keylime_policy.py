"""keylime runtime policies: read the JSON ``keylime-policy create runtime`` (formerly
``keylime_create_policy``) writes, and judge each entry of a measurement list by it as keylime's
verifier does (``keylime/ima/ima.py`` and ``keylime/ima/ast.py``, release 7.x):

- keylime parses only the ``ima``, ``ima-ng``, ``ima-sig`` and ``ima-buf`` templates; any other
  entry is a parser failure.
- An entry of a PCR other than 10 fails (``ima_pcr``), and is still judged by the policy.
- A violation (all-zero template digest) fails as a ToMToU event, without a policy lookup; an
  entry whose template digest does not match its data fails (``ima_hash``).
- ``excludes`` are regular expressions joined as ``(re1)|(re2)|...`` and matched with Python's
  ``re.match``: from the start of the path, not necessarily to its end (``/tmp`` excludes
  ``/tmpfile``). They are tried before the lookup, so an excluded path passes whatever its digest.
- A path missing from ``digests`` is ``not in policy``; a digest whose hex is not among the path's
  is ``digest not allowed``. Only the hex is compared: the algorithm prefix of ``d-ng`` is not
  (a policy lists bare hex, of any algorithm). ``boot_aggregate`` is a path like any other.
- ``ima-sig`` entries are judged like ``ima-ng``: keylime accepts a valid signature by a key of
  its keyrings first, and kimagekit does not take keylime's keyrings (``verification-keys``, keys
  measured into ``.ima``), so such an entry can fail here where keylime passes it; never the
  reverse.
- ``ima-buf`` entries whose buffer is a key (an X.509 certificate, a public or a private key,
  DER or PEM) are looked up in ``keyrings`` by the keyring's name, unless ``ima.ignored_keyrings``
  names it or ``*``; an RSA or EC key only (another key type fails). Other buffers are looked up
  in ``ima-buf`` by their name.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kimagekit.errors import ParseError, UsageError
from kimagekit.fileio import read_input
from kimagekit.formats.ima import BANK_BY_SIZE
from kimagekit.ima_binary import ImaEntry
from kimagekit.ima_fields import FILE_DIGEST_FIELDS, file_digest_of

__all__ = [
    "FAILING", "IMA_PCR", "PASSING", "SUPPORTED_TEMPLATES", "EntryVerdict", "PolicyReport",
    "RuntimePolicy", "Status", "judge_entries", "judge_entry", "load_policy", "parse_policy",
]

#: The PCR keylime expects IMA entries in (``config.IMA_PCR``).
IMA_PCR = 10
SUPPORTED_TEMPLATES = ("ima", "ima-ng", "ima-sig", "ima-buf")
Status = Literal["allowed", "excluded", "ignored keyring", "not in policy", "digest not allowed",
                 "violation", "altered", "unsupported template", "unparsable line",
                 "unsupported key"]
PASSING: tuple[Status, ...] = ("allowed", "excluded", "ignored keyring")
FAILING: tuple[Status, ...] = ("not in policy", "digest not allowed", "violation", "altered",
                               "unsupported template", "unparsable line", "unsupported key")
#: Fields keylime splits the rest of an ASCII line into, per template (``ast.py``).
_KEYLIME_TOKENS = {"ima": 2, "ima-ng": 2, "ima-sig": 3, "ima-buf": 3}
_HEX = re.compile(r"[0-9a-f]{40,128}\Z")  # keylime's schema: lowercase, 20 to 64 bytes
_TOP = ("meta", "release", "digests", "excludes", "keyrings", "ima", "ima-buf",
        "verification-keys")
_LOG_ALGS = ("sha1", "sha256", "sha384", "sha512")


@dataclass(frozen=True)
class RuntimePolicy:
    """What of a keylime runtime policy judges entries (``verification-keys`` are kept only to
    say that signatures are not checked)."""

    version: int
    digests: Mapping[str, frozenset[str]]
    excludes: tuple[str, ...]
    keyrings: Mapping[str, frozenset[str]]
    ima_buf: Mapping[str, frozenset[str]]
    ignored_keyrings: tuple[str, ...]
    log_hash_alg: str
    verification_keys: bool
    exclude_re: re.Pattern[str] | None = field(default=None, repr=False)

    def excluded(self, path: str) -> bool:
        return self.exclude_re is not None and self.exclude_re.match(path) is not None


def load_policy(path: str | os.PathLike[str]) -> RuntimePolicy:
    """A policy file (``-`` is stdin), checked as keylime's verifier checks one on upload."""
    return parse_policy(read_input(path, "--policy"))


def parse_policy(raw: bytes, where: str = "--policy") -> RuntimePolicy:
    """A policy from its JSON; a UsageError naming the member that keylime's schema refuses."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where}: not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: a keylime runtime policy is a JSON object")
    if "payload" in doc:
        raise UsageError(f"{where}: a DSSE envelope (a signed policy): kimagekit does not "
                         "verify DSSE signatures; give the policy inside it")
    missing = [k for k in _TOP if k not in doc]
    if missing:
        raise UsageError(f"{where}: not a keylime runtime policy: no {', '.join(missing)} "
                         "(as keylime-policy create runtime writes them)")
    meta = doc["meta"]
    if not isinstance(meta, dict) or not _is_int(meta.get("version")) or meta["version"] < 0:
        raise UsageError(f"{where}: meta.version must be a non-negative integer")
    if meta["version"] != 1:
        raise UsageError(f"{where}: meta.version {meta['version']}: kimagekit reads version 1 "
                         "(keylime 7's RUNTIME_POLICY_CURRENT_VERSION)")
    ima = doc["ima"]
    if not isinstance(ima, dict) or not all(k in ima for k in ("ignored_keyrings",
                                                               "log_hash_alg", "dm_policy")):
        raise UsageError(f"{where}: ima must hold ignored_keyrings, log_hash_alg and dm_policy")
    if ima["log_hash_alg"] not in _LOG_ALGS:
        raise UsageError(f"{where}: ima.log_hash_alg {ima['log_hash_alg']!r}: one of "
                         f"{', '.join(_LOG_ALGS)}")
    if ima["dm_policy"] is not None:
        raise UsageError(f"{where}: ima.dm_policy must be null (keylime's schema)")
    ignored = _strings(ima["ignored_keyrings"], f"{where}: ima.ignored_keyrings")
    excludes = _strings(doc["excludes"], f"{where}: excludes")
    if not isinstance(doc["verification-keys"], str):
        raise UsageError(f"{where}: verification-keys must be a string")
    exclude_re = None
    if excludes:
        combined = "(" + ")|(".join(excludes) + ")"  # as keylime joins them
        try:
            exclude_re = re.compile(combined)
        except re.error as exc:
            raise UsageError(f"{where}: excludes: not a regular expression once joined as "
                             f"keylime joins them ({exc}): {combined[:200]!r}") from exc
    return RuntimePolicy(
        version=meta["version"],
        digests=_digests(doc["digests"], f"{where}: digests"),
        excludes=tuple(excludes),
        keyrings=_digests(doc["keyrings"], f"{where}: keyrings"),
        ima_buf=_digests(doc["ima-buf"], f"{where}: ima-buf"),
        ignored_keyrings=tuple(ignored),
        log_hash_alg=ima["log_hash_alg"],
        verification_keys=bool(doc["verification-keys"]),
        exclude_re=exclude_re,
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _strings(v: Any, where: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise UsageError(f"{where} must be a list of strings")
    return v


def _digests(v: Any, where: str) -> dict[str, frozenset[str]]:
    if not isinstance(v, dict):
        raise UsageError(f"{where} must map names to lists of hex digests")
    out = {}
    for name, hexes in v.items():
        if not isinstance(hexes, list) or not hexes:
            raise UsageError(f"{where}[{name!r}] must be a non-empty list of hex digests")
        for h in hexes:
            if not isinstance(h, str) or not _HEX.match(h):
                raise UsageError(f"{where}[{name!r}]: {str(h)[:140]!r} is not lowercase hex "
                                 "of 40 to 128 digits (keylime's schema)")
        out[name] = frozenset(hexes)
    return out


@dataclass(frozen=True)
class EntryVerdict:
    """One entry against the policy: ``status`` (see :data:`Status`), and ``pcr_ok`` False when
    the entry is not in PCR 10 (a failure of its own, whatever the status)."""

    index: int
    offset: int
    pcr: int
    template_name: str
    path: str | None
    digest: str | None  # the measured digest as the ASCII list shows it (``sha256:hex``)
    status: Status
    pcr_ok: bool
    #: An ``ima-sig`` entry carrying a signature (keylime tries it before the digests).
    signed: bool = False

    @property
    def ok(self) -> bool:
        return self.status in PASSING and self.pcr_ok


def judge_entry(e: ImaEntry, policy: RuntimePolicy, altered: bool = False,
                line: bytes | None = None) -> EntryVerdict:
    """One entry as keylime judges it; ``altered``: its template digest was found not to match
    its data (the caller rechecks digests in one pass); ``line``: the entry's text, when the
    list is ASCII (keylime parses that text, and refuses a line that lacks a field's separator,
    e.g. an ``ima-sig`` line without the space before its empty signature, which kimagekit and
    the kernel's writer read as an empty field)."""
    name = e.template_name
    pcr_ok = e.pcr == IMA_PCR
    try:
        fields = e.fields
    except ParseError:
        fields = ()
    path = next((f.shown for f in fields if f.id in ("n", "n-ng")), None)
    digest = next((f.shown for f in fields if f.id in FILE_DIGEST_FIELDS), None)
    if name not in SUPPORTED_TEMPLATES:
        return _verdict(e, path, digest, "unsupported template", pcr_ok)
    if line is not None:
        rest = line.split(b" ", 3)[3:]
        tokens = rest[0].split(b" ", _KEYLIME_TOKENS[name] - 1) if rest else []
        # a file name with a space: keylime cuts it there (and reads the rest as the next
        # field), so it judges another name, or fails the line; never the name read here
        cut = len(tokens) == _KEYLIME_TOKENS[name] and path is not None \
            and tokens[1] != path.encode("latin-1")
        if len(tokens) < _KEYLIME_TOKENS[name] or cut:
            return _verdict(e, path, digest, "unparsable line", pcr_ok)
    fd = file_digest_of(fields)
    if e.is_violation:
        return _verdict(e, path, digest, "violation", pcr_ok)
    if altered:
        return _verdict(e, path, digest, "altered", pcr_ok)
    assert path is not None and fd is not None  # the four templates have both
    if name == "ima-buf":
        buf = next(f.data for f in fields if f.id == "buf")
        key = _key_kind(buf)
        if key == "unsupported":
            return _verdict(e, path, digest, "unsupported key", pcr_ok)
        if key == "key":
            if "*" in policy.ignored_keyrings or path in policy.ignored_keyrings:
                return _verdict(e, path, digest, "ignored keyring", pcr_ok)
            return _verdict(e, path, digest, _lookup(policy, policy.keyrings, path, fd.hex),
                            pcr_ok)
        return _verdict(e, path, digest, _lookup(policy, policy.ima_buf, path, fd.hex), pcr_ok)
    signed = name == "ima-sig" and any(f.id == "sig" and f.data for f in fields)
    return _verdict(e, path, digest, _lookup(policy, policy.digests, path, fd.hex), pcr_ok,
                    signed)


def _verdict(e: ImaEntry, path: str | None, digest: str | None, status: Status,
             pcr_ok: bool, signed: bool = False) -> EntryVerdict:
    return EntryVerdict(e.index, e.offset, e.pcr, e.template_name, path, digest, status, pcr_ok,
                        signed)


def _lookup(policy: RuntimePolicy, table: Mapping[str, frozenset[str]], path: str,
            hexdigest: str) -> Status:
    if policy.excluded(path):
        return "excluded"
    allowed = table.get(path)
    if allowed is None:
        return "not in policy"
    return "allowed" if hexdigest in allowed else "digest not allowed"


def _key_kind(buf: bytes) -> Literal["key", "unsupported", "none"]:
    """Does keylime's ``get_pubkey`` take ``buf`` for a key (and of a type it supports)?"""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    loaders = (lambda b: x509.load_der_x509_certificate(b).public_key(),
               lambda b: x509.load_pem_x509_certificate(b).public_key(),
               serialization.load_der_public_key,
               serialization.load_pem_public_key,
               lambda b: serialization.load_der_private_key(b, None).public_key(),
               lambda b: serialization.load_pem_private_key(b, None).public_key())
    for load in loaders:
        try:
            key = load(buf)
        except Exception:  # as keylime: any failure means "not in this form"
            continue
        return "key" if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) \
            else "unsupported"
    return "none"


@dataclass(frozen=True)
class PolicyReport:
    """A list against a policy: a verdict per entry, counts per status, and list-level
    problems (a template digest algorithm keylime would not recompute them in)."""

    verdicts: tuple[EntryVerdict, ...]
    counts: dict[str, int]
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what kimagekit does not check that keylime would

    @property
    def failed(self) -> int:
        return sum(1 for v in self.verdicts if not v.ok)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.problems


def judge_entries(entries: Iterable[ImaEntry], policy: RuntimePolicy,
                  altered: Iterable[int] = (), bank: str | None = None,
                  lines: Iterable[bytes] | None = None) -> PolicyReport:
    """Every entry judged (``altered``: indexes of entries whose template digest is wrong;
    ``bank``: the list's template digest bank, held to the policy's ``ima.log_hash_alg``;
    ``lines``: an ASCII list's entry lines, in order)."""
    bad = set(altered)
    if lines is None:
        verdicts = tuple(judge_entry(e, policy, e.index in bad) for e in entries)
    else:
        verdicts = tuple(judge_entry(e, policy, e.index in bad, line)
                         for e, line in zip(entries, lines, strict=True))
    counts = Counter(v.status for v in verdicts)
    wrong_pcr = sum(1 for v in verdicts if not v.pcr_ok)
    problems = []
    if bank is not None and bank != policy.log_hash_alg and bank in BANK_BY_SIZE.values():
        problems.append(f"the policy's ima.log_hash_alg is {policy.log_hash_alg} but the list's "
                        f"template digests are {bank}: keylime recomputes them in "
                        f"{policy.log_hash_alg} and finds every one wrong")
    notes = []
    by_sig = sum(1 for v in verdicts if v.signed and v.status in ("not in policy",
                                                                  "digest not allowed"))
    if by_sig:
        notes.append(f"{by_sig} signed ima-sig entr{'y' if by_sig == 1 else 'ies'} failed by "
                     "digest: keylime accepts such an entry when its signature verifies with a "
                     "key of its keyrings (verification-keys, keys measured into .ima), which "
                     "kimagekit does not take")
    return PolicyReport(verdicts, {**{s: counts[s] for s in (*PASSING, *FAILING) if counts[s]},
                                   **({"wrong pcr": wrong_pcr} if wrong_pcr else {})},
                        tuple(problems), tuple(notes))
