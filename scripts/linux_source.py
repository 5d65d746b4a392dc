#!/usr/bin/env python3
"""Fetch and unpack Debian's ``linux-source`` (the newest the sid suite names), once per version.

    python scripts/linux_source.py        # prints the unpacked tree's path

The tree is shared, read-only, by every build that needs kernel source (the issue-13 test kernel,
the ppc64/riscv64 purgatories): each builds out of tree with ``make O=<its own dir>``, so the
source stays clean and one unpack serves them all. Cached in ``$KIMAGEKIT_CACHE`` (or
``~/.cache/kimagekit``) as ``linux-source-VERSION/``, with ``linux-source.version`` naming the
newest; offline, the one unpacked before is used.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_artifacts import _depends, _suite_apt, cache_dir

SUITE = "sid"


def source_dir() -> Path | None:
    """The unpacked tree fetched before (its ``Makefile`` at the top), if any."""
    pointer = cache_dir() / "linux-source.version"
    if not pointer.is_file():
        return None
    d = cache_dir() / f"linux-source-{pointer.read_text().strip()}"
    return d if (d / "Makefile").is_file() and (d / ".unpacked").is_file() else None


def source_version(tree: Path) -> str:
    """The Debian package version the tree was unpacked from (e.g. ``7.2.13-1``)."""
    return tree.name.removeprefix("linux-source-")


def fetch_linux_source() -> Path:
    opts = _suite_apt(SUITE)
    try:
        package = _depends(opts, "linux-source", "linux-source-")
    except subprocess.CalledProcessError:
        package = None
    if package is None:
        have = source_dir()
        if have is not None:
            return have
        raise FileNotFoundError(f"{SUITE}: linux-source names no linux-source-X.Y package")
    show = subprocess.run(["apt-cache", *opts, "show", package], check=True,
                          capture_output=True, text=True).stdout
    version = next(ln.split()[1] for ln in show.splitlines() if ln.startswith("Version:"))
    target = cache_dir() / f"linux-source-{version}"
    pointer = cache_dir() / "linux-source.version"
    if (target / ".unpacked").is_file():
        pointer.write_text(version + "\n")
        return target
    work = cache_dir() / "debs" / f"linux-source-{version}"
    work.mkdir(parents=True, exist_ok=True)
    if not sorted(work.glob(f"{package}_*.deb")):
        subprocess.run(["apt-get", *opts, "download", f"{package}={version}"], check=True,
                       cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deb = sorted(work.glob(f"{package}_*.deb"))[-1]
    unpacked = work / "root"
    shutil.rmtree(unpacked, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    tars = sorted((unpacked / "usr" / "src").glob(f"{package}.tar.*"))
    if not tars:
        raise FileNotFoundError(f"{package} holds no /usr/src/{package}.tar.*")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(tars[-1]), "-C", str(tmp), "--strip-components=1"],
                   check=True)
    (tmp / ".unpacked").write_text(version + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    shutil.rmtree(work)  # the .deb and its tarball (over 300 MB) are not needed again
    pointer.write_text(version + "\n")
    return target


def main() -> int:
    try:
        print(fetch_linux_source())
    except (OSError, subprocess.CalledProcessError, StopIteration) as exc:
        print(f"linux-source: download failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
