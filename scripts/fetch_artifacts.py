#!/usr/bin/env python3
"""Download and unpack the real Debian kernels (and the shim holding Debian's Secure Boot CA) the
tests and benchmarks use (never committed).

    python scripts/fetch_artifacts.py            # all, into $KIMAGEKIT_CACHE or ~/.cache/kimagekit

Each package is fetched once with ``apt-get download`` (the ppc64el one through a private APT
state for that architecture) and unpacked with ``dpkg-deb -x``; later runs reuse the cache.
Prints one ``name=path`` line per artifact. Exit 1 when a download fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = "6.1.0-50"
PACKAGES = {
    # name: (package, apt architecture or None for the host's, file inside the package)
    "amd64-vmlinuz": (f"linux-image-{VERSION}-amd64", None, f"boot/vmlinuz-{VERSION}-amd64"),
    "ppc64le-vmlinux": (f"linux-image-{VERSION}-powerpc64le", "ppc64el",
                        f"boot/vmlinux-{VERSION}-powerpc64le"),
    # Debian's shim embeds the Debian Secure Boot CA (its .vendor_cert section) that signs the
    # kernels' signing certificate
    "amd64-shim": ("shim-signed", None, "usr/lib/shim/shimx64.efi.signed"),
}


def cache_dir() -> Path:
    env = os.environ.get("KIMAGEKIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kimagekit"


def artifact_path(name: str) -> Path:
    package, _, inner = PACKAGES[name]
    return cache_dir() / package / inner


def fetch(name: str) -> Path:
    package, arch, inner = PACKAGES[name]
    root = cache_dir() / package
    target = root / inner
    if target.exists():
        return target
    work = cache_dir() / "debs"
    work.mkdir(parents=True, exist_ok=True)
    opts: list[str] = []
    if arch:
        lists = work / f"lists-{arch}"
        (lists / "partial").mkdir(parents=True, exist_ok=True)
        opts = [f"-oAPT::Architecture={arch}", f"-oAPT::Architectures={arch}",
                f"-oDir::State::Lists={lists}"]
        # a mirror mid-sync can fail one index (e.g. security) and still serve the package
        subprocess.run(["apt-get", *opts, "update", "-qq"], check=False, cwd=work,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    debs = sorted(work.glob(f"{package}_*.deb"))
    if not debs:
        subprocess.run(["apt-get", *opts, "download", package], check=True, cwd=work,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        debs = sorted(work.glob(f"{package}_*.deb"))
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)], check=True)
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    if not target.exists():
        raise FileNotFoundError(f"{package} holds no {inner}")
    return target


def main() -> int:
    names = sys.argv[1:] or list(PACKAGES)
    failed = 0
    for name in names:
        try:
            print(f"{name}={fetch(name)}")
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"{name}: download failed: {exc}", file=sys.stderr)
            failed = 1
    return failed


if __name__ == "__main__":
    sys.exit(main())
