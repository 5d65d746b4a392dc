"""Benchmark: a generated 100,000-node DTB; parse, set one property, write; vs fdtput.

Run: python bench/bench_fdt.py [NODES]. Not a test and not run in CI.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from kimagekit.devicetree import DeviceTree, Node, Prop, encode
from kimagekit.fileio import atomic_write


def generate(nodes: int) -> bytes:
    """``nodes`` nodes in groups of 100 under /soc, each with a reg and a compatible."""
    tree = DeviceTree.new()
    root = tree.root
    tree.set("/", "#address-cells", encode("u32", [1]))
    tree.set("/", "#size-cells", encode("u32", [1]))
    chosen = Node("chosen")
    root.items.append(chosen)
    soc = Node("soc")
    root.items.append(soc)
    reg, compat = tree._nameoff("reg"), tree._nameoff("compatible")
    made = 3
    group = None
    while made < nodes:
        if group is None or len(group.items) >= 100 * 3:
            group = Node(f"bus@{made:x}")
            soc.items.append(group)
            made += 1
            continue
        dev = Node(f"dev@{made:x}", [Prop("reg", encode("u32", [made, 0x100]), reg),
                                     Prop("compatible", b"kimagekit,bench\0", compat)])
        group.items.append(dev)
        made += 1
    return tree.build()


def main() -> None:
    nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "big.dtb"
        src.write_bytes(generate(nodes))
        print(f"tree: {nodes} nodes, {src.stat().st_size} bytes")
        value = "quiet root=/dev/vda"  # 20 bytes with NUL: fdtput leaves no stale pad bytes
        t0 = time.perf_counter()
        tree = DeviceTree.parse(src.read_bytes())
        t1 = time.perf_counter()
        tree.set("/chosen", "bootargs", value.encode() + b"\0")
        t2 = time.perf_counter()
        atomic_write(Path(tmp) / "ours.dtb", tree.build(pack=True))
        t3 = time.perf_counter()
        ours = t3 - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        del tree
        tracemalloc.start()  # a second, traced pass for the Python heap peak
        again = DeviceTree.parse(src.read_bytes())
        again.set("/chosen", "bootargs", value.encode() + b"\0")
        again.build(pack=True)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"kimagekit: parse {t1 - t0:.3f} s, set {t2 - t1:.6f} s, write {t3 - t2:.3f} s, "
              f"total {ours:.3f} s; peak RSS {rss:.0f} MiB, peak Python heap "
              f"{peak / 2**20:.1f} MiB")
        fdtput = shutil.which("fdtput")
        if fdtput is None:
            print("fdtput not installed: no comparison")
            return
        theirs_path = Path(tmp) / "theirs.dtb"
        shutil.copyfile(src, theirs_path)
        t0 = time.perf_counter()
        subprocess.run([fdtput, "-t", "s", str(theirs_path), "/chosen", "bootargs",
                        value], check=True)
        theirs = time.perf_counter() - t0
        same = theirs_path.read_bytes() == (Path(tmp) / "ours.dtb").read_bytes()
        print(f"fdtput: {theirs:.3f} s (process included); ratio {ours / theirs:.1f}x; "
              f"outputs identical: {same}")


if __name__ == "__main__":
    main()
