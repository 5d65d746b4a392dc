#!/usr/bin/env python3
"""Out-of-tree builds from the shared Debian ``linux-source`` tree, cached by what they depend on.

A build is named by a :class:`Recipe`: the architecture and cross compiler, a base config target
(``tinyconfig``, ``ppc64le_defconfig``...), options set on top, and the make targets and output
files wanted. The cache key is the source version plus a hash of the recipe, so a changed option
or a new source version builds again, and anything else is reused. Only the outputs (and the
final ``.config``) are kept; the object tree is removed. ``build-seconds`` records the cold
build's wall time, for the CI notes.

Every option asked for is checked in the final ``.config``: an option ``olddefconfig`` dropped
(an unmet dependency) fails the build with its name instead of producing a different kernel.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_artifacts import cache_dir
from linux_source import fetch_linux_source, source_version


@dataclass(frozen=True)
class Recipe:
    name: str                     # cache folder prefix, e.g. "testkernel", "purgatory-ppc64le"
    arch: str                     # the kernel's ARCH= (x86, powerpc, riscv, arm64)
    cross_compile: str            # CROSS_COMPILE= prefix, "" for the host's gcc
    base: str                     # config make target
    options: dict[str, str] = field(default_factory=dict)  # CONFIG_X (no prefix): "y"/"n"/value
    targets: tuple[str, ...] = ()  # make targets, built in this order
    outputs: tuple[str, ...] = ()  # paths inside the object tree to keep

    def key(self, version: str) -> str:
        blob = json.dumps({"version": version, **asdict(self)}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _make(src: Path, obj: Path, recipe: Recipe, *targets: str, jobs: int | None = None) -> None:
    cmd = ["make", "-s", f"-j{jobs or os.cpu_count() or 1}", "-C", str(src), f"O={obj}",
           f"ARCH={recipe.arch}"]
    if recipe.cross_compile:
        cmd.append(f"CROSS_COMPILE={recipe.cross_compile}")
    subprocess.run([*cmd, *targets], check=True, stdout=subprocess.DEVNULL)


def _configure(src: Path, obj: Path, recipe: Recipe) -> None:
    _make(src, obj, recipe, recipe.base)
    config = obj / ".config"
    args: list[str] = []
    for name, value in recipe.options.items():
        if value == "y":
            args += ["--enable", name]
        elif value == "n":
            args += ["--disable", name]
        elif value.startswith('"'):
            args += ["--set-str", name, value.strip('"')]
        else:
            args += ["--set-val", name, value]
    if args:
        subprocess.run([str(src / "scripts" / "config"), "--file", str(config), *args], check=True)
    _make(src, obj, recipe, "olddefconfig")
    have = config_values(config)
    lost = [f"CONFIG_{n}={v} (got {have.get(n, 'unset')})" for n, v in recipe.options.items()
            if have.get(n, "n") != v]
    if lost:
        raise RuntimeError(f"{recipe.name}: olddefconfig dropped " + ", ".join(lost))


def config_values(config: Path) -> dict[str, str]:
    """``CONFIG_X=v`` lines as {X: v}; ``# CONFIG_X is not set`` as "n"."""
    out: dict[str, str] = {}
    for line in config.read_text().splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            name, value = line[7:].split("=", 1)
            out[name] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            out[line[9:-11]] = "n"
    return out


def built_dir(recipe: Recipe) -> Path | None:
    """The cached outputs of RECIPE on the newest unpacked source, if built before (no fetch)."""
    from linux_source import source_dir
    src = source_dir()
    if src is None:
        return None
    d = cache_dir() / f"{recipe.name}-{recipe.key(source_version(src))}"
    return d if (d / ".done").is_file() else None


def build(recipe: Recipe) -> Path:
    """Build RECIPE (once per source version and recipe); return the folder holding its outputs
    (same relative paths as in the object tree), ``.config`` and ``build-seconds``."""
    src = fetch_linux_source()
    version = source_version(src)
    target = cache_dir() / f"{recipe.name}-{recipe.key(version)}"
    if (target / ".done").is_file():
        return target
    obj = target.with_name(target.name + ".obj")
    shutil.rmtree(obj, ignore_errors=True)
    obj.mkdir(parents=True)
    began = time.monotonic()
    _configure(src, obj, recipe)
    for t in recipe.targets:
        _make(src, obj, recipe, t)
    seconds = time.monotonic() - began
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for rel in (*recipe.outputs, ".config"):
        dst = tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(obj / rel, dst)
    (tmp / "build-seconds").write_text(f"{seconds:.0f}\n")
    (tmp / "source-version").write_text(version + "\n")
    (tmp / "recipe.json").write_text(json.dumps(asdict(recipe), indent=1, sort_keys=True) + "\n")
    (tmp / ".done").write_text("")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    shutil.rmtree(obj)
    return target
