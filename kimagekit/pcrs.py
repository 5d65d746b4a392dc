"""Expected PCR values: from ``--expect PCR:BANK=HEX``, evmctl's ``PCR-NN: hex`` files, the
``PCR NN: hex bytes`` lines of TPM tools, or JSON; and comparing them with a replay."""

from __future__ import annotations

import json
import re
from pathlib import Path

from kimagekit.errors import UsageError
from kimagekit.fileio import read_input
from kimagekit.formats.ima import BANK_BY_SIZE, DIGEST_SIZES

__all__ = ["Expected", "parse_expect", "parse_pcr_file"]

Expected = dict[str, dict[int, bytes]]

_EXPECT = re.compile(r"(\d+):([a-z0-9_]+)=([0-9a-fA-F]+)\Z")
_LINE = re.compile(r"\s*PCR[- ]?(\d+)\s*:\s*([0-9a-fA-F ]+?)\s*\Z")


def _digest(text: str, bank: str | None, where: str) -> tuple[str, bytes]:
    try:
        value = bytes.fromhex(text.replace(" ", ""))
    except ValueError as exc:
        raise UsageError(f"{where}: {text!r} is not hex") from exc
    if bank is None:
        bank = BANK_BY_SIZE.get(len(value))
        if bank is None:
            raise UsageError(f"{where}: a {len(value)}-byte value matches no bank")
    if DIGEST_SIZES.get(bank) != len(value):
        raise UsageError(f"{where}: {bank} values have {DIGEST_SIZES.get(bank, '?')} bytes, "
                         f"got {len(value)}")
    return bank, value


def parse_expect(spec: str) -> tuple[str, int, bytes]:
    """``10:sha256=HEX`` -> (bank, pcr, value)."""
    m = _EXPECT.match(spec.strip())
    if m is None:
        raise UsageError(f"--expect {spec!r}: use PCR:BANK=HEX, e.g. 10:sha256=0a1b...")
    pcr, bank, hexval = int(m.group(1)), m.group(2), m.group(3)
    if bank not in DIGEST_SIZES:
        raise UsageError(f"--expect {spec!r}: unknown bank {bank!r}")
    bank, value = _digest(hexval, bank, "--expect")
    return bank, pcr, value


def parse_pcr_file(path: Path) -> Expected:
    """Expected values from a file. ``BANK,PATH`` (as evmctl takes it) fixes the bank; otherwise
    each value's size says which bank it belongs to."""
    bank: str | None = None
    text_path = str(path)
    if "," in text_path and not Path(text_path).exists():
        bank, _, text_path = text_path.partition(",")
        if bank not in DIGEST_SIZES:
            raise UsageError(f"--pcrs: unknown bank {bank!r}")
    raw = read_input(text_path, "--pcrs")  # names the file and why on failure
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"--pcrs {text_path}: not UTF-8 text (byte {exc.start})") from exc
    out: Expected = {}
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--pcrs {text_path}: bad JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise UsageError(f"--pcrs {text_path}: JSON must map bank to {{pcr: hex}}")
        for b, table in doc.items():
            if b not in DIGEST_SIZES or not isinstance(table, dict):
                raise UsageError(f"--pcrs {text_path}: unknown bank {b!r}")
            for pcr, hexval in table.items():
                _, value = _digest(str(hexval), b, f"--pcrs {text_path}")
                out.setdefault(b, {})[int(pcr)] = value
        return out
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            raise UsageError(f"--pcrs {text_path}:{n}: expected 'PCR-NN: hex', got {line[:40]!r}")
        b, value = _digest(m.group(2), bank, f"--pcrs {text_path}:{n}")
        out.setdefault(b, {})[int(m.group(1))] = value
    return out
