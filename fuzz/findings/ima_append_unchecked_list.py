#!/usr/bin/env python3
"""Finding (ima-append, list): `ima append LIST NEW -o OUT` with a LIST whose last entry is cut
short copies LIST's bytes unchecked, writes OUT, then fails re-reading OUT: a ParseError that
names OUT (not LIST) and an offset in OUT, and OUT stays on disk although the command exits 2.

Campaign: ima-append seed 1 input 3 and others ("output left by ParseError at
ima_log.py:285/291/313:scan"). Exit 1 while the output is left or the error names OUT."""

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kimagekit import ima_files  # noqa: E402
from kimagekit.errors import KimageError  # noqa: E402

LIST = ROOT / "testdata/ima/small-le.bin"
with tempfile.TemporaryDirectory() as tmp:
    t = Path(tmp)
    cut = t / "cut.bin"
    cut.write_bytes(LIST.read_bytes()[:-10])  # the last entry loses 10 bytes
    out = t / "out.bin"
    try:
        ima_files.append_file(cut, LIST, out)
        print("appended: no error at all")
        sys.exit(1)
    except KimageError as err:
        print(f"{type(err).__name__} about {err.file}: {err}; output left: {out.exists()}")
        bad = out.exists() or err.file == str(out)
print("REPRODUCED" if bad else "fixed")
sys.exit(1 if bad else 0)
