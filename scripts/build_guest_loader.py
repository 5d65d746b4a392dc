#!/usr/bin/env python3
"""Cross-compile the realkernel guests' static ``kexec_load(2)`` loader
(``tests/rk_guest/kexec_loader.c``) for ARCH, cached by its source and the compiler's version.

    python scripts/build_guest_loader.py ppc64le     # prints the binary's path

For guests whose architecture the host's Python cannot run in: it loads a kimagekit image from
the flat description the host writes beside it, then reboots into it.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_artifacts import cache_dir

SOURCE = Path(__file__).resolve().parent.parent / "tests" / "rk_guest" / "kexec_loader.c"
COMPILERS = {"ppc64le": "powerpc64le-linux-gnu-gcc"}


def build_loader(arch: str) -> Path:
    gcc = COMPILERS[arch]
    version = subprocess.run([gcc, "--version"], check=True, capture_output=True,
                             text=True).stdout.splitlines()[0]
    key = hashlib.sha256(SOURCE.read_bytes() + version.encode()).hexdigest()[:16]
    out = cache_dir() / "guest-loader" / f"kexec_loader-{arch}-{key}"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    subprocess.run([gcc, "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(tmp),
                    str(SOURCE)], check=True)
    tmp.rename(out)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in COMPILERS:
        print(f"usage: build_guest_loader.py {{{','.join(COMPILERS)}}}", file=sys.stderr)
        return 2
    try:
        print(build_loader(argv[0]))
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"guest loader {argv[0]}: build failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
