#!/usr/bin/env python3
"""Random-mutation fuzzer for the IMA parsers (binary lists, kexec buffers, ASCII lists).

Seeds are the synthetic lists in testdata/ima plus, when present, the corpus lists. Each input is
a seed with a few byte flips, inserted/removed runs, overwritten u32s (0, 1, huge) or a cut. Any
exception other than KimageError is a finding: the input is saved to fuzz/crashes/ and the run
fails. ``python fuzz/fuzz_ima.py --runs 1000000`` is the full run; tests run a short one.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import struct
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kimagekit import ima_ascii, ima_kexec, ima_log  # noqa: E402
from kimagekit.errors import KimageError  # noqa: E402

U32S = [0, 1, 2, 3, 4, 19, 20, 24, 255, 256, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def seeds() -> list[bytes]:
    out = [p.read_bytes() for p in sorted((ROOT / "testdata/ima").glob("*"))
           if p.suffix in (".bin", ".kexec")]
    corpus = ROOT.parent / "shared/corpus/ima"
    for p in sorted(corpus.glob("*/*")) if corpus.is_dir() else []:
        if p.stat().st_size < 64 * 1024:
            out.append(p.read_bytes())
    return out


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data[: rng.choice([len(data), len(data), rng.randrange(len(data) + 1)])])
    for _ in range(rng.randint(1, 4)):
        if not b:
            break
        op = rng.randrange(5)
        at = rng.randrange(len(b))
        if op == 0:
            b[at] ^= 1 << rng.randrange(8)
        elif op == 1 and at + 4 <= len(b):
            b[at:at + 4] = struct.pack(rng.choice("<>") + "I", rng.choice(U32S))
        elif op == 2:
            del b[at:at + rng.randint(1, 16)]
        elif op == 3:
            b[at:at] = rng.randbytes(rng.randint(1, 16))
        else:
            b[at] = rng.choice(b" :|\n0a")
    return bytes(b)


def exercise(data: bytes) -> None:
    try:
        fmt = ima_log.detect(data[:65536], len(data))
        if fmt is None:
            fmt = ima_log.detect_or_raise(data)
        report = ima_log.analyse(data, fmt, banks=["sha1", "sha256"])
        del report
        for e in ima_log.iter_entries(data, fmt):
            _ = e.fields
            ima_ascii.render_line(e)
        if fmt.kind == "kexec-buffer":
            ima_kexec.restore(data, fmt.endian)
    except KimageError:
        pass
    with contextlib.suppress(KimageError):
        list(ima_ascii.parse_ascii(data))


def run(runs: int, seed: int, out: Path) -> int:
    rng = random.Random(seed)
    pool = seeds()
    start = time.monotonic()
    for i in range(runs):
        data = mutate(rng, rng.choice(pool))
        try:
            exercise(data)
        except Exception:
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"crash-{seed}-{i}.bin"
            path.write_bytes(data)
            traceback.print_exc()
            print(f"finding after {i + 1} inputs: {path}", file=sys.stderr)
            return 1
    rate = runs / max(time.monotonic() - start, 1e-9)
    print(f"{runs} inputs, no finding ({rate:,.0f}/s, seed {seed})")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--crashes", type=Path, default=ROOT / "fuzz/crashes")
    args = ap.parse_args()
    return run(args.runs, args.seed, args.crashes)


if __name__ == "__main__":
    sys.exit(main())
