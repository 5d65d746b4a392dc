"""The README's opening command and its "Recipes": every block run as it stands, in a scratch
folder holding the bundled and generated files under the names the recipes use."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from image_helpers import gen, ppc_gen

from kimagekit import dtb_file
from kimagekit.image import verify

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def recipes() -> dict[str, str]:
    """Heading -> the sh block under it, for each ### of the Recipes section."""
    section = README.split("\n## Recipes\n", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"^### (.+?)\n.*?```sh\n(.*?)```", section, re.S | re.M)
    return dict(found)


RECIPES = recipes()


def _shell(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``script`` under bash -e in ``cwd``, ``kimagekit`` being this checkout's CLI (a shim in a
    temporary folder of its own: never inside ``cwd``, which may be the checkout)."""
    bin_dir = Path(tempfile.mkdtemp(prefix="kimagekit-bin-"))
    shim = bin_dir / "kimagekit"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m kimagekit "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    try:
        return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                              capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(bin_dir)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    ima = ROOT / "testdata" / "ima"
    (tmp_path / "binary_runtime_measurements").write_bytes((ima / "small-le.bin").read_bytes())
    quoted = json.loads((ima / "small-le.pcrs.json").read_text())
    (tmp_path / "pcrs.txt").write_text("".join(
        f"PCR-{int(pcr):02d}: {value}\n" for bank in quoted.values()
        for pcr, value in bank.items()))
    (tmp_path / "vmlinux").write_bytes(gen.make_vmlinux())
    (tmp_path / "purgatory.ro").write_bytes(ppc_gen.make_ppc64_purgatory())
    (tmp_path / "system.dtb").write_bytes((ROOT / "testdata/dtb/small.dtb").read_bytes())
    gen.restorable_list(tmp_path / "measurements.bin")
    return tmp_path


def test_the_readme_has_the_three_recipes() -> None:
    assert list(RECIPES) == ["Forensic analyst: a measurement list and a quote",
                             "Firmware engineer: a vmlinux and a device tree",
                             "Device-tree user (fdtget/fdtput habits)"]
    assert all(line.startswith("kimagekit ") for block in RECIPES.values()
               for line in block.splitlines())


def test_forensic_recipe(scratch: Path) -> None:
    done = _shell(RECIPES["Forensic analyst: a measurement list and a quote"], scratch)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.splitlines()[0] == (
        "OK: 9 entries, 1 violations, 0 template digest mismatches (sha1)")
    assert done.stdout.splitlines()[-1] == (
        "OK: chain matches the quote, 8 expected PCR values reproduced")
    entries = json.loads((scratch / "entries.json").read_text())["entries"]
    assert len(entries) == 9


def test_firmware_recipe(scratch: Path) -> None:
    done = _shell(RECIPES["Firmware engineer: a vmlinux and a device tree"], scratch)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert verify(scratch / "kexec.img").ok
    assert f"ok {verify(scratch / 'kexec.img').digest.hex()}" in done.stdout.splitlines()
    assert len(ET.parse(scratch / "map.svg").getroot()) > 0
    assert dtb_file.read_property(scratch / "next.dtb", "/chosen", "bootargs") == \
        b"console=hvc0\0"
    assert 'bootargs = "console=hvc0";' in done.stdout


def test_device_tree_recipe(scratch: Path) -> None:
    done = _shell(RECIPES["Device-tree user (fdtget/fdtput habits)"], scratch)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert dtb_file.read_property(scratch / "new.dtb", "/chosen", "bootargs") == \
        b"console=hvc0 quiet\0"
    assert dtb_file.read_property(scratch / "system.dtb", "/chosen", "bootargs") == \
        b"console=hvc0\0"


def test_the_opening_command_runs() -> None:
    first = README.split("```sh\n", 1)[1].splitlines()[0]
    install, run = first.split(" && ")
    assert install == "pip install -e ."
    done = _shell(run, ROOT)
    assert done.returncode == 0, done.stderr
    assert not (ROOT / ".bin").exists()  # nothing left in the checkout
    assert done.stdout.splitlines()[-1] == (
        "OK: chain matches the quote, 8 expected PCR values reproduced")


def test_the_test_command_fetches_what_the_tests_need() -> None:
    second = README.split("```sh\n", 1)[1].splitlines()[1]
    assert second == ("pip install -e '.[test]' && python3 scripts/fetch_artifacts.py && "
                      "python3 -m pytest -q")
    assert "downloads about 610 MB" in " ".join(README.split())
