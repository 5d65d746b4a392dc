"""Loader profiles: the loading kernel's version and config set every rule at once (each rule
here with the version where it changes), found from --loader-version / --loader-config or the
kernel's own version string and a config beside it; the fine-grained options still override."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from image_helpers import PURGATORY_CORPUS, gen
from kernel_helpers import kgen

from kimagekit.arch.build import BuildInputs, build_x86_64
from kimagekit.cli import main
from kimagekit.errors import KimageError, RuleError, UsageError
from kimagekit.formats import bzimage as bz
from kimagekit.loader_profile import (
    NEWEST,
    LoaderProfile,
    config_beside,
    parse_version,
    read_config,
    resolve,
    version_from_string,
)
from kimagekit.purgatory import DigestPolicy, EntryRule
from kimagekit.segments import HoleSearch, MemRange, Role

DEBIAN_61 = ("6.1.0-50-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC "
             "Debian 6.1.176-1 (2026-05-10)")


def config_text(version: str, *lines: str) -> str:
    return (f"#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 {version} Kernel "
            "Configuration\n#\nCONFIG_KEXEC_FILE=y\n" + "".join(f"{ln}\n" for ln in lines))


@pytest.mark.parametrize(("text", "version"), [
    ("6.1", (6, 1, 0)), ("6.12.117", (6, 12, 117)), ("7.2.13+deb14-amd64", (7, 2, 13)),
    ("newest", NEWEST)])
def test_parse_version(text: str, version: tuple[int, int, int]) -> None:
    assert parse_version(text) == version


def test_parse_version_refuses_words() -> None:
    with pytest.raises(UsageError) as e:
        parse_version("bookworm")
    assert str(e.value) == ("--loader-version 'bookworm': not a kernel version (e.g. 6.1, "
                            "6.12.117, newest)")


def test_version_string_prefers_debians_upstream_version() -> None:
    # Debian's ABI name keeps patch level 0; the entry rule turns on at 6.1.165
    assert version_from_string(DEBIAN_61) == (6, 1, 176)
    assert version_from_string("Linux version 6.12.0-rc1 (x@y) #1") == (6, 12, 0)
    assert version_from_string("no digits") is None
    # sid's banner: the cross compiler's Debian version comes first
    assert version_from_string(
        "Linux version 7.2.13+deb14-riscv64 (debian-kernel@lists.debian.org) "
        "(riscv64-linux-gnu-gcc-16 (Debian 16.2.0-4) 16.2.0, GNU ld (GNU Binutils for Debian) "
        "2.47.50.20261021) #1 SMP PREEMPT Debian 7.2.13-1 (2026-10-28)") == (7, 2, 13)


@pytest.mark.parametrize(("version", "hole", "pref", "entry", "policy"), [
    ((6, 1, 164), HoleSearch.PRE_6_8, False, EntryRule.E_ENTRY, DigestPolicy.UPSTREAM_4_10),
    ((6, 1, 176), HoleSearch.PRE_6_8, False, EntryRule.PURGATORY_START,
     DigestPolicy.UPSTREAM_4_10),
    ((6, 7, 12), HoleSearch.PRE_6_8, False, EntryRule.E_ENTRY, DigestPolicy.UPSTREAM_4_10),
    ((6, 8, 0), HoleSearch.UPSTREAM_6_8, False, EntryRule.E_ENTRY, DigestPolicy.UPSTREAM_4_10),
    ((6, 9, 0), HoleSearch.UPSTREAM_6_8, True, EntryRule.E_ENTRY, DigestPolicy.UPSTREAM_4_10),
    ((6, 12, 117), HoleSearch.UPSTREAM_6_8, True, EntryRule.E_ENTRY,
     DigestPolicy.UPSTREAM_4_10),
    ((6, 15, 0), HoleSearch.UPSTREAM_6_8, True, EntryRule.E_ENTRY, DigestPolicy.UPSTREAM_6_15),
    ((7, 2, 13), HoleSearch.UPSTREAM_6_8, True, EntryRule.PURGATORY_START,
     DigestPolicy.UPSTREAM_6_15),
])
def test_rules_by_version(version: tuple[int, int, int], hole: HoleSearch, pref: bool,
                          entry: EntryRule, policy: DigestPolicy) -> None:
    p = LoaderProfile(version, "test")
    assert (p.hole_search, p.kernel_above_pref_address, p.entry_rule, p.digest_policy) == (
        hole, pref, entry, policy)


def test_config_rules_and_their_versions(tmp_path: Path) -> None:
    cfg = tmp_path / "config-6.16.3"
    cfg.write_text(config_text("6.16.3", "CONFIG_IMA_KEXEC=y",
                               "CONFIG_IMA_KEXEC_EXTRA_MEMORY_KB=64", "CONFIG_KEXEC_HANDOVER=y",
                               "# CONFIG_CRASH_HOTPLUG is not set", "CONFIG_PPC_4K_PAGES=y"))
    assert read_config(cfg) == ({"KEXEC_FILE": "y", "IMA_KEXEC": "y",
                                 "IMA_KEXEC_EXTRA_MEMORY_KB": "64", "KEXEC_HANDOVER": "y",
                                 "PPC_4K_PAGES": "y"}, (6, 16, 3))
    p = resolve(config=cfg)
    assert (p.version, p.source, p.config) == ((6, 16, 3), "--loader-config header", str(cfg))
    assert p.rules() == {"hole_search": "upstream-6.8", "kernel_above_pref_address": True,
                         "entry_rule": "e-entry", "digest_policy": "upstream-6.15",
                         "ima_kexec": True, "ima_extra_memory": 65536,
                         "kexec_handover_room": True, "force_dtb": False,
                         "ppc_page_size": 4096, "efi": False}
    # the same options on an older kernel: no extra memory option (6.15) and no KHO (6.16)
    older = resolve("6.14", cfg)
    assert (older.ima_extra_memory, older.kho_room, older.source) == (None, False,
                                                                      "--loader-version")


def test_a_file_that_is_no_config_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("hello\n")
    with pytest.raises(UsageError) as e:
        resolve(config=f)
    assert str(e.value) == f"{f}: --loader-config: not a kernel config (no CONFIG_ line)"


def test_defaults_from_the_kernel_and_the_config_beside_it(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    k = boot / "vmlinuz-6.12.117+deb13-amd64"
    k.write_bytes(kgen.make_bzimage())
    assert config_beside(k) is None
    p = resolve(kernel=k)  # the synthetic kernel's version string: 9.9.9
    assert (p.version, p.source, p.config, p.ima_kexec) == (
        (9, 9, 9), "the kernel's version string", None, True)
    (boot / "config-6.12.117+deb13-amd64").write_text(config_text("6.12.117"))
    p = resolve(kernel=k)
    assert (p.version, p.source, p.ima_kexec) == ((6, 12, 117), "the config beside the kernel",
                                                  False)
    # sid's layout: usr/lib/modules/V/{vmlinuz,config}
    mods = tmp_path / "usr" / "lib" / "modules" / "7.2.13+deb14-amd64"
    mods.mkdir(parents=True)
    (mods / "vmlinuz").write_bytes(kgen.make_bzimage())
    (mods / "config").write_text(config_text("7.2.13", "CONFIG_KEXEC_HANDOVER=y"))
    assert resolve(kernel=mods / "vmlinuz").kho_room
    # a named loader ignores the kernel's config; nothing at all: the newest rules
    assert resolve("6.1", kernel=k).config is None
    assert resolve() == LoaderProfile(NEWEST, "newest rules")


# --- what the rules change in an x86-64 build ----------------------------------------------------

def _build(tmp_path: Path, corpus: Path, profile: LoaderProfile,
           ram: tuple[MemRange, ...] = (MemRange(0x100000, (4 << 30) - 0x100000),),
           ima: bool = False) -> list[tuple[Role, int, int, int]]:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(kgen.make_bzimage(init_size=0x3000000))
    built = build_x86_64(BuildInputs(kernel, tmp_path / "x.img",
                                     ima=gen.restorable_list(tmp_path / "ima.bin") if ima
                                     else None, purgatory=corpus / PURGATORY_CORPUS),
                         ram=ram, profile=profile)
    assert built.result.loader_profile == profile.name  # type: ignore[union-attr]
    return [(s.role, s.mem, s.memsz, s.bufsz) for s in built.image.segments]


# [1 MiB, 58 MiB) and five 32 MiB ranges: only the low one holds a 48 MiB kernel
LOW_RAM = (MemRange(0x100000, 0x3A00000 - 0x100000),
           *(MemRange(at << 20, 32 << 20) for at in (64, 128, 192, 256, 320)))
LOW_MEM = "0x100000-0x39fffff," + ",".join(f"{at << 20:#x}+{32 << 20:#x}"
                                           for at in (64, 128, 192, 256, 320))


def test_kernel_below_pref_address_before_69_only(tmp_path: Path, corpus: Path) -> None:
    # the kernel (48 MiB) fits only in the low range, whose top-down slot is 10 MiB: under
    # pref_address (16 MiB), taken before 6.9 and refused since
    segs = _build(tmp_path, corpus, LoaderProfile((6, 8, 0), "test"), LOW_RAM)
    assert segs[2] == (Role.KERNEL, 0xA00000, 0x3000000, 0x580)
    with pytest.raises(RuleError) as e:
        _build(tmp_path, corpus, LoaderProfile((6, 9, 0), "test"), LOW_RAM)
    assert str(e.value) == ("kexec: segment[2](kernel): no free memory for 0x3000000 bytes "
                            "aligned to 0x200000 in [0x1000000, 0xffffffffffffffff] (top-down)")


def test_kho_room_and_ima_room(tmp_path: Path, corpus: Path) -> None:
    # 4096 + 1 + 30 -> 0x1020, + EFI 16 + 96, + IMA 16 + 16, + KHO 16 + 32, + RNG 16 + 32
    plain = LoaderProfile((7, 2, 0), "test", "cfg", ima_kexec=False)
    both = LoaderProfile((7, 2, 0), "test", "cfg", ima_kexec=True, kexec_handover=True)
    assert _build(tmp_path, corpus, plain)[1][3] == 0x10C0
    segs = _build(tmp_path, corpus, both)
    assert segs[1][3] == 0x10C0 + 0x20 + 0x30
    with (tmp_path / "x.img").open("rb") as f:
        data = f.read()
    from kimagekit.image import read_image

    info = read_image(data)
    bp = info.segment(Role.BOOT_PARAMS)
    assert bp is not None
    params = data[bp.offset:bp.offset + bp.bufsz]
    kho_at = 0x1020 + 16 + 96 + 16 + 16
    # type and length written, not chained: an offline build has no KHO images
    assert struct.unpack_from("<QII", params, kho_at) == (0, bz.SETUP_KEXEC_KHO, 32)
    assert struct.unpack_from("<Q", params, bz.FIELD_OFFSET["setup_data"]) == (0,)
    # KHO came in 6.16: the same options on 6.15 leave no room
    older = LoaderProfile((6, 15, 0), "test", "cfg", ima_kexec=True, kexec_handover=True)
    assert _build(tmp_path, corpus, older)[1][3] == 0x10C0 + 0x20


def test_ima_extra_memory_sizes_the_handover(tmp_path: Path, corpus: Path) -> None:
    half_page = _build(tmp_path, corpus, LoaderProfile((6, 14, 0), "t", "c",
                                                       ima_extra_memory_kb=64), ima=True)
    extra = _build(tmp_path, corpus, LoaderProfile((6, 15, 0), "t", "c",
                                                   ima_extra_memory_kb=64), ima=True)
    assert half_page[0][0] == extra[0][0] == Role.HANDOVER
    bufsz = half_page[0][3]
    assert half_page[0][2] == -(-(bufsz + 2048) // 4096) * 4096
    assert extra[0][2] == -(-(bufsz + 65536) // 4096) * 4096


# --- the CLI ------------------------------------------------------------------------------------

def _cli_argv(tmp_path: Path, corpus: Path, *extra: str, mem: str = LOW_MEM) -> list[str]:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(kgen.make_bzimage(init_size=0x3000000))
    return ["build", "--arch", "x86_64", "--kernel", str(kernel), "--purgatory",
            str(corpus / PURGATORY_CORPUS), "--mem", mem,
            "-o", str(tmp_path / "x.img"), *extra]


def test_cli_loader_version_and_overrides(tmp_path: Path, corpus: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli_argv(tmp_path, corpus, "--loader-version", "6.9")) == 2
    assert capsys.readouterr().err.endswith("no free memory for 0x3000000 bytes aligned to "
                                            "0x200000 in [0x1000000, 0xffffffffffffffff] "
                                            "(top-down)\n")
    assert main(_cli_argv(tmp_path, corpus, "--loader-version", "6.8", "--json")) == 0
    out = capsys.readouterr().out
    assert '"loader_profile": "6.8.0"' in out and '"policy": "upstream-4.10"' in out
    # --hole-search still overrides the profile's
    assert main(_cli_argv(tmp_path, corpus, "--loader-version", "6.8", "--hole-search",
                          "pre-6.8", "--digest-policy", "seed")) == 0
    assert "(seed policy)" in capsys.readouterr().out
    assert main(_cli_argv(tmp_path, corpus, "--loader-version", "six")) == 2
    assert capsys.readouterr().err == ("kimagekit: error: --loader-version 'six': not a kernel "
                                       "version (e.g. 6.1, 6.12.117, newest)\n")


def test_cli_named_loader_without_ima_kexec_refuses_a_handover(
        tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config"
    cfg.write_text(config_text("6.12.117"))
    ima = gen.restorable_list(tmp_path / "ima.bin")
    assert main(_cli_argv(tmp_path, corpus, "--loader-config", str(cfg), "--ima",
                          str(ima))) == 2
    assert capsys.readouterr().err == (
        f"kimagekit: error: the loader profile 6.12.117 ({cfg}) has no CONFIG_IMA_KEXEC: it "
        "hands over no IMA list (--ima-kexec overrides)\n")
    assert main(_cli_argv(tmp_path, corpus, "--loader-config", str(cfg), "--ima", str(ima),
                          "--ima-kexec", mem="0x100000-0xffffffff")) == 0


def test_inspect_names_the_profile_a_kernel_implies(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    k = tmp_path / "vmlinuz-6.12.117+deb13-amd64"
    k.write_bytes(kgen.make_bzimage())
    cfg = tmp_path / "config-6.12.117+deb13-amd64"
    cfg.write_text(config_text("6.12.117", "CONFIG_KEXEC_HANDOVER=y"))
    assert main(["inspect", str(k)]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = lines.index("  kexec_file (bzImage64): loadable")
    assert lines[i + 1:i + 3] == [
        f"  loader profile (when it performs a load): 6.12.117, from the config beside the "
        f"kernel; config {cfg}",
        "    hole_search upstream-6.8, kernel_above_pref_address True, entry_rule e-entry, "
        "digest_policy upstream-4.10, ima_kexec False, kexec_handover_room False, "
        "force_dtb False, efi False"]
    cfg.unlink()
    assert main(["inspect", str(k), "--json"]) == 0
    import json

    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["loader_profile"] == {
        "name": "9.9.9", "source": "the kernel's version string", "config": None,
        "rules": {"hole_search": "upstream-6.8", "kernel_above_pref_address": True,
                  "entry_rule": "purgatory-start", "digest_policy": "upstream-6.15",
                  "ima_kexec": True, "ima_extra_memory": None, "kexec_handover_room": False,
                  "force_dtb": True, "ppc_page_size": None, "efi": True}}


def test_ppc64_page_size_and_policy_from_the_loader_config(
        tmp_path: Path, ppc64le_vmlinux: Path, corpus: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    dtb = corpus / "dtb" / "qemu-7.2-ppc64-pseries.dtb"
    cfg = tmp_path / "config"
    cfg.write_text(config_text("6.12.117", "CONFIG_PPC_4K_PAGES=y"))
    out = tmp_path / "x.img"
    assert main(["build", "--arch", "ppc64le", "--no-purgatory",
                 "--kernel", str(ppc64le_vmlinux), "--dtb",
                 str(dtb), "--loader-config", str(cfg), "-o", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["result"]
    assert (result["page_size"], result["policy"]) == (4096, "upstream-4.10")
    # the config Debian installs beside its vmlinux: 64 KiB pages, kimagekit's seed policy
    assert main(["build", "--arch", "ppc64le", "--no-purgatory",
                 "--kernel", str(ppc64le_vmlinux), "--dtb",
                 str(dtb), "-o", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["result"]
    assert (result["page_size"], result["policy"]) == (65536, "seed")


def test_a_kernel_on_stdin_or_missing_implies_the_newest_rules(tmp_path: Path) -> None:
    # stdin is read once, by the build; a missing file is reported where the build reads it
    assert resolve(kernel="-") == LoaderProfile(NEWEST, "newest rules")
    assert resolve(kernel=tmp_path / "missing") == LoaderProfile(NEWEST, "newest rules")


def test_inspect_names_the_profile_of_a_vmlinux(capsys: pytest.CaptureFixture[str]) -> None:
    # Debian's ppc64el vmlinux, its config beside it as the package installs it: the banner's
    # "Debian 6.1.x" version and the config's 64 KiB pages
    from conftest import debian_artifact

    vmlinux = debian_artifact("ppc64le-vmlinux")
    cfg = vmlinux.parent / "config-6.1.0-50-powerpc64le"
    assert main(["inspect", str(vmlinux), "--json"]) == 0
    import json

    profile = json.loads(capsys.readouterr().out)["summary"]["loader_profile"]
    assert profile["source"] == "the config beside the kernel"
    assert profile["config"] == str(cfg)
    assert profile["name"].startswith("6.1.")
    assert profile["rules"]["ppc_page_size"] == 0x10000
    assert profile["rules"]["ima_kexec"] is False
    assert profile["rules"]["digest_policy"] == "upstream-4.10"
    assert main(["inspect", str(vmlinux)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2] == (f"  loader profile (when it performs a load): {profile['name']}, from "
                         f"the config beside the kernel; config {cfg}")


def test_a_config_kconfig_could_not_have_written_is_refused(tmp_path: Path) -> None:
    # a malformed number used to become 0 (half a page of spare room): a plausible wrong answer
    cfg = tmp_path / "config"
    cfg.write_text(config_text("6.15.0", "CONFIG_IMA_KEXEC=y",
                               "CONFIG_IMA_KEXEC_EXTRA_MEMORY_KB=lots"))
    line = cfg.read_text().splitlines().index("CONFIG_IMA_KEXEC_EXTRA_MEMORY_KB=lots") + 1
    with pytest.raises(UsageError) as err:
        read_config(cfg)
    assert str(err.value) == (f"{cfg}: --loader-config: line {line}: "
                              "CONFIG_IMA_KEXEC_EXTRA_MEMORY_KB='lots' is not an integer")
    # a config is read whole: past 16 MiB it is not one, refused by its size alone
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.truncate((16 << 20) + 1)
    with pytest.raises(KimageError) as too_big:
        read_config(big)
    assert str(too_big.value) == ("--loader-config: 16777217 bytes, more than the bound for "
                                  "--loader-config (16777216 bytes)")  # the CLI names the file
