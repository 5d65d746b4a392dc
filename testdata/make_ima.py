#!/usr/bin/env python3
"""Make the synthetic IMA inputs in testdata/ima/ (run from anywhere; output is deterministic).

Entries are packed here with ``struct`` straight from the kernel's layout, independently of
kimagekit's own schemas, so tests compare two implementations rather than one with itself.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "ima"
BANKS = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}


def d_ng(algo: str, digest: bytes) -> bytes:
    return algo.encode() + b":\0" + digest


def n_ng(name: str) -> bytes:
    return name.encode() + b"\0"


def template_data(fields: list[bytes], endian: str) -> bytes:
    return b"".join(struct.pack(endian + "I", len(f)) + f for f in fields)


def tdigest(name: str, fields: list[bytes], endian: str, bank: str) -> bytes:
    h = hashlib.new(bank)
    if name == "ima":
        h.update(fields[0] + fields[1].ljust(256, b"\0"))
    else:
        h.update(template_data(fields, endian))
    return h.digest()


def entry(pcr: int, name: str, fields: list[bytes], endian: str = "<", bank: str = "sha1",
          violation: bool = False) -> bytes:
    digest = bytes(BANKS[bank]) if violation else tdigest(name, fields, endian, bank)
    head = struct.pack(endian + "I", pcr) + digest + struct.pack(endian + "I", len(name))
    head += name.encode()
    if name == "ima":
        return head + fields[0] + struct.pack(endian + "I", len(fields[1])) + fields[1]
    data = template_data(fields, endian)
    return head + struct.pack(endian + "I", len(data)) + data


def sample(endian: str) -> list[tuple[int, str, list[bytes], bool]]:
    """(pcr, template, fields, violation) for a small list touching every field kind."""
    sha = hashlib.sha256
    u32 = struct.Struct(endian + "I")
    u16 = struct.Struct(endian + "H")
    return [
        (10, "ima-ng", [d_ng("sha256", sha(b"boot").digest()), n_ng("boot_aggregate")], False),
        (10, "ima-sig", [d_ng("sha256", sha(b"init").digest()), n_ng("/init"),
                         bytes.fromhex("030204aabbccdd0008") + b"\x11" * 8], False),
        (10, "ima-sig", [d_ng("sha256", sha(b"sh").digest()), n_ng("/bin/sh"), b""], False),
        (10, "ima-buf", [d_ng("sha256", sha(b"cmdline").digest()), n_ng("kexec-cmdline"),
                         b"console=hvc0 ima_policy=tcb"], False),
        (10, "ima-ngv2", [b"ima:sha256:\0" + sha(b"ngv2").digest(), n_ng("/usr/bin/env")],
         False),
        (11, "evm-sig", [d_ng("sha256", sha(b"evm").digest()), n_ng("/etc/passwd"),
                         b"\x05\x02" + b"\x22" * 10, n_ng("security.ima|security.evm"),
                         bytes.fromhex("0004000a"), b"\x33" * 14,
                         u32.pack(0), u32.pack(42), u16.pack(0o100644)], False),
        (10, "ima-ng", [d_ng("sha256", bytes(20)), n_ng("/var/log/violated")], True),
        (10, "d-ng|n-ng", [d_ng("sha1", hashlib.sha1(b"x").digest()), n_ng("/custom/list")],
         False),
    ]


def make_list(endian: str, bank: str, with_ima: bool = True) -> bytes:
    out = b"".join(entry(p, n, f, endian, bank, v) for p, n, f, v in sample(endian))
    if with_ima:
        out += entry(10, "ima", [hashlib.sha1(b"old").digest(), b"/sbin/old"], endian, bank)
    return out


def kexec_buffer(body: bytes, count: int, endian: str) -> bytes:
    return struct.pack(endian + "HHIQQ", 1, 0, 0, 24 + len(body), count) + body


def replay(data_entries: list[tuple[int, str, list[bytes], bool]], endian: str) -> dict:
    pcrs: dict[str, dict[str, str]] = {}
    for bank, size in BANKS.items():
        table: dict[int, bytes] = {}
        for pcr, name, fields, violation in data_entries:
            d = b"\xff" * size if violation else tdigest(name, fields, endian, bank)
            table[pcr] = hashlib.new(bank, table.get(pcr, bytes(size)) + d).digest()
        pcrs[bank] = {str(k): v.hex() for k, v in sorted(table.items())}
    return pcrs


def main() -> int:
    OUT.mkdir(exist_ok=True)
    files = {
        "small-le.bin": make_list("<", "sha1"),
        "small-be.bin": make_list(">", "sha1"),
        "small-le-sha256.bin": make_list("<", "sha256"),
        "small-be-sha512.bin": make_list(">", "sha512"),
        "small-le.kexec": kexec_buffer(make_list("<", "sha1", False), len(sample("<")), "<"),
        "small-be.kexec": kexec_buffer(make_list(">", "sha1", False), len(sample(">")), ">"),
        "small-2016.kexec": make_list("<", "sha1", False),
    }
    for name, data in files.items():
        (OUT / name).write_bytes(data)
    extra = [(10, "ima", [hashlib.sha1(b"old").digest(), b"/sbin/old"], False)]
    for endian, tag in (("<", "le"), (">", "be")):
        expected = replay(sample(endian) + extra, endian)
        (OUT / f"small-{tag}.pcrs.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {len(files) + 2} files to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
