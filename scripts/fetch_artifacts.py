#!/usr/bin/env python3
"""Download and unpack the real Debian kernels (and the shim holding Debian's Secure Boot CA) the
tests and benchmarks use (never committed).

    python scripts/fetch_artifacts.py            # all, into $KIMAGEKIT_CACHE or ~/.cache/kimagekit

Each package is fetched once with ``apt-get download`` (the ppc64el and arm64 ones through a
private APT state for that architecture; ``PACKAGE:ARCH`` keeps a package of another
architecture apart from the host's) and unpacked with ``dpkg-deb -x``; later runs reuse the
cache. The arm64 kernel and ``busybox-static:arm64`` are for the QEMU virt test.
Also dtc's source (``dtc-src``: its ``tests/*.dts`` are the DTS reader's acceptance corpus),
from the Debian source package ``device-tree-compiler`` through a private deb-src list, unpacked
into ``dtc-src-VERSION``.

Also the amd64 kernels the real-kernel tests boot under QEMU (``kernel-bookworm``,
``kernel-trixie``, ``kernel-sid``): each suite's current ``linux-image-amd64`` through a
private sources.list and lists directory (the machine's APT state untouched), its version asked
of ``apt-cache depends`` at run time, unpacked into ``realkernel-VERSION`` (vmlinuz, config, the
9p modules and what they need, decompressed) and named by ``realkernel-SUITE.version``.
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
    # the arm64 Image (an EFI application: PE header before the Image header); the QEMU virt
    # test boots it, and its initramfs takes busybox from busybox-static:arm64
    "arm64-vmlinuz": (f"linux-image-{VERSION}-arm64", "arm64", f"boot/vmlinuz-{VERSION}-arm64"),
    # PACKAGE:ARCH keeps another architecture's package of that name apart (its own folder)
    "arm64-busybox": ("busybox-static:arm64", "arm64", "bin/busybox"),
    # Debian's shim embeds the Debian Secure Boot CA (its .vendor_cert section) that signs the
    # kernels' signing certificate
    "amd64-shim": ("shim-signed", None, "usr/lib/shim/shimx64.efi.signed"),
    # the ppc64le QEMU proof's initramfs (tests/test_realkernel_ppc64.py); PACKAGE:ARCH keeps
    # another architecture's package of that name apart (its own folder)
    "ppc64le-busybox": ("busybox-static:ppc64el", "ppc64el", "bin/busybox"),
}


# folders of an unpacked package nothing reads (the arm64 kernel's 340 MB of modules)
TRIM = {"arm64-vmlinuz": ("lib", "usr")}


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
    pattern = f"{package.split(':')[0]}_*_{arch or '*'}.deb"
    debs = sorted(work.glob(pattern))
    if not debs:
        subprocess.run(["apt-get", *opts, "download", package], check=True, cwd=work,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        debs = sorted(work.glob(pattern))
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)], check=True)
    for folder in TRIM.get(name, ()):
        shutil.rmtree(tmp / folder, ignore_errors=True)
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


# --- amd64 kernels of three Debian suites, for the real-kernel tests (tests/realkernel) ---

KERNEL_SUITES = ("bookworm", "trixie", "sid")
# 9p over virtio: the guest mounts the host's / read-only; their dependencies come from each
# module's own ``depends=`` (the packages ship no modules.dep: depmod writes it on install)
NINEP_MODULES = ("9pnet", "9pnet_virtio", "netfs", "9p")
# the virtio PCI transport: a module on 6.1 (virtio_pci), built in later
TRANSPORT_MODULES = ("virtio_pci",)


def kernel_dir(suite: str) -> Path | None:
    """SUITE's unpacked kernel fetched before (``vmlinuz``, ``config``, ``modules/``), if any."""
    pointer = cache_dir() / f"realkernel-{suite}.version"
    if not pointer.is_file():
        return None
    d = cache_dir() / f"realkernel-{pointer.read_text().strip()}"
    return d if (d / "vmlinuz").is_file() and (d / "modules.order").is_file() else None


def _suite_apt(suite: str) -> list[str]:
    state = cache_dir() / "apt" / suite
    (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (state / "sources.list").write_text(f"deb {_mirror()} {suite} main\n")
    opts = [f"-oDir::Etc::SourceList={state / 'sources.list'}",
            "-oDir::Etc::SourceParts=/dev/null", f"-oDir::State::Lists={state / 'lists'}"]
    subprocess.run(["apt-get", *opts, "update", "-qq"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return opts


def _depends(opts: list[str], package: str, prefix: str) -> str | None:
    out = subprocess.run(["apt-cache", *opts, "depends", package], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        word = line.split(":", 1)[-1].strip()
        if "Depends:" in line and word.startswith(prefix):
            return word
    return None


def _modinfo_depends(ko: Path) -> list[str]:
    from elftools.elf.elffile import ELFFile

    with ko.open("rb") as f:
        sec = ELFFile(f).get_section_by_name(".modinfo")
        data = sec.data() if sec is not None else b""
    for item in data.split(b"\0"):
        if item.startswith(b"depends="):
            return [d for d in item[8:].decode().split(",") if d]
    return []


def _decompress(src: Path, dst: Path) -> None:
    if src.suffix == ".xz":
        import lzma
        dst.write_bytes(lzma.decompress(src.read_bytes()))
    elif src.suffix == ".zst":
        import zstandard
        dst.write_bytes(zstandard.ZstdDecompressor().decompressobj().decompress(src.read_bytes()))
    else:
        shutil.copyfile(src, dst)


def _collect_modules(tree: Path, out: Path) -> list[str]:
    """Copy NINEP_MODULES and their dependencies out of TREE (a ``lib/modules/V`` folder),
    decompressed (busybox insmod reads plain ELF); return the load order."""
    index: dict[str, Path] = {}
    for ko in tree.rglob("*.ko*"):
        name = ko.name.split(".ko")[0].replace("-", "_")
        index[name] = ko
    out.mkdir(parents=True, exist_ok=True)
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name not in index:
            raise FileNotFoundError(f"module {name} not in {tree}")
        dst = out / f"{name}.ko"
        _decompress(index[name], dst)
        for dep in _modinfo_depends(dst):
            visit(dep)
        order.append(name)

    for name in TRANSPORT_MODULES:
        if name in index:
            visit(name)
    for name in NINEP_MODULES:
        visit(name)
    return order


def fetch_kernel(suite: str) -> Path:
    """Fetch (once per version) the amd64 kernel SUITE's ``linux-image-amd64`` names today."""
    opts = _suite_apt(suite)
    try:
        image = _depends(opts, "linux-image-amd64", "linux-image-")
    except subprocess.CalledProcessError:
        image = None
    if image is None:
        have = kernel_dir(suite)
        if have is not None:  # offline, or the suite's index unreadable: the one fetched before
            return have
        raise FileNotFoundError(f"{suite}: linux-image-amd64 names no linux-image package")
    version = image.removeprefix("linux-image-")
    target = cache_dir() / f"realkernel-{version}"
    pointer = cache_dir() / f"realkernel-{suite}.version"
    if (target / "modules.order").is_file():
        pointer.write_text(version + "\n")
        return target
    # newer suites split the image: linux-binary-V (vmlinuz), linux-base-V (config),
    # linux-modules-V (modules)
    packages = [image]
    for prefix in ("linux-binary-", "linux-base-", "linux-modules-"):
        dep = _depends(opts, image, prefix)
        if dep is not None:
            packages.append(dep)
    work = cache_dir() / "debs" / f"realkernel-{version}"
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", *opts, "download", *packages], check=True, cwd=work,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    unpacked = work / "root"
    shutil.rmtree(unpacked, ignore_errors=True)
    for deb in sorted(work.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    found = {
        "vmlinuz": [unpacked / "boot" / f"vmlinuz-{version}",
                    unpacked / "usr" / "lib" / "modules" / version / "vmlinuz"],
        "config": [unpacked / "boot" / f"config-{version}",
                   unpacked / "usr" / "lib" / "modules" / version / "config"],
    }
    for name, candidates in found.items():
        src = next((c for c in candidates if c.is_file()), None)
        if src is None:
            raise FileNotFoundError(f"{suite}: no {name} in {', '.join(packages)}")
        shutil.copyfile(src, tmp / name)
    trees = [t for t in (unpacked / "lib" / "modules" / version,
                         unpacked / "usr" / "lib" / "modules" / version) if (t / "kernel").is_dir()]
    if not trees:
        raise FileNotFoundError(f"{suite}: no modules in {', '.join(packages)}")
    order = _collect_modules(trees[0], tmp / "modules")
    (tmp / "version").write_text(version + "\n")
    (tmp / "modules.order").write_text("".join(f"{m}.ko\n" for m in order))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    shutil.rmtree(work)  # the unpacked packages (hundreds of MB) are not needed again
    pointer.write_text(version + "\n")
    return target


def main() -> int:
    names = sys.argv[1:] or [*PACKAGES, "dtc-src", *(f"kernel-{s}" for s in KERNEL_SUITES)]
    failed = 0
    for name in names:
        try:
            if name == "dtc-src":
                path = fetch_dtc_source()
            elif name.startswith("kernel-"):
                path = fetch_kernel(name.removeprefix("kernel-"))
            else:
                path = fetch(name)
            print(f"{name}={path}")
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"{name}: download failed: {exc}", file=sys.stderr)
            failed = 1
    return failed


if __name__ == "__main__":
    sys.exit(main())
