#!/usr/bin/env python3
"""Fetch Debian sid's riscv64 kernel (the flat Image it ships as ``vmlinuz``), once per version.

    python scripts/fetch_riscv_kernel.py        # prints the vmlinuz path

The version is the one sid's ``linux-image-riscv64`` names today (asked of ``apt-cache
depends`` through a private riscv64 APT state, the machine's untouched); only its
``linux-binary-VERSION`` package (10 MB, holding ``usr/lib/modules/VERSION/vmlinuz``) is
downloaded. Cached as ``riscv64-kernel-VERSION/vmlinuz`` under the kimagekit cache, named by
``riscv64-kernel.version``; offline, the one fetched before is used.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_artifacts import _depends, _mirror, cache_dir

POINTER = "riscv64-kernel.version"


def kernel_path() -> Path | None:
    """The vmlinuz fetched before, if any (no network)."""
    pointer = cache_dir() / POINTER
    if not pointer.is_file():
        return None
    path = cache_dir() / f"riscv64-kernel-{pointer.read_text().strip()}" / "vmlinuz"
    return path if path.is_file() else None


def _apt() -> list[str]:
    state = cache_dir() / "apt" / "sid-riscv64"
    (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (state / "sources.list").write_text(f"deb {_mirror()} sid main\n")
    opts = [f"-oDir::Etc::SourceList={state / 'sources.list'}",
            "-oDir::Etc::SourceParts=/dev/null", f"-oDir::State::Lists={state / 'lists'}",
            "-oAPT::Architecture=riscv64", "-oAPT::Architectures=riscv64"]
    subprocess.run(["apt-get", *opts, "update", "-qq"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return opts


def fetch() -> Path:
    opts = _apt()
    try:
        image = _depends(opts, "linux-image-riscv64", "linux-image-")
    except subprocess.CalledProcessError:
        image = None
    have = kernel_path()
    if image is None:
        if have is not None:
            return have
        raise FileNotFoundError("sid: linux-image-riscv64 names no linux-image package")
    version = image.removeprefix("linux-image-")
    target = cache_dir() / f"riscv64-kernel-{version}"
    if not (target / "vmlinuz").is_file():
        work = cache_dir() / "debs" / f"riscv64-kernel-{version}"
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", *opts, "download", f"linux-binary-{version}"], check=True,
                       cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        unpacked = work / "root"
        for deb in sorted(work.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        src = unpacked / "usr" / "lib" / "modules" / version / "vmlinuz"
        if not src.is_file():
            raise FileNotFoundError(f"linux-binary-{version} holds no {src.name}")
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copyfile(src, tmp / "vmlinuz")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        shutil.rmtree(work)
    (cache_dir() / POINTER).write_text(version + "\n")
    return target / "vmlinuz"


def main() -> int:
    try:
        print(fetch())
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"riscv64 kernel: download failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
