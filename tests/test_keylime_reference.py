"""``ima check --policy`` against keylime's own verifier (``keylime.ima.ima.
process_measurement_list``), entry by entry, on random lists and policies and on the corpus lists.

keylime's checker imports ``gpg`` (Debian's python3-gpg, not on PyPI) for a code path the runtime
policy check never takes, so an empty stand-in is registered when the real one is missing."""

from __future__ import annotations

import json
import logging
import random
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import corpus_dir, need_module
from ima_helpers import make_ima

from kimagekit import ima_ascii, ima_log
from kimagekit import keylime_policy as kp
from kimagekit.errors import KimageError

# keylime's failure event -> kimagekit's status for it
EVENTS = {"ima.validation.ima-ng.not_in_allowlist": "not in policy",
          "ima.validation.ima-ng.runtime_policy_hash": "digest not allowed",
          "ima.parser.entry": "unsupported template", "ima.validation.tomtou": "violation",
          "ima.validation.ima_hash": "altered", "ima.invalid_key": "unsupported key"}
PATHS = ["/usr/bin/a", "/usr/bin/b", "/tmp/x", "/tmpfile", "/etc/p", "boot_aggregate",
         "/opt/q.so", ".ima", "kexec-cmdline", "/var/lib/z"]
ALGOS = ["sha1", "sha256", "sha512"]


@pytest.fixture(scope="module")
def keylime() -> Iterator[Any]:
    try:
        import gpg  # noqa: F401
    except ImportError:
        sys.modules["gpg"] = types.ModuleType("gpg")
    logging.disable(logging.CRITICAL)  # keylime logs every failure it finds
    try:
        yield need_module("keylime.ima.ima")
    finally:
        logging.disable(logging.NOTSET)


def _keylime_says(keylime: Any, lines: list[str], policy: dict[str, Any],
                  bank: str) -> list[str]:
    from keylime.common.algorithms import Hash

    # keylime mutates the policy it is given: a fresh copy for each call
    _, failure = keylime.process_measurement_list(None, lines, json.loads(json.dumps(policy)),
                                                  hash_alg=Hash(bank))
    return sorted(e.event_id for e in failure.events)


def _agrees(events: list[str], v: kp.EntryVerdict) -> bool:
    theirs = ({EVENTS[e] for e in events if e in EVENTS}, "ima.validation.ima_pcr" in events)
    status = "unsupported template" if v.status == "unparsable line" else v.status
    ours = (set() if status in kp.PASSING else {status},
            not v.pcr_ok and status != "unsupported template")
    return theirs == ours and (not events) == v.ok


def _random_entry(rng: random.Random, keys: list[bytes]) -> bytes:
    path, algo = rng.choice(PATHS), rng.choice(ALGOS)
    fd = bytes([rng.randrange(3)]) * make_ima.BANKS[algo]
    template = rng.choice(["ima-ng"] * 4 + ["ima-sig"] * 2 + ["ima-buf"] * 2
                          + ["ima", "ima-ngv2", "d-ng|n-ng"])
    pcr = 10 if rng.random() < 0.9 else 11
    violation = rng.random() < 0.05
    if template == "ima":
        fields = [fd[:20].ljust(20, b"\0"), path.encode()]
    elif template == "ima-ngv2":
        fields = [b"ima:" + make_ima.d_ng(algo, fd), make_ima.n_ng(path)]
    elif template == "ima-sig":
        sig = rng.choice([b"", b"\x03\x02\x04\xaa\xbb\xcc\xdd\x00\x04" + b"\x11" * 4])
        fields = [make_ima.d_ng(algo, fd), make_ima.n_ng(path), sig]
    elif template == "ima-buf":
        buf = rng.choice([b"console=hvc0", b"\x01\x02", *keys])
        fields = [make_ima.d_ng(algo, fd), make_ima.n_ng(path), buf]
    else:
        fields = [make_ima.d_ng(algo, fd), make_ima.n_ng(path)]
    raw = make_ima.entry(pcr, template, fields, "<", "sha1", violation)
    if rng.random() < 0.04 and not violation:  # an altered entry: one template digest bit
        raw = raw[:4] + bytes([raw[4] ^ 1]) + raw[5:]
    return raw


def _random_policy(rng: random.Random) -> dict[str, Any]:
    def hexes() -> list[str]:
        return sorted({(bytes([rng.randrange(3)]) * make_ima.BANKS[rng.choice(ALGOS)]).hex()
                       for _ in range(rng.randrange(1, 3))})
    excludes = [r"/tmp", r"/usr/bin/a$", r".*\.so", r"/etc/.*", r"boot_", r"/var"]
    return {"meta": {"version": 1, "generator": 0}, "release": 0,
            "digests": {p: hexes() for p in rng.sample(PATHS, rng.randrange(len(PATHS)))},
            "excludes": rng.sample(excludes, rng.randrange(3)),
            "keyrings": {p: hexes() for p in rng.sample([".ima", "/usr/bin/a"], rng.randrange(3))},
            "ima": {"ignored_keyrings": rng.choice([[], [], ["*"], [".ima"]]),
                    "log_hash_alg": "sha1", "dm_policy": None},
            "ima-buf": {p: hexes() for p in rng.sample(["kexec-cmdline", "/opt/q.so"],
                                                         rng.randrange(3))},
            "verification-keys": ""}


def _public_keys() -> list[bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    der, pem = serialization.Encoding.DER, serialization.Encoding.PEM
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return [rsa.generate_private_key(65537, 2048).public_key().public_bytes(der, spki),
            ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(pem, spki),
            ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(der, spki)]


def test_random_lists_and_policies_judged_as_keylime_judges(keylime: Any) -> None:
    rng = random.Random(1)
    keys = _public_keys()
    seen: set[str] = set()
    checked = 0
    for _ in range(150):
        data = b"".join(_random_entry(rng, keys) for _ in range(rng.randrange(1, 15)))
        entries = list(ima_log.iter_entries(data))
        lines = "".join(ima_ascii.render(entries)).splitlines()
        policy = _random_policy(rng)
        altered = [m.index for m in ima_log.analyse(data).mismatches]
        report = kp.judge_entries(entries, kp.parse_policy(json.dumps(policy).encode()),
                                  altered=altered, bank="sha1")
        for line, v in zip(lines, report.verdicts, strict=True):
            events = _keylime_says(keylime, [line], policy, "sha1")
            assert _agrees(events, v), (line, events, v.status, v.pcr_ok)
            seen.add(v.status)
            checked += 1
        whole = _keylime_says(keylime, lines, policy, "sha1")
        assert (not whole) == report.ok, (whole, report.counts)
    assert checked > 1000
    # the draw reaches every verdict keylime can give on these templates
    assert seen >= {"allowed", "excluded", "ignored keyring", "not in policy",
                    "digest not allowed", "violation", "altered", "unsupported template"}


def test_corpus_lists_judged_as_keylime_judges(keylime: Any) -> None:
    corpus = corpus_dir()
    if corpus is None:
        pytest.skip("real-file corpus not found")
    rng = random.Random(7)
    lists = 0
    for f in sorted((corpus / "ima").glob("*/*")):
        if "licenses" in str(f) or f.suffix == ".txt" or not f.is_file():
            continue
        try:
            with ima_log.open_list(f) as (fmt, view):
                entries = list(ima_log.iter_entries(view, fmt))
                altered = [m.index for m in ima_log.analyse(view, fmt).mismatches]
            lines = "".join(ima_ascii.render(entries)).splitlines()
        except KimageError:
            continue  # lists kimagekit refuses are tested elsewhere
        raw_lines = None
        if fmt.kind == "ascii":
            text = Path(f).read_bytes()
            lines = [ln for ln in text.decode("latin-1").splitlines() if ln.strip()]
            raw_lines = [ln for _, ln in ima_ascii.entry_lines(text)]
        bank = fmt.bank if fmt.bank in ("sha1", "sha256", "sha384", "sha512") else "sha1"
        digests: dict[str, list[str]] = {}
        for e in entries:
            try:
                path, fd = e.path, e.file_digest
            except KimageError:
                continue
            if path is None or fd is None:
                continue
            r = rng.random()
            if r < 0.5:  # half allowed, a fifth with a wrong digest, the rest not in policy
                digests.setdefault(path, []).append(fd.hex)
            elif r < 0.7:
                digests.setdefault(path, []).append("ab" * 32)
        policy = {"meta": {"version": 1, "generator": 0}, "release": 0, "digests": digests,
                  "excludes": [r"/usr/lib/.*\.so", r"/tmp", r"/etc/ld"], "keyrings": {},
                  "ima": {"ignored_keyrings": [], "log_hash_alg": bank, "dm_policy": None},
                  "ima-buf": {}, "verification-keys": ""}
        report = kp.judge_entries(entries, kp.parse_policy(json.dumps(policy).encode()),
                                  altered=altered, bank=bank, lines=raw_lines)
        for line, v in zip(lines, report.verdicts, strict=True):
            events = _keylime_says(keylime, [line], policy, bank)
            assert _agrees(events, v), (f.name, line[:100], events, v.status)
        lists += 1
    assert lists >= 10


def test_a_file_name_with_a_space_in_an_ascii_line(keylime: Any) -> None:
    # keylime cuts an ima-sig or ima-buf line's name at a space (the rest becomes the next
    # field): kimagekit fails the line as keylime does, rather than judge the whole name as
    # allowed; an ima-ng line keeps the whole name in both
    fd = b"\x01" * 32
    raws = [make_ima.entry(10, t, [make_ima.d_ng("sha256", fd), make_ima.n_ng("/a b"), *extra])
            for t, extra in (("ima-ng", []), ("ima-sig", [b""]), ("ima-buf", [b"x"]))]
    entries = list(ima_log.iter_entries(b"".join(raws)))
    text = "".join(ima_ascii.render(entries)).encode()
    lines = [ln for _, ln in ima_ascii.entry_lines(text)]
    policy = {"meta": {"version": 1, "generator": 0}, "release": 0,
              "digests": {"/a b": [fd.hex()]}, "excludes": [], "keyrings": {},
              "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": None},
              "ima-buf": {"/a b": [fd.hex()]}, "verification-keys": ""}
    report = kp.judge_entries(entries, kp.parse_policy(json.dumps(policy).encode()),
                              altered=[], bank="sha1", lines=lines)
    assert [v.status for v in report.verdicts] == ["allowed", "unparsable line",
                                                   "unparsable line"]
    first, *cut = text.decode().splitlines()
    assert _agrees(_keylime_says(keylime, [first], policy, "sha1"), report.verdicts[0])
    # keylime fails both: the ima-sig line's template digest, recomputed from the fields it
    # cut; the ima-buf line's "b x" buffer, not hex. kimagekit says why (the line does not
    # split as keylime splits it)
    assert [_keylime_says(keylime, [line], policy, "sha1") for line in cut] == [
        ["ima.validation.ima_hash"], ["ima.parser.entry"]]
    assert not any(v.ok for v in report.verdicts[1:])
