#!/usr/bin/env python3
"""Finding (ima-convert, list): `ima convert LIST --to ascii -o OUT` of a binary list with a
template name kimagekit cannot read back from text ('ima-nx' here; the fuzzer hit 'ima-bwf', and a
mutated field with non-hex text) renders OUT, writes it, then fails re-reading it: a ParseError
naming OUT, and OUT stays on disk although the command exits 2. The binary targets convert the
same list fine, so the refusal is about the ASCII form, and should come before the write.

Campaign: ima-convert seed 1 inputs 2532 and 17279 (32 in 10^5). Exit 1 while OUT is left."""

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kimagekit import ima_files  # noqa: E402
from kimagekit.errors import KimageError  # noqa: E402

data = (ROOT / "testdata/ima/small-le.bin").read_bytes()
at = data.rfind(b"ima-ng")
with tempfile.TemporaryDirectory() as tmp:
    t = Path(tmp)
    src = t / "list.bin"
    src.write_bytes(data[:at] + b"ima-nx" + data[at + 6:])  # same length: the list stays valid
    out = t / "out.ascii"
    try:
        ima_files.convert_file(src, out, "ascii")
        print("converted: no error at all")
        sys.exit(1)
    except KimageError as err:
        print(f"{type(err).__name__} about {err.file}: {err}; output left: {out.exists()}")
        bad = out.exists()
print("REPRODUCED" if bad else "fixed")
sys.exit(1 if bad else 0)
