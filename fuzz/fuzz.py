#!/usr/bin/env python3
"""Random-mutation fuzzer for every kimagekit parser.

    python fuzz/fuzz.py --target ima --runs 1000000   # targets: ima, dtb, image, purgatory, kernel,
                                                      # signature

Each target has seeds (synthetic files from testdata/ and its generators, plus small corpus files
when present) and an ``exercise`` function that parses, walks and rebuilds. An input is a seed with
a few byte flips, inserted/removed runs, u32 fields overwritten with 0, 1 or huge values, or a
cut. Any exception other than KimageError is a finding: the input is saved under fuzz/crashes/
and the run fails. Tests run short runs of every target.
(atheris is not used: it does not build on every Python this project supports.)
"""

from __future__ import annotations

import argparse
import contextlib
import random
import struct
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collections.abc import Callable  # noqa: E402

from kimagekit import ima_ascii, ima_kexec, ima_log  # noqa: E402
from kimagekit.errors import KimageError  # noqa: E402

U32S = [0, 1, 2, 3, 4, 19, 20, 24, 255, 256, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def _files(pattern: str, *, corpus: str | None = None, limit: int = 64 * 1024) -> list[bytes]:
    paths = sorted(ROOT.glob(pattern)) if pattern else []
    base = ROOT.parent / "shared/corpus"
    if corpus and base.is_dir():
        paths += sorted(base.glob(corpus))
    return [p.read_bytes() for p in paths if p.is_file() and p.stat().st_size <= limit]


def seeds_ima() -> list[bytes]:
    return _files("testdata/ima/*.[bk]*", corpus="ima/*/*")


def seeds_dtb() -> list[bytes]:
    return _files("testdata/dtb/*.dtb", corpus="dtb/*.dtb")


def seeds_purgatory() -> list[bytes]:
    sys.path.insert(0, str(ROOT / "testdata"))
    import make_images

    return [make_images.make_purgatory(), *_files("", corpus="purgatory/*.ro")]


def seeds_image() -> list[bytes]:
    import tempfile

    sys.path.insert(0, str(ROOT / "testdata"))
    import make_images

    from kimagekit.arch.build import BuildInputs, build_ppc64
    from kimagekit.image import write_image

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "x.img"
        write_image(out, make_images.x86_like_image())
        seeds = [out.read_bytes()]
        # a ppc64 image: its device-tree segment is where the memory map reads RAM
        vmlinux = Path(tmp) / "vmlinux"
        vmlinux.write_bytes(make_images.make_vmlinux())
        ppc = Path(tmp) / "ppc.img"
        build_ppc64(BuildInputs(vmlinux, ppc), arch="ppc64le",
                    dtb=ROOT / "testdata" / "dtb" / "small.dtb", no_purgatory=True)
        return [*seeds, ppc.read_bytes()]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data[: rng.choice([len(data), len(data), rng.randrange(len(data) + 1)])])
    for _ in range(rng.randint(1, 4)):
        if not b:
            break
        op = rng.randrange(5)
        at = rng.randrange(len(b))
        if op == 0:
            b[at] ^= 1 << rng.randrange(8)
        elif op == 1 and at + 4 <= len(b):
            b[at:at + 4] = struct.pack(rng.choice("<>") + "I", rng.choice(U32S))
        elif op == 2:
            del b[at:at + rng.randint(1, 16)]
        elif op == 3:
            b[at:at] = rng.randbytes(rng.randint(1, 16))
        else:
            b[at] = rng.choice(b" :|\n0a")
    return bytes(b)


def exercise_ima(data: bytes) -> None:
    try:
        fmt = ima_log.detect(data[:65536], len(data))
        if fmt is None:
            fmt = ima_log.detect_or_raise(data)
        ima_log.analyse(data, fmt, banks=["sha1", "sha256"])
        for e in ima_log.iter_entries(data, fmt):
            _ = e.fields
            ima_ascii.render_line(e)
        if fmt.kind == "kexec-buffer":
            ima_kexec.restore(data, fmt.endian)
    except KimageError:
        pass
    with contextlib.suppress(KimageError):
        list(ima_ascii.parse_ascii(data))


def exercise_dtb(data: bytes) -> None:
    from kimagekit.devicetree import DeviceTree
    from kimagekit.dts import to_dts

    try:
        tree = DeviceTree.parse(data)
    except KimageError:
        return
    # a tree that parses must write back byte for byte (the blob: bytes past totalsize are
    # not its), or, read from an old version or block order, as the same tree; and render
    out = tree.build()
    if tree.relaid:
        if to_dts(DeviceTree.parse(out)) != to_dts(tree):
            raise AssertionError("re-laid tree does not read back the same")
    elif out != data[:int.from_bytes(data[4:8], "big")]:
        raise AssertionError("parsed tree does not rebuild byte for byte")
    to_dts(tree)
    tree.build(pack=True)


def exercise_purgatory(data: bytes) -> None:
    from kimagekit.purgatory import load, parse_purgatory

    try:
        obj = parse_purgatory(data)
        load(obj, 0x7000_0000)
    except KimageError:
        pass


def exercise_image(data: bytes) -> None:
    from kimagekit.image import read_image
    from kimagekit.memory_map import image_map

    with contextlib.suppress(KimageError):
        image_map(read_image(data), data)  # the map reads the tree or e820 it holds


def seeds_kernel() -> list[bytes]:
    sys.path.insert(0, str(ROOT / "testdata"))
    import make_kernels

    vml = make_kernels.make_vmlinux()
    return [vml, make_kernels.make_bzimage(), make_kernels.make_bzimage(compression="xz"),
            make_kernels.make_arm64_image(), make_kernels.make_zboot()]


def exercise_kernel(data: bytes) -> None:
    from kimagekit import kernels, pe_file
    from kimagekit import vmlinux as vm

    # small output limit: a mutated payload must not be able to make the run slow or big
    limit = 1 << 22
    kind = kernels.kernel_kind(data[:4096])
    with contextlib.suppress(KimageError):
        if kind == "bzImage":
            img = kernels.read_bzimage(data, decompress=True, limit=limit)
            kernels.probe_bzimage64(data, img)
        elif kind == "zboot":
            kernels.read_zboot(data, decompress=True, limit=limit)
        elif kind == "arm64-image":
            kernels.read_arm64_image(data)
        elif kind == "vmlinux":
            vm.read_elf_kernel(data)
    with contextlib.suppress(KimageError):
        kernels.find_purgatory(data, limit=limit)
    if pe_file.has_pe(data):
        with contextlib.suppress(KimageError):
            pe_file.parse_pe(data)


def seeds_signature() -> list[bytes]:
    """PE kernels signed by testdata/make_signed.py: RSA with and without authenticated
    attributes, ECDSA with the issuer carried in the message; and the corpus's IMA list with
    every signed template, when present."""
    sys.path.insert(0, str(ROOT / "testdata"))
    import make_kernels
    import make_signed

    keys = make_signed.test_keys()
    plain = make_kernels.make_bzimage(pe=True)
    # and IMA lists with ima-sig, ima-sigv2, ima-modsig and evm-sig entries
    return [*_files("", corpus="ima/binary/ibmtss-0ab80cc-imatest.log"),
            make_signed.sign_pe(plain, keys.rsa_key, keys.rsa_cert),
            make_signed.sign_pe(plain, keys.rsa_key, keys.rsa_cert, attributes=False),
            make_signed.sign_pe(make_kernels.make_zboot(pe=True), keys.ec_key, keys.ec_cert,
                                extra_certs=(keys.ca_cert,))]


def exercise_signature(data: bytes) -> None:
    from kimagekit.sig.authenticode import summaries, verify_buffer

    sys.path.insert(0, str(ROOT / "testdata"))
    import make_signed

    from kimagekit.sig.keys import TrustedCert

    keys = make_signed.test_keys()
    trusted = (TrustedCert("ca", keys.ca_cert), TrustedCert("rsa", keys.rsa_cert))
    if not data.startswith(b"MZ"):
        from kimagekit.sig.ima_sig import check_signatures

        with contextlib.suppress(KimageError):
            fmt = ima_log.detect_or_raise(data)
            list(check_signatures(ima_log.iter_entries(data, fmt), trusted))
        return
    summaries(data)  # never raises: a bad entry carries its error
    with contextlib.suppress(KimageError):
        verify_buffer(data, trusted)


TARGETS: dict[str, tuple[Callable[[], list[bytes]], Callable[[bytes], None]]] = {
    "kernel": (seeds_kernel, exercise_kernel),
    "signature": (seeds_signature, exercise_signature),
    "ima": (seeds_ima, exercise_ima),
    "dtb": (seeds_dtb, exercise_dtb),
    "purgatory": (seeds_purgatory, exercise_purgatory),
    "image": (seeds_image, exercise_image),
}


def run(target: str, runs: int, seed: int, out: Path) -> int:
    make_seeds, exercise = TARGETS[target]
    rng = random.Random(seed)
    pool = make_seeds()
    start = time.monotonic()
    for i in range(runs):
        data = mutate(rng, rng.choice(pool))
        try:
            exercise(data)
        except Exception:
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"{target}-{seed}-{i}.bin"
            path.write_bytes(data)
            traceback.print_exc()
            print(f"finding after {i + 1} inputs: {path}", file=sys.stderr)
            return 1
    rate = runs / max(time.monotonic() - start, 1e-9)
    print(f"{target}: {runs} inputs, no finding ({rate:,.0f}/s, seed {seed})")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--target", choices=sorted(TARGETS), default="ima")
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--crashes", type=Path, default=ROOT / "fuzz/crashes")
    args = ap.parse_args()
    return run(args.target, args.runs, args.seed, args.crashes)


if __name__ == "__main__":
    sys.exit(main())
