"""Which kernel performs the load, and so which placement and sizing rules apply.

A :class:`LoaderProfile` is one frozen value: the loading kernel's version and the config options
that change what ``kexec_file_load`` produces. Every version- or config-dependent rule the
loaders follow is read from it (its properties), so a profile names the rules at once:

- hole search: before 6.8 a top-down search walks RAM upwards and starts a byte low
  (``HoleSearch.PRE_6_8``); since 6.8 it walks from the highest range.
- kernel ``buf_min``: since 6.9 (43b1d3e68ee7) the x86 bzImage loader keeps the kernel at or above
  its ``pref_address``; before, at or above 1 MiB (seen on Debian's 6.1.176: it places a kernel
  at 4 MiB where 6.12 and 7.2 refuse, EADDRNOTAVAIL).
- purgatory entry: ``purgatory_start`` (the "derive purgatory entry from symbol" change) from
  7.0, and in 6.1 from 6.1.165; ``e_entry`` otherwise. The two agree on the kernels' own
  purgatories.
- digest policy: the IMA segment hashed (4.10 to 6.14) or left out (6.15+).
- CONFIG_IMA_KEXEC: room for the SETUP_IMA setup_data (x86) and a hand-over at all;
  CONFIG_IMA_KEXEC_EXTRA_MEMORY_KB (6.15+): the hand-over's spare room (else half a page);
  CONFIG_KEXEC_HANDOVER (6.16+): room for a SETUP_KEXEC_KHO entry (x86); the page size (ppc64:
  CONFIG_PPC_64K_PAGES / CONFIG_PPC_4K_PAGES).
- KEXEC_FILE_FORCE_DTB (x86, 6.18+, f367474b5884): room for the running tree in SETUP_DTB.
- CONFIG_EFI (x86): whether the setup_data entries after EFI's start past its room (they do
  not without it, though the room is counted). A Kconfig-written config (its header names the
  version) without ``CONFIG_EFI=y`` means off; a config without a header says nothing of it.

Without a config the config-dependent rules are the newest kernels' defaults as kimagekit has
always built: IMA_KEXEC on, no KHO room, half a page of spare room, the arch's page size.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CONFIG_OPTIONS", "NEWEST", "LoaderProfile", "Version", "config_beside",
           "from_config", "kernel_version", "parse_version", "read_config", "resolve",
           "version_from_string"]

from kimagekit.errors import UsageError
from kimagekit.purgatory import DigestPolicy, EntryRule
from kimagekit.segments import HoleSearch

Version = tuple[int, int, int]
NEWEST: Version = (999, 0, 0)  # no known rule is newer: every rule at its newest
FMT = "loader-profile"
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")
# Debian ABI names keep patch level 0 (6.1.0-50-amd64): the upstream one is in "Debian X.Y.Z-N"
_DEBIAN = re.compile(r"\bDebian (\d+)\.(\d+)\.(\d+)")
_CONFIG_HEADER = re.compile(r"^# Linux/\S+ (\d+\.\d+(?:\.\d+)?)\S* Kernel Configuration", re.M)
CONFIG_OPTIONS = ("IMA_KEXEC", "IMA_KEXEC_EXTRA_MEMORY_KB", "KEXEC_HANDOVER", "PPC_64K_PAGES",
                  "PPC_4K_PAGES", "KEXEC_FILE", "CRASH_HOTPLUG", "IMA_DEFAULT_HASH", "EFI",
                  "IMA_MEASURE_PCR_IDX")


@dataclass(frozen=True)
class LoaderProfile:
    version: Version
    source: str  # how the version was found (--loader-version, a config header, ...)
    config: str | None = None  # the config file read, if any
    ima_kexec: bool = True
    ima_extra_memory_kb: int = 0  # CONFIG_IMA_KEXEC_EXTRA_MEMORY_KB (0: unset)
    kexec_handover: bool = False
    ppc_page_size: int | None = None  # from the config; None: the arch's default
    ima_hash: str = "sha1"  # CONFIG_IMA_DEFAULT_HASH (Kconfig's default: sha1)
    ima_pcr: int = 10  # CONFIG_IMA_MEASURE_PCR_IDX
    efi: bool = True  # CONFIG_EFI (x86: where the setup_data entries after EFI's start)

    @property
    def name(self) -> str:
        return "newest" if self.version == NEWEST else ".".join(map(str, self.version))

    @property
    def hole_search(self) -> HoleSearch:
        return HoleSearch.PRE_6_8 if self.version < (6, 8, 0) else HoleSearch.UPSTREAM_6_8

    @property
    def kernel_above_pref_address(self) -> bool:
        return self.version >= (6, 9, 0)

    @property
    def entry_rule(self) -> EntryRule:
        v = self.version
        if v >= (7, 0, 0) or (6, 1, 165) <= v < (6, 2, 0):
            return EntryRule.PURGATORY_START
        return EntryRule.E_ENTRY

    @property
    def digest_policy(self) -> DigestPolicy:
        return (DigestPolicy.UPSTREAM_6_15 if self.version >= (6, 15, 0)
                else DigestPolicy.UPSTREAM_4_10)

    @property
    def ima_extra_memory(self) -> int | None:
        """Spare bytes after the hand-over list (None: half a page, the rule before 6.15 and
        without the option)."""
        if self.version >= (6, 15, 0) and self.ima_extra_memory_kb > 0:
            return self.ima_extra_memory_kb * 1024
        return None

    @property
    def force_dtb(self) -> bool:
        """KEXEC_FILE_FORCE_DTB (x86: the running tree carried in SETUP_DTB), since 6.18."""
        return self.version >= (6, 18, 0)

    @property
    def kho_room(self) -> bool:
        return self.kexec_handover and self.version >= (6, 16, 0)

    def rules(self) -> dict[str, str | int | bool | None]:
        """Every rule this profile sets, by name (for inspect and --json)."""
        return {"hole_search": self.hole_search.value,
                "kernel_above_pref_address": self.kernel_above_pref_address,
                "entry_rule": self.entry_rule.value,
                "digest_policy": self.digest_policy.value,
                "ima_kexec": self.ima_kexec,
                "ima_extra_memory": self.ima_extra_memory,
                "kexec_handover_room": self.kho_room,
                "force_dtb": self.force_dtb,
                "ppc_page_size": self.ppc_page_size,
                "efi": self.efi}

    def describe(self) -> str:
        cfg = f"config {self.config}" if self.config else "no config (newest defaults)"
        rules = ", ".join(f"{k} {v}" for k, v in self.rules().items() if v is not None)
        return f"{self.name} ({self.source}; {cfg}): {rules}"


def parse_version(text: str, what: str = "--loader-version") -> Version:
    """``6.1``, ``6.12.117``, ``7.2.13+deb14-amd64``; ``newest``."""
    if text.strip() == "newest":
        return NEWEST
    m = _VERSION.match(text.strip())
    if not m:
        raise UsageError(f"{what} {text!r}: not a kernel version (e.g. 6.1, 6.12.117, newest)")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def version_from_string(text: str) -> Version | None:
    """The upstream version a kernel's version string or banner names (Debian's package
    version when present: its ABI name keeps patch level 0)."""
    # the last one: a banner names the compiler's Debian version first ("gcc-16 (Debian
    # 16.2.0-4)"), the kernel's after the build number ("#1 SMP ... Debian 7.2.13-1")
    found = _DEBIAN.findall(text)
    if found:
        return int(found[-1][0]), int(found[-1][1]), int(found[-1][2])
    m = re.search(r"(?:Linux version )?(\d+\.\d+(?:\.\d+)?)", text)
    return parse_version(m[1]) if m else None


def read_config(path: str | os.PathLike[str]) -> tuple[dict[str, str], Version | None]:
    """The options of a kernel ``.config`` (``/boot/config-*``) kimagekit reads, and the version
    its header names."""
    from kimagekit.fileio import read_input

    raw = read_input(path, "--loader-config")
    text = bytes(raw).decode("utf-8", errors="replace")
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("CONFIG_"):
            key, _, value = line[7:].partition("=")
            if key in CONFIG_OPTIONS:
                found[key] = value.strip().strip('"')
                if key in _INT_OPTIONS and not _is_int(found[key]):
                    # Kconfig writes a decimal int here: anything else is not a config it wrote
                    raise UsageError(f"{os.fspath(path)}: --loader-config: line {number}: "
                                     f"CONFIG_{key}={found[key]!r} is not an integer")
    if not found and "CONFIG_" not in text:
        raise UsageError(f"{os.fspath(path)}: --loader-config: not a kernel config (no CONFIG_ "
                         "line)")
    m = _CONFIG_HEADER.search(text)
    return found, (parse_version(m[1]) if m else None)


_INT_OPTIONS = ("IMA_KEXEC_EXTRA_MEMORY_KB", "IMA_MEASURE_PCR_IDX")


def _is_int(text: str) -> bool:
    try:
        int(text, 0)
    except ValueError:
        return False
    return True


def config_beside(kernel: str | os.PathLike[str]) -> Path | None:
    """The config a package installs beside a kernel: ``/boot/config-V`` for ``/boot/vmlinuz-V``
    (or ``vmlinux-V``), ``config`` in the same folder (``/usr/lib/modules/V/``)."""
    p = Path(kernel)
    if os.fspath(kernel) == "-" or not p.is_file():  # stdin, a pipe: no package layout
        return None
    for prefix in ("vmlinuz-", "vmlinux-"):
        if p.name.startswith(prefix):
            cand = p.with_name("config-" + p.name[len(prefix):])
            if cand.is_file():
                return cand
    cand = p.with_name("config")
    return cand if cand.is_file() else None


def kernel_version(kernel: str | os.PathLike[str]) -> Version | None:
    """The version a kernel file names (bzImage version string, else the banner of a vmlinux),
    None when it names none or cannot be read (the build reports that file where it reads it)."""
    from kimagekit import kernels
    from kimagekit.errors import KimageError
    from kimagekit.fileio import map_file
    from kimagekit.vmlinux import find_banner

    if os.fspath(kernel) == "-" or not Path(kernel).is_file():
        return None  # stdin or a pipe is read once, by the build
    try:
        with map_file(kernel) as (mm, view):
            try:
                img = kernels.read_bzimage(view)
                if img.version_string:
                    return version_from_string(img.version_string)
            except KimageError:
                pass
            banner = find_banner(mm if mm is not None else bytes(view))
    except (KimageError, OSError):
        return None
    return version_from_string(banner) if banner else None


def from_config(version: Version, source: str, options: dict[str, str],
                config: str | None, *, complete: bool = False) -> LoaderProfile:
    """``complete``: the config is Kconfig's whole output (it has the header), so an option it
    does not set is off (CONFIG_EFI); otherwise that option keeps its default."""
    def on(key: str) -> bool:
        return options.get(key) == "y"

    extra = int(options.get("IMA_KEXEC_EXTRA_MEMORY_KB", "0"), 0)  # read_config checked it
    page = 65536 if on("PPC_64K_PAGES") else 4096 if on("PPC_4K_PAGES") else None
    algo = options.get("IMA_DEFAULT_HASH", "sha1")  # used (and checked) by --ima-events only
    return LoaderProfile(version, source, config, ima_kexec=on("IMA_KEXEC"),
                         ima_extra_memory_kb=max(extra, 0), kexec_handover=on("KEXEC_HANDOVER"),
                         ppc_page_size=page, ima_hash=algo, efi=on("EFI") or not complete,
                         ima_pcr=int(options.get("IMA_MEASURE_PCR_IDX", "10"), 0))


def resolve(version: str | None = None, config: str | os.PathLike[str] | None = None, *,
            kernel: str | os.PathLike[str] | None = None) -> LoaderProfile:
    """The profile: ``version`` (``--loader-version``) and ``config`` (``--loader-config``) when
    given; else the version and config of ``kernel`` when they can be found (its version string;
    a config beside it); else the newest rules. A config's own header names the version when no
    version is given."""
    explicit = version is not None or config is not None
    cfg_path = config if config is not None else (
        None if explicit or kernel is None else config_beside(kernel))
    options: dict[str, str] = {}
    header = None
    if cfg_path is not None:
        options, header = read_config(cfg_path)
    if version is not None:
        ver, source = parse_version(version), "--loader-version"
    elif header is not None:
        ver, source = header, ("--loader-config header" if config is not None
                               else "the config beside the kernel")
    elif not explicit and kernel is not None and (found := kernel_version(kernel)) is not None:
        ver, source = found, "the kernel's version string"
    else:
        ver, source = NEWEST, "newest rules"
    if cfg_path is None:
        return LoaderProfile(ver, source)
    return from_config(ver, source, options, os.fspath(cfg_path), complete=header is not None)
