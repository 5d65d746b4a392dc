#!/usr/bin/env python3
"""Download and unpack the real Debian kernels (and the shim holding Debian's Secure Boot CA) the
tests and benchmarks use (never committed).

    python scripts/fetch_artifacts.py            # all, into $KIMAGEKIT_CACHE or ~/.cache/kimagekit

Each package is fetched once with ``apt-get download`` (the ppc64el one through a private APT
state for that architecture) and unpacked with ``dpkg-deb -x``; later runs reuse the cache.
Also dtc's source (``dtc-src``: its ``tests/*.dts`` are the DTS reader's acceptance corpus),
from the Debian source package ``device-tree-compiler`` through a private deb-src list, unpacked
into ``dtc-src-VERSION``. Prints one ``name=path`` line per artifact. Exit 1 when a download
fails.
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


DTC_SOURCE = "device-tree-compiler"
# The machine's own release first; a mirror may lack one release's source files.
DTC_SUITES = ("bookworm", "trixie", "sid")


def dtc_source_dir() -> Path | None:
    """The unpacked dtc source tree fetched before, if any (its ``tests/`` folder inside)."""
    found = sorted(p for p in cache_dir().glob("dtc-src-*") if (p / "tests").is_dir())
    return found[-1] if found else None


def _mirror() -> str:
    for src in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in src.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def fetch_dtc_source() -> Path:
    have = dtc_source_dir()
    if have is not None:
        return have
    work = cache_dir() / "dtc-src-download"
    uri = _mirror()
    for suite in DTC_SUITES:
        state = work / suite
        (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (state / "sources.list").write_text(f"deb-src {uri} {suite} main\n")
        opts = [f"-oDir::Etc::SourceList={state / 'sources.list'}",
                "-oDir::Etc::SourceParts=/dev/null", f"-oDir::State::Lists={state / 'lists'}"]
        subprocess.run(["apt-get", *opts, "update", "-qq"], check=False, cwd=state,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        show = subprocess.run(["apt-cache", *opts, "showsrc", DTC_SOURCE], check=False,
                              capture_output=True, text=True).stdout
        versions = [ln.split()[1] for ln in show.splitlines() if ln.startswith("Version:")]
        if not versions:
            continue
        version = versions[0]
        upstream = version.split(":")[-1].rsplit("-", 1)[0]
        # only the upstream tarball is needed; the Debian one may be missing on the mirror
        subprocess.run(["apt-get", *opts, "source", "--download-only",
                        f"{DTC_SOURCE}={version}"], check=False, cwd=state,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tars = sorted(state.glob(f"{DTC_SOURCE}_{upstream}.orig.tar.*"))
        if not tars:
            continue
        target = cache_dir() / f"dtc-src-{upstream}"
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        subprocess.run(["tar", "-xf", str(tars[-1]), "-C", str(tmp), "--strip-components=1"],
                       check=True)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        return target
    raise FileNotFoundError(f"no suite of {uri} served the {DTC_SOURCE} source")


def main() -> int:
    names = sys.argv[1:] or [*PACKAGES, "dtc-src"]
    failed = 0
    for name in names:
        try:
            print(f"{name}={fetch_dtc_source() if name == 'dtc-src' else fetch(name)}")
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"{name}: download failed: {exc}", file=sys.stderr)
            failed = 1
    return failed


if __name__ == "__main__":
    sys.exit(main())
