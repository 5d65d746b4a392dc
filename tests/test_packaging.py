"""Package metadata (SPDX licence, its text, classifiers, the typer pin) and the optional
compressors: a kernel payload that needs a missing one is refused naming the extra."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest
from kernel_helpers import kgen

from kimagekit.cli import main

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_licence_is_an_spdx_expression_with_its_text() -> None:
    project = PROJECT["project"]
    assert (project["license"], project["license-files"]) == ("GPL-2.0-only", ["LICENSE"])
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE\n                       "
                                    "Version 2, June 1991")
    assert "END OF TERMS AND CONDITIONS" in text
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # PEP 639
    build = PROJECT["build-system"]["requires"]
    assert build == ["setuptools>=77"]  # the first setuptools that takes PEP 639 metadata


def test_metadata_classifiers_and_keywords() -> None:
    project = PROJECT["project"]
    assert "Operating System :: POSIX :: Linux" in project["classifiers"]
    assert "Topic :: System :: Boot" in project["classifiers"]
    assert "Typing :: Typed" in project["classifiers"]
    assert {"kexec", "IMA", "dtb"} <= set(project["keywords"])


def test_typer_is_pinned_below_its_next_release_line() -> None:
    deps = PROJECT["project"]["dependencies"]
    assert [d for d in deps if d.startswith("typer")] == ["typer>=0.28,<0.29"]


def test_compressors_are_an_extra_the_tests_install() -> None:
    extras = PROJECT["project"]["optional-dependencies"]
    assert extras["compressors"] == ["lz4>=4", "zstandard>=0.22"]
    assert "kimagekit[compressors]" in extras["test"]
    deps = " ".join(PROJECT["project"]["dependencies"])
    assert "lz4" not in deps and "zstandard" not in deps


@pytest.mark.parametrize(("kind", "module"), [("lz4", "lz4"), ("zstd", "zstandard")])
def test_a_payload_whose_compressor_is_missing_is_refused_naming_the_extra(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        kind: str, module: str) -> None:
    kernel = tmp_path / f"bzImage.{kind}"
    kernel.write_bytes(kgen.make_bzimage(compression=kind))
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # an import of it now fails
    assert main(["extract-purgatory", str(kernel), "-o", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kimagekit: error: {kernel}: bzImage: payload at offset 0x")
    assert err.endswith(f": {kind} payload needs the Python package '{module}': pip install "
                        "'kimagekit[compressors]'\n")
    assert not (tmp_path / "p").exists()


def test_gzip_and_xz_kernels_need_no_extra(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("lz4", "zstandard"):
        monkeypatch.setitem(sys.modules, module, None)
    for kind in ("gzip", "xz"):
        kernel = tmp_path / f"bzImage.{kind}"
        kernel.write_bytes(kgen.make_bzimage(compression=kind))
        assert main(["inspect", str(kernel)]) == 0
        assert f"payload: {kind}, " in capsys.readouterr().out
