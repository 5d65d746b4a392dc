"""Device-tree comparisons for bench/run_all.py: get/set against pylibfdt and fdtget/fdtput,
``dtb show --dts`` against dtc.

The library cases are the issue's goal: one interpreter each side, the same file read and the
same blob written (pylibfdt: resize, setprop, pack, write; kimagekit: ``dtb_file``), outputs
compared byte for byte after every run. The command-line cases add each side's process start
(kimagekit's CLI start-up is measured and owned elsewhere). Inputs: a generated 100,000-node tree
(``bench_fdt.generate``, cached in the temp dir) and a QEMU tree from the shared corpus.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.runner import KIMAGEKIT, ROOT, Case, quick

WORK = Path(tempfile.gettempdir()) / "kimagekit-bench-dtb"
CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
QEMU = "qemu-7.2-aarch64-virt.dtb"
BOOTARGS = "quiet root=/dev/vda"


# -- the sides (module level, so the runner pickles them into a fresh interpreter) ---------------
def kimagekit_set(src: str, out: str, node: str, prop: str, value: str) -> None:
    from kimagekit import dtb_file

    dtb_file.set_property(src, out, node, prop, "string", [value], pack=True)


def pylibfdt_set(src: str, out: str, node: str, prop: str, value: str) -> None:
    import libfdt

    with open(src, "rb") as f:
        fdt = libfdt.Fdt(bytearray(f.read()))
    fdt.resize(fdt.totalsize() + len(prop) + len(value) + 64)
    fdt.setprop_str(fdt.path_offset(node), prop, value)
    fdt.pack()
    with open(out, "wb") as f:
        f.write(fdt.as_bytearray())


def kimagekit_get(src: str, node: str, prop: str) -> None:
    from kimagekit import dtb_file

    sys.stdout.write(dtb_file.read_property(src, node, prop).hex() + "\n")


def pylibfdt_get(src: str, node: str, prop: str) -> None:
    import libfdt

    with open(src, "rb") as f:
        fdt = libfdt.Fdt(f.read())
    sys.stdout.write(bytes(fdt.getprop(fdt.path_offset(node), prop)).hex() + "\n")


def kimagekit_dts(src: str) -> None:
    from kimagekit import dtb_file

    sys.stdout.write(dtb_file.dts_text(src))


def kimagekit_handover(src: str, out: str, start: str, size: str) -> None:
    from kimagekit import dtb_file

    dtb_file.patch_handover(src, out, start=int(start), size=int(size), style="seed", pack=True)


def pylibfdt_handover(src: str, out: str, start: str, size: str) -> None:
    # what the seed-style hand-over edit does (without kimagekit's RAM and reservation checks)
    import libfdt

    with open(src, "rb") as f:
        fdt = libfdt.Fdt(bytearray(f.read()))
    fdt.resize(fdt.totalsize() + 256)
    chosen = fdt.path_offset("/chosen")
    fdt.setprop_u64(chosen, "linux,kexec-handover-buffer-start", int(start))
    fdt.setprop_u64(fdt.path_offset("/chosen"), "linux,kexec-handover-buffer-end",
                    int(start) + int(size))
    libfdt.check_err(libfdt.fdt_add_mem_rsv(fdt._fdt, int(start), int(size)))
    fdt.pack()
    with open(out, "wb") as f:
        f.write(fdt.as_bytearray())


def same_files(a: str, b: str) -> None:
    if Path(a).read_bytes() != Path(b).read_bytes():
        raise AssertionError(f"{a} and {b} differ")


# -- inputs ------------------------------------------------------------------------------------
def _big(nodes: int) -> Path:
    # made in a child: the runner stays small (a spawned child's peak RSS starts from its parent's)
    path = WORK / f"tree-{nodes}.dtb"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        code = ("import sys; from bench.bench_fdt import generate; "
                "open(sys.argv[1], 'wb').write(generate(int(sys.argv[2])))")
        subprocess.run([sys.executable, "-c", code, str(tmp), str(nodes)], check=True,
                       env=_child_env())
        tmp.replace(path)
    return path


def _in_child(fn: Callable[..., None], *args: str) -> None:
    # The runner spawns its children while it shares its memory with them, so what it holds
    # shows in their peak RSS: nothing big is ever loaded here.
    code = f"import sys; from bench.cmp_dtb import {fn.__name__} as f; f(*sys.argv[1:])"
    subprocess.run([sys.executable, "-c", code, *args], check=True, env=_child_env())


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


def _with_memory(nodes: int) -> Path:
    """The generated tree plus a /memory node (RAM for the hand-over check)."""
    path = WORK / f"tree-{nodes}-mem.dtb"
    if not path.exists():
        big = _big(nodes)
        code = ("import sys; from kimagekit.devicetree import DeviceTree, Node, Prop; "
                "t = DeviceTree.parse(open(sys.argv[1], 'rb').read()); "
                "t.root.items.append(Node('memory@0', [Prop('device_type', b'memory\\0', "
                "t._nameoff('device_type')), Prop('reg', (1 << 30).to_bytes(8, 'big'), "
                "t._nameoff('reg'))])); open(sys.argv[2], 'wb').write(t.build())")
        tmp = path.with_suffix(".tmp")
        subprocess.run([sys.executable, "-c", code, str(big), str(tmp)], check=True,
                       env=_child_env())
        tmp.replace(path)
    return path


def _handover_case(label: str, src: Path, start: int) -> Case:
    ours, theirs = str(WORK / f"{label}-hk.dtb"), str(WORK / f"{label}-hr.dtb")
    args = (str(src), str(start), str(1 << 20))
    return Case(f"patch-handover seed (library vs pylibfdt), {label}",
                functools.partial(kimagekit_handover, args[0], ours, *args[1:]),
                functools.partial(pylibfdt_handover, args[0], theirs, *args[1:]),
                goal="cpu<=2x, rss<=16MiB+file", check=functools.partial(same_files, ours, theirs),
                setup=functools.partial(_in_child, pylibfdt_handover, args[0], theirs, *args[1:]),
                file_size=src.stat().st_size)


def _last_node(nodes: int) -> str:
    """The last node bench_fdt.generate makes (its loop, without the tree)."""
    made, bus, count, last = 3, -1, 0, ""
    while made < nodes:
        if bus < 0 or count >= 300:
            bus, count = made, 0
        else:
            last, count = f"/soc/bus@{bus:x}/dev@{made:x}", count + 1
        made += 1
    return last


def _tree_cases(label: str, src: Path, gets: list[tuple[str, str, str]]) -> list[Case]:
    """``dtb set /chosen bootargs`` (library and CLI) and one case per (what, node, prop) got."""
    size = src.stat().st_size
    ours, theirs = str(WORK / f"{label}-k.dtb"), str(WORK / f"{label}-r.dtb")
    goal = "cpu<=2x, rss<=16MiB+file"
    node, prop = "/chosen", "bootargs"
    cases = [Case(f"dtb set {node} {prop} (library vs pylibfdt), {label}",
                  functools.partial(kimagekit_set, str(src), ours, node, prop, BOOTARGS),
                  functools.partial(pylibfdt_set, str(src), theirs, node, prop, BOOTARGS),
                  goal=goal, check=functools.partial(same_files, ours, theirs), file_size=size,
                  setup=functools.partial(_in_child, pylibfdt_set, str(src), theirs, node, prop,
                                          BOOTARGS))]
    cases += [Case(f"dtb get {what} (library vs pylibfdt), {label}",
                   functools.partial(kimagekit_get, str(src), at, name),
                   functools.partial(pylibfdt_get, str(src), at, name),
                   goal=goal, file_size=size) for what, at, name in gets]
    fdtput, fdtget = shutil.which("fdtput"), shutil.which("fdtget")
    if fdtput and fdtget:
        cli_out, put_out = str(WORK / f"{label}-kcli.dtb"), str(WORK / f"{label}-put.dtb")
        _, at, name = gets[0]
        cases += [
            Case(f"kimagekit dtb set vs fdtput (processes), {label}",
                 [*KIMAGEKIT, "dtb", "set", "--pack", "-t", "string", "-o", cli_out, str(src),
                  node, prop, BOOTARGS],
                 [fdtput, "-t", "s", put_out, node, prop, BOOTARGS],
                 before_each=functools.partial(shutil.copyfile, src, put_out), file_size=size),
            Case(f"kimagekit dtb get vs fdtget (processes), {label}",
                 [*KIMAGEKIT, "dtb", "get", str(src), at, name],
                 [fdtget, "-t", "bx", str(src), at, name], file_size=size),
        ]
    return cases


def cases() -> list[Case]:
    nodes = 10_000 if quick() else 100_000
    big = _big(nodes)
    label = f"{nodes // 1000}k nodes"
    gets = [("/ #address-cells (first token)", "/", "#address-cells"),
            ("reg of the last node (whole tree walked)", _last_node(nodes), "reg")]
    out = _tree_cases(label, big, gets)
    out.append(_handover_case(label, _with_memory(nodes), 0x200000))
    corpus = Path(os.environ.get("KIMAGEKIT_CORPUS", CORPUS)) / "dtb"
    if (corpus / QEMU).exists():
        out += _tree_cases("QEMU aarch64 virt", corpus / QEMU,
                           [("/chosen stdout-path", "/chosen", "stdout-path")])
        out.append(_handover_case("QEMU aarch64 virt", corpus / QEMU, 0x47000000))
    dtc = shutil.which("dtc")
    if dtc:
        size = big.stat().st_size
        out += [
            Case(f"dtb show --dts vs dtc (processes), {label}",
                 [*KIMAGEKIT, "dtb", "show", "--dts", str(big)],
                 [dtc, "-q", "-I", "dtb", "-O", "dts", str(big)], goal="cpu<=1.5x",
                 file_size=size),
            Case(f"to_dts (library, one interpreter) vs dtc, {label}",
                 functools.partial(kimagekit_dts, str(big)),
                 [dtc, "-q", "-I", "dtb", "-O", "dts", str(big)], goal="cpu<=1.5x",
                 file_size=size),
        ]
    return out

