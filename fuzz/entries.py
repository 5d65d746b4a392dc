"""The campaign's entry points: their seed files, options, how one input is made from
``(entry, seed, index)`` and run, and the bound on its output.

Output bounds (the output may not be larger; a larger one is a finding):

- build-ppc64, build-x86_64: the inputs as the image stores them (kernel, initrd, purgatory and
  DTB/DTS files by size, the IMA list at most 5 bytes per byte (an empty ASCII field becomes a u32
  length and a NUL) plus the 24-byte ima_kexec_hdr, raw hand-over bytes by size, the command
  line twice (the image's header keeps it, and /chosen or boot_params), --handover-size
  (declared: x86-64 stores the hand-over to its memsz) + one page per segment and two more (each
  segment is page-aligned in the file; headers, notes) + 8 KiB (ELF headers, the x86
  boot_params' fixed part, the new /chosen and reservation).
- ima-convert: 5 bytes per input byte + 64 per entry written (a wider --bank) + 24 (a header).
- ima-append: the list + 5 per byte of NEW + 64 per entry written + 24.
- patch-image: the image + the new contents (raw bytes by size, an IMA list as above) + 64 KiB
  (the largest page the images use).
- patch-dtb: a DTB + 4 KiB (the new properties, names and reservation); a DTS 4 bytes per byte
  (``<0 0>`` cells) + 4 KiB.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("KIMAGEKIT_CORPUS", ROOT.parent / "shared/corpus"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "testdata"))

import make_images  # noqa: E402
import make_kernels  # noqa: E402
import mutations  # noqa: E402

from kimagekit import ima_files  # noqa: E402
from kimagekit.arch import build as arch_build  # noqa: E402
from kimagekit.cli import build as cli_build  # noqa: E402
from kimagekit.dtb_file import patch_handover as dtb_patch_handover  # noqa: E402
from kimagekit.errors import UsageError  # noqa: E402
from kimagekit.handover import patch_file  # noqa: E402
from kimagekit.ima_log import encode_list  # noqa: E402
from kimagekit.image import HandoverStyle, write_image  # noqa: E402
from kimagekit.purgatory import DigestPolicy  # noqa: E402
from kimagekit.segments import DEFAULT_RAM, HoleSearch, parse_mem_ranges  # noqa: E402

PURGATORY_RO = "purgatory/purgatory-debian-linux-image-6.1.0-50-amd64_6.1.176-1.ro"
Files = dict[str, bytes | None]
Opts = dict[str, Any]


def _read(paths: list[Path], limit: int) -> list[bytes]:
    return [p.read_bytes() for p in paths if p.is_file() and p.stat().st_size <= limit]


def _corpus(pattern: str, limit: int = 24 * 1024) -> list[bytes]:
    return _read(sorted(CORPUS.glob(pattern)), limit) if CORPUS.is_dir() else []


_SEEDS: dict[str, list[bytes]] = {}


def seeds(slot: str) -> list[bytes]:
    """Seed files per input kind, made once per process (before the worker forks)."""
    if slot not in _SEEDS:
        _SEEDS[slot] = _make_seeds(slot)
    return _SEEDS[slot]


def _make_seeds(slot: str) -> list[bytes]:
    if slot == "vmlinux":
        return [make_images.make_vmlinux(), make_images.make_vmlinux(little=False),
                make_images.make_vmlinux(0x1000, paddr=0x100000),
                make_kernels.make_vmlinux("ppc64le"), make_kernels.make_vmlinux("ppc64")]
    if slot == "bzimage":
        return [make_kernels.make_bzimage(), make_kernels.make_bzimage(compression="xz"),
                make_kernels.make_bzimage(pe=True, signed=True)]
    if slot == "dtb":
        return (_read([ROOT / f"testdata/dtb/{n}.dtb" for n in ("small", "v16", "odd-layout",
                                                               "padded")], 1 << 20)
                + _corpus("dtb/qemu-7.2-ppc64-*.dtb") + _corpus("dtb/qemu-7.2-ppc64-*.dts"))
    if slot == "initrd":
        return [b"R" * 0x3000, make_images.filler(0x2345, 9)]
    if slot == "purgatory":
        return [make_images.make_purgatory(), make_images.make_purgatory(old_names=True),
                *_corpus(PURGATORY_RO)]
    if slot == "x86-purgatory":
        return _corpus(PURGATORY_RO) or [make_images.make_purgatory()]
    if slot == "ima":  # a list the next kernel takes first, so builds get past the hand-over
        return [encode_list(make_images.restorable_entries(), "<"),
                *_read(sorted((ROOT / "testdata/ima").glob("*.[bk]*")), 1 << 20),
                *_corpus("ima/binary/*", 16 * 1024), *_corpus("ima/ascii/*", 16 * 1024)]
    if slot == "ima-binary":  # lists append can extend: binary lists and kexec buffers
        return _read(sorted((ROOT / "testdata/ima").glob("*.[bk]*")), 1 << 20)
    if slot == "handover":
        return [make_images.handover_buffer(), b"HANDOVER" * 100, bytes(0x800)]
    if slot == "image":
        return _images()
    raise KeyError(slot)


def _images() -> list[bytes]:
    """kexec images to patch: built by kimagekit itself from the seeds above."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        ima = make_images.restorable_list(t / "ima.bin")
        for name in ("vmlinux", "dtb", "initrd"):
            (t / name).write_bytes(seeds(name)[0])
        (t / "bz").write_bytes(seeds("bzimage")[0])
        (t / "purg").write_bytes(seeds("x86-purgatory")[0])
        for n, (style, policy) in enumerate([(HandoverStyle.SEED, DigestPolicy.SEED),
                                             (HandoverStyle.IMA, DigestPolicy.UPSTREAM_4_10)]):
            o = t / f"ppc{n}.img"
            arch_build.build_ppc64(
                arch_build.BuildInputs(t / "vmlinux", o, initrd=t / "initrd", ima=ima,
                                       cmdline="console=hvc0", policy=policy),
                arch="ppc64le", dtb=t / "dtb", handover_style=style, page_size=0x1000,
                no_purgatory=True)
            out.append(o.read_bytes())
        o = t / "x86.img"
        arch_build.build_x86_64(arch_build.BuildInputs(t / "bz", o, initrd=t / "initrd",
                                                       ima=ima, purgatory=t / "purg"))
        out.append(o.read_bytes())
        o = t / "like.img"
        write_image(o, make_images.x86_like_image(policy=DigestPolicy.UPSTREAM_4_10))
        out.append(o.read_bytes())
    return out


def _ima_bound(data: bytes | None) -> int:
    return 0 if data is None else 5 * len(data) + 24


def _size(data: bytes | None) -> int:
    return 0 if data is None else len(data)


# -- the entry points: base input, option mutation, run --------------------------------------------
# Each run(paths, opts, out) returns (output, bound, how the bound was made).
Run = Callable[[dict[str, Path | None], Opts, Path], tuple[Path, int, str]]


@dataclass(frozen=True)
class Entry:
    slots: dict[str, str]  # input name -> seed kind
    optional: tuple[str, ...]  # inputs that may be absent from the base input
    base: Callable[[random.Random, Files], Opts]
    options: Callable[[random.Random, Opts], str]  # mutate one option in place
    run: Run


def _opt_number(rng: random.Random, opts: Opts, key: str) -> str:
    opts[key] = mutations.number(rng)
    return f"{key}={opts[key]:#x}" if opts[key] >= 0 else f"{key}={opts[key]}"


def _cli_number(value: int | None, what: str) -> int | None:
    """The CLI's own check of a numeric option (it reads the text, then refuses <= 0)."""
    return None if value is None else cli_build._number(str(value), what)


# build-ppc64
def _ppc_base(rng: random.Random, files: Files) -> Opts:
    kernel = files["kernel"] or b""
    little = len(kernel) < 6 or kernel[5] == 1
    if files["ima"] is not None and rng.random() < 0.2:
        files["handover"], files["ima"] = rng.choice(seeds("handover")), None
    return {"arch": "ppc64le" if little else "ppc64", "page_size": rng.choice([0x10000, 0x1000]),
            "handover_size": None, "style": rng.choice(["seed", "ima"]),
            "policy": rng.choice(list(DigestPolicy)), "cmdline": "console=hvc0 root=/dev/vda",
            "force": rng.random() < 0.25}


def _ppc_options(rng: random.Random, opts: Opts) -> str:
    key = rng.choice(["page_size", "handover_size", "handover_size", "cmdline", "arch"])
    if key == "cmdline":
        opts[key] = rng.choice(["", "x" * 4096, "a\0b", "x" * 70000])
        return f"cmdline of {len(opts[key])}"
    if key == "arch":
        opts[key] = "ppc64" if opts[key] == "ppc64le" else "ppc64le"
        return f"arch={opts[key]}"
    return _opt_number(rng, opts, key)


def _ppc_run(p: dict[str, Path | None], o: Opts, out: Path) -> tuple[Path, int, str]:
    page = _cli_number(o["page_size"], "--page-size") or 0x10000
    if page & (page - 1):
        raise UsageError(f"--page-size {page:#x} is not a power of two")
    size = _cli_number(o["handover_size"], "--handover-size")
    if size is not None and p["ima"] is None and p["handover"] is None:
        raise UsageError("--handover-size needs --ima or --handover")
    assert p["kernel"] is not None and p["dtb"] is not None
    inputs = arch_build.BuildInputs(p["kernel"], out, initrd=p["initrd"], cmdline=o["cmdline"],
                                    purgatory=p["purgatory"], ima=p["ima"],
                                    handover=p["handover"], handover_size=size,
                                    policy=o["policy"], force=o["force"])
    built = arch_build.build_ppc64(inputs, arch=o["arch"], dtb=p["dtb"],
                                   handover_style=HandoverStyle(o["style"]), page_size=page,
                                   no_purgatory=p["purgatory"] is None)
    return _image_bound(p, o, out, len(built.image.segments), page)


def _image_bound(p: dict[str, Path | None], o: Opts, out: Path, nseg: int,
                 page: int) -> tuple[Path, int, str]:
    sizes = {k: (0 if v is None else v.stat().st_size) for k, v in p.items()}
    ima = 5 * sizes.pop("ima", 0) + 24
    files = sum(sizes.values())
    declared = o["handover_size"] or 0
    cmdline = 2 * len(o["cmdline"])  # in the image's header and in /chosen or boot_params
    bound = files + ima + declared + cmdline + (nseg + 2) * page + 8192
    return out, bound, (f"files {files} + ima {ima} + handover-size {declared} + 2 x cmdline "
                        f"{len(o['cmdline'])} + ({nseg} segments + 2) x page {page:#x} + 8192")


# build-x86_64
def _x86_base(rng: random.Random, files: Files) -> Opts:
    return {"handover_size": None, "mem": None, "hole": rng.choice(list(HoleSearch)),
            "ima_kexec": files["ima"] is not None or rng.random() < 0.5,
            "policy": rng.choice(list(DigestPolicy)), "cmdline": "console=ttyS0",
            "force": rng.random() < 0.25}


def _x86_options(rng: random.Random, opts: Opts) -> str:
    key = rng.choice(["handover_size", "handover_size", "mem", "mem", "cmdline"])
    if key == "mem":
        a, b = mutations.number(rng), mutations.number(rng)
        opts["mem"] = rng.choice([f"{a:#x}+{b:#x}", f"{a:#x}-{b:#x}",
                                  f"0x100000-0x3fffffff,{a:#x}+{b:#x}"]) if a >= 0 <= b else "-1"
        return f"mem={opts['mem']}"
    if key == "cmdline":
        opts[key] = rng.choice(["", "x" * 2047, "x" * 4096, "x" * 70000])
        return f"cmdline of {len(opts[key])}"
    return _opt_number(rng, opts, key)


def _x86_run(p: dict[str, Path | None], o: Opts, out: Path) -> tuple[Path, int, str]:
    size = _cli_number(o["handover_size"], "--handover-size")
    ram = parse_mem_ranges(o["mem"]) if o["mem"] else DEFAULT_RAM
    assert p["kernel"] is not None
    inputs = arch_build.BuildInputs(p["kernel"], out, initrd=p["initrd"], cmdline=o["cmdline"],
                                    purgatory=p["purgatory"], ima=p["ima"], handover_size=size,
                                    policy=o["policy"], force=o["force"])
    built = arch_build.build_x86_64(inputs, ram=ram, hole_search=o["hole"],
                                    ima_kexec=o["ima_kexec"])
    return _image_bound(p, o, out, len(built.image.segments), arch_build.X86_PAGE_SIZE)


# ima-convert / ima-append
def _convert_base(rng: random.Random, files: Files) -> Opts:
    return {"to": rng.choice(ima_files.FORMS), "endian": rng.choice([None, "<", ">"]),
            "bank": rng.choice([None, "sha1", "sha256", "sha384", "sha512"]),
            "header": rng.random() < 0.8, "force": rng.random() < 0.25}


def _convert_options(rng: random.Random, opts: Opts) -> str:
    opts.update(_convert_base(rng, {}))
    return f"options {opts}"


def _convert_run(p: dict[str, Path | None], o: Opts, out: Path) -> tuple[Path, int, str]:
    assert p["list"] is not None
    w = ima_files.convert_file(p["list"], out, o["to"], endian=o["endian"], bank=o["bank"],
                               header=o["header"], force=o["force"])
    n = p["list"].stat().st_size
    return out, 5 * n + 64 * w.entries + 24, f"5 x {n} + 64 x {w.entries} entries + 24"


def _append_run(p: dict[str, Path | None], o: Opts, out: Path) -> tuple[Path, int, str]:
    assert p["list"] is not None and p["new"] is not None
    w = ima_files.append_file(p["list"], p["new"], out, force=o.get("force", False))
    a, b = p["list"].stat().st_size, p["new"].stat().st_size
    return (out, a + 5 * b + 64 * w.entries + 24,
            f"{a} + 5 x {b} + 64 x {w.entries} entries + 24")


def _no_options(rng: random.Random, opts: Opts) -> str:
    return "none"


# patch-handover on images and on device trees
def _patch_base(rng: random.Random, files: Files) -> Opts:
    return {"reseal": rng.random() < 0.5, "force": rng.random() < 0.25}


def _patch_options(rng: random.Random, opts: Opts) -> str:
    opts["reseal"] = not opts["reseal"]
    return f"reseal={opts['reseal']}"


def _patch_run(p: dict[str, Path | None], o: Opts, out: Path) -> tuple[Path, int, str]:
    assert p["image"] is not None
    patch_file(p["image"], out, ima=p["ima"], data=p["data"], reseal=o["reseal"],
               force=o["force"])
    img = p["image"].stat().st_size
    new = (5 * p["ima"].stat().st_size + 24) if p["ima"] is not None else (
        p["data"].stat().st_size if p["data"] is not None else 0)
    return out, img + new + 0x10000, f"image {img} + new {new} + 0x10000"


def _patch_image_base(rng: random.Random, files: Files) -> Opts:
    # exactly one of the IMA list and raw contents, as the CLI requires
    if rng.random() < 0.5:
        files["data"] = None
    else:
        files["ima"] = None
    return _patch_base(rng, files)


STARTS = [0x1000, 0x10000, 0x1000000, 0x10000000, 0x3FFF0000, 0x7FFF0000, 0xFFFF0000]


def _dtb_base(rng: random.Random, files: Files) -> Opts:
    return {"start": rng.choice(STARTS), "size": rng.choice([0x1000, 0x10000, 0x20000]),
            "style": rng.choice(["seed", "ima"]), "remove": rng.random() < 0.15,
            "pack": rng.random() < 0.5}


def _dtb_options(rng: random.Random, opts: Opts) -> str:
    key = rng.choice(["start", "size", "start", "size", "style"])
    if key == "style":
        opts[key] = rng.choice(["seed", "ima", "setup-data", ""])
        return f"style={opts[key]!r}"
    return _opt_number(rng, opts, key)


def _dtb_run(p: dict[str, Path | None], o: Opts, out: Path) -> tuple[Path, int, str]:
    assert p["dtb"] is not None
    if o["remove"]:
        dtb_patch_handover(p["dtb"], out, remove=True, pack=o["pack"])
    else:
        dtb_patch_handover(p["dtb"], out, start=o["start"], size=o["size"], style=o["style"],
                           pack=o["pack"])
    n = p["dtb"].stat().st_size
    dts = p["dtb"].read_bytes()[:4] != b"\xd0\x0d\xfe\xed"
    return out, (4 if dts else 1) * n + 4096, f"{'4 x ' if dts else ''}{n} + 4096"


ENTRIES: dict[str, Entry] = {
    "build-ppc64": Entry({"kernel": "vmlinux", "dtb": "dtb", "initrd": "initrd",
                          "purgatory": "purgatory", "ima": "ima", "handover": "handover"},
                         ("initrd", "purgatory", "ima"), _ppc_base, _ppc_options, _ppc_run),
    "build-x86_64": Entry({"kernel": "bzimage", "purgatory": "x86-purgatory",
                           "initrd": "initrd", "ima": "ima"},
                          ("initrd", "ima"), _x86_base, _x86_options, _x86_run),
    "ima-convert": Entry({"list": "ima"}, (), _convert_base, _convert_options, _convert_run),
    "ima-append": Entry({"list": "ima-binary", "new": "ima"}, (),
                        lambda r, f: {"force": r.random() < 0.25},
                        _no_options, _append_run),
    "patch-image": Entry({"image": "image", "ima": "ima", "data": "handover"}, (),
                         _patch_image_base, _patch_options, _patch_run),
    "patch-dtb": Entry({"dtb": "dtb"}, (), _dtb_base, _dtb_options, _dtb_run),
}


@dataclass(frozen=True)
class Case:
    mutated: str
    output: Path
    files: dict[str, Path | None]
    opts: Opts
    entry: Entry

    def run(self) -> tuple[Path, int, str]:
        return self.entry.run(self.files, self.opts, self.output)


def prepare(entry: str) -> None:
    for kind in ENTRIES[entry].slots.values():
        seeds(kind)
    seeds("ima")


def make_case(entry: str, seed: int, index: int, scratch: Path) -> Case:
    """Input ``index`` of ``seed``: the base input, one file or the options mutated, the files
    written into ``scratch``. Depends on nothing else (resumable, reproducible)."""
    e = ENTRIES[entry]
    rng = random.Random(f"{entry}/{seed}/{index}")
    files: Files = {}
    # "handover" only replaces "ima" in _ppc_base, so it starts absent
    for name, kind in e.slots.items():
        absent = (name in e.optional and rng.random() < 0.3) or (
            entry == "build-ppc64" and name == "handover")
        files[name] = None if absent else rng.choice(seeds(kind))
    opts = e.base(rng, files)
    present = [n for n, v in files.items() if v is not None]
    target = rng.choice([*present, "options"] if present else ["options"])
    if target == "options":
        what = e.options(rng, opts)
    else:
        pool = seeds(e.slots[target]) + seeds("ima") + seeds("dtb")
        data, what = mutations.mutate(rng, files[target] or b"", pool)
        files[target] = data
    scratch.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path | None] = {}
    for name, data in files.items():
        if data is None:
            paths[name] = None
        else:
            paths[name] = scratch / name
            paths[name].write_bytes(data)  # type: ignore[union-attr]
    return Case(f"{target}: {what}", scratch / "out", paths, dict(opts), e)


__all__ = ["ENTRIES", "Case", "make_case", "prepare"]
