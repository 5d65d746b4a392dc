"""The shared ``of_kexec_alloc_and_setup_fdt`` model (kimagekit/of_kexec.py) against the 7.2
sequence of ``drivers/of/kexec.c`` replayed with libfdt. Line numbers: linux-source 7.2.13."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import need_module

from kimagekit import of_kexec
from kimagekit.devicetree import DeviceTree
from kimagekit.errors import RuleError, UsageError
from kimagekit.image import HandoverStyle
from kimagekit.of_kexec import ArchFdt, CrashChosen, FdtRequest, Seeds

PAGE = 0x10000
GiB = 1 << 30
TREES = ["qemu-7.2-aarch64-virt.dtb", "qemu-7.2-aarch64-virt-gicv3-smp4-2G-initrd.dtb",
         "qemu-7.2-ppc64-pseries.dtb", "qemu-7.2-ppc64-powernv9-kernel-initrd.dtb"]
CRASH = CrashChosen((0x7F000000, 0x10000), ((0x60000000, 0x20000000), (0x1000000, 0x800000)),
                    (0x7F010000, 0x1000))
SEEDS = Seeds(0x0123456789ABCDEF, bytes(range(128)))


def _libfdt_72(blob: bytes, req: FdtRequest) -> bytes:
    """kexec.c:317-517 with libfdt: buffer, /chosen deletions, initrd, crash items, bootargs,
    seeds (given), linux,booted-from-kexec, the IMA buffer; then fdt_pack. The stale rng-seed is
    deleted (the running kernel NOPs it at boot, drivers/of/fdt.c:1115)."""
    libfdt = need_module("libfdt")
    f = libfdt.Fdt(bytearray(blob))
    f.resize(of_kexec.fdt_buffer_size(len(blob), req.cmdline, 0))
    raw, quiet = f._fdt, libfdt.QUIET_NOTFOUND

    def del_rsv(start: int, size: int) -> bool:
        for i in range(libfdt.fdt_num_mem_rsv(raw)):
            _err, a, n = libfdt.fdt_get_mem_rsv(raw, i)
            if (a, n) == (start, size):
                libfdt.fdt_del_mem_rsv(raw, i)
                return True
        return False

    def addrrange(name: str, rng: tuple[int, int]) -> None:
        assert libfdt.fdt_appendprop_addrrange(raw, 0, ch, name, *rng) == 0

    ch = f.path_offset("/chosen")
    f.delprop(ch, "linux,elfcorehdr", quiet)
    f.delprop(ch, "linux,usable-memory-range", quiet)
    start = f.getprop(ch, "linux,initrd-start", quiet)
    if not isinstance(start, int):
        s = int.from_bytes(bytes(start), "big")
        e = int.from_bytes(bytes(f.getprop(ch, "linux,initrd-end")), "big")
        if not del_rsv(s, e - s):
            del_rsv(s, -(-(e - s) // PAGE) * PAGE)
    if req.initrd is not None:
        f.setprop_u64(ch, "linux,initrd-start", req.initrd[0])
        f.setprop_u64(ch, "linux,initrd-end", sum(req.initrd))
        libfdt.fdt_add_mem_rsv(raw, *req.initrd)
    else:
        f.delprop(ch, "linux,initrd-start", quiet)
        f.delprop(ch, "linux,initrd-end", quiet)
    if req.crash is not None:
        addrrange("linux,elfcorehdr", req.crash.elfcorehdr)
        libfdt.fdt_add_mem_rsv(raw, *req.crash.elfcorehdr)
        if req.crash.dm_crypt_keys is not None:
            addrrange("linux,dmcryptkeys", req.crash.dm_crypt_keys)
            libfdt.fdt_add_mem_rsv(raw, *req.crash.dm_crypt_keys)
        for rng in req.crash.usable:
            addrrange("linux,usable-memory-range", rng)
    if req.cmdline is not None:
        f.setprop_str(ch, "bootargs", req.cmdline)
    else:
        f.delprop(ch, "bootargs", quiet)
    f.delprop(ch, "kaslr-seed", quiet)
    f.delprop(ch, "rng-seed", quiet)
    if req.seeds is not None:
        f.setprop_u64(ch, "kaslr-seed", req.seeds.kaslr)
        f.setprop(ch, "rng-seed", req.seeds.rng)
    f.setprop(ch, "linux,booted-from-kexec", b"")
    if req.handover is not None:
        addrrange("linux,ima-kexec-buffer", req.handover)
        libfdt.fdt_add_mem_rsv(raw, *req.handover)
    f.pack()
    return bytes(f.as_bytearray())


@pytest.mark.parametrize("name", TREES)
@pytest.mark.parametrize("crash", [False, True])
def test_72_order_is_libfdts(corpus: Path, name: str, crash: bool) -> None:
    """drivers/of/kexec.c:348-517: crash items after the initrd (409-461), then bootargs
    (470), kaslr-seed deleted and written afresh (481-490), rng-seed (499-506),
    linux,booted-from-kexec (512), the IMA buffer last (516-517)."""
    blob = (corpus / "dtb" / name).read_bytes()
    ram = 0x40000000 if "aarch64" in name else 0
    req = FdtRequest(initrd=(ram + 0x3000000, 0x30D40), cmdline="console=hvc0 ro",
                     crash=CRASH if crash else None, handover=(ram + 0x6000000, 0x20000),
                     seeds=SEEDS)
    got = of_kexec.setup_fdt(blob, req, ArchFdt(PAGE))
    assert got.blob == _libfdt_72(blob, req)
    assert got.notes == ("the running tree's own reservation is kept: its physical address "
                         "(initial_boot_params_pa) was not given",)


def _small() -> DeviceTree:
    t = DeviceTree.new()
    t.set("/", "#address-cells", struct.pack(">I", 2))
    t.set("/", "#size-cells", struct.pack(">I", 2))
    t.add_node("/", "chosen")
    t.add_node("/", "memory@0")
    t.set("/memory@0", "device_type", b"memory\0")
    t.set("/memory@0", "reg", struct.pack(">QQ", 0, GiB))
    t.set("/chosen", "linux,dmcryptkeys", struct.pack(">QQ", 0x100000, 0x1000))
    t.set("/chosen", "linux,kho-fdt", struct.pack(">QQ", 0x200000, 0x1000))
    t.set("/chosen", "linux,kho-scratch", struct.pack(">QQ", 0x300000, 0x1000))
    t.set("/chosen", "kaslr-seed", struct.pack(">Q", 1))
    t.add_reservation(0x2000000, 0x1000)  # the running tree's own
    return t


def _names(t: DeviceTree) -> list[str]:
    return [p.name for p in t.need("/chosen").props()]


def test_crash_items_and_their_reservations() -> None:
    """kexec.c:409-461: linux,elfcorehdr and its reservation; linux,dmcryptkeys appended to a
    stale one (fdt_appendprop_addrrange) and reserved; linux,usable-memory-range with crashk_res
    then crashk_low_res, not reserved."""
    t = _small()
    of_kexec.setup_chosen(t, FdtRequest(crash=CRASH), ArchFdt(PAGE))
    # new properties go first; the stale ones keep their order (set() put them first too)
    assert _names(t) == ["linux,booted-from-kexec", "linux,usable-memory-range",
                         "linux,elfcorehdr", "linux,kho-scratch", "linux,kho-fdt",
                         "linux,dmcryptkeys"]
    assert t.get("/chosen", "linux,dmcryptkeys") == struct.pack(">QQQQ", 0x100000, 0x1000,
                                                                 0x7F010000, 0x1000)
    assert t.get("/chosen", "linux,usable-memory-range") == struct.pack(
        ">QQQQ", 0x60000000, 0x20000000, 0x1000000, 0x800000)
    assert [(r.address, r.size) for r in t.reservations] == [
        (0x2000000, 0x1000), (0x7F000000, 0x10000), (0x7F010000, 0x1000)]


def test_kho_hook_point_and_stale_kho_items() -> None:
    """kexec.c:465: kho_add_chosen runs after the crash items and before bootargs; under
    CONFIG_KEXEC_HANDOVER it deletes a stale linux,kho-fdt and linux,kho-scratch (267-272)."""
    seen: list[list[str]] = []
    t = _small()
    of_kexec.setup_chosen(t, FdtRequest(cmdline="x", crash=CRASH,
                                        kho=lambda tree: seen.append(_names(tree))),
                          ArchFdt(PAGE))
    assert seen == [["linux,usable-memory-range", "linux,elfcorehdr", "kaslr-seed",
                     "linux,kho-scratch", "linux,kho-fdt", "linux,dmcryptkeys"]]
    t = _small()
    of_kexec.setup_chosen(t, FdtRequest(), ArchFdt(PAGE, kexec_handover=True))
    assert _names(t) == ["linux,booted-from-kexec", "linux,dmcryptkeys"]
    t = _small()
    of_kexec.setup_chosen(t, FdtRequest(), ArchFdt(PAGE))
    assert "linux,kho-fdt" in _names(t)  # without CONFIG_KEXEC_HANDOVER they stay


def test_running_tree_reservation_and_notes() -> None:
    """kexec.c:331-337: the reservation (initial_boot_params_pa, totalsize of the running
    tree) goes; without the address it stays and the result says so."""
    t = _small()
    blob = t.build(pack=True)
    req = FdtRequest(running_fdt_pa=0x2000000)
    assert DeviceTree.parse(of_kexec.setup_fdt(blob, req, ArchFdt(PAGE)).blob).reservations \
        == t.reservations  # the size differs from the tree's totalsize: kept
    t.reservations[0] = type(t.reservations[0])(0x2000000, len(t.build(pack=True)))
    blob = t.build(pack=True)
    out = of_kexec.setup_fdt(blob, req, ArchFdt(PAGE))
    assert DeviceTree.parse(out.blob).reservations == []
    assert out.notes == ("kaslr-seed and rng-seed omitted (no random bytes offline), as a "
                         "kernel whose RNG is not initialised omits them",)


def test_buffer_size_unpacked_and_nospace() -> None:
    """kexec.c:317-320: totalsize + strlen(cmdline) + FDT_EXTRA_SPACE + extra; an arch that
    does not pack (arch/powerpc/kexec/elf_64.c:122-123, crash under CONFIG_CRASH_HOTPLUG) leaves
    totalsize at that size; libfdt refuses to outgrow it (-FDT_ERR_NOSPACE)."""
    blob = _small().build(pack=True)
    assert of_kexec.fdt_buffer_size(len(blob), "abc", 0x20) == len(blob) + 3 + 0x1000 + 0x20
    req = FdtRequest(cmdline="abc")
    packed = of_kexec.setup_fdt(blob, req, ArchFdt(PAGE, extra_size=0x20))
    out = of_kexec.setup_fdt(blob, req, ArchFdt(PAGE, pack=False, extra_size=0x20))
    assert out.buffer_size == len(out.blob) == len(blob) + 3 + 0x1000 + 0x20
    assert struct.unpack_from(">I", out.blob, 4)[0] == out.buffer_size
    assert out.blob[8:len(packed.blob)] == packed.blob[8:]  # same blocks, then zeros
    assert out.blob[len(packed.blob):] == bytes(out.buffer_size - len(packed.blob))

    def grow(tree: DeviceTree) -> None:
        tree.set("/chosen", "big", bytes(0x1100))

    with pytest.raises(RuleError) as e:
        of_kexec.setup_fdt(blob, FdtRequest(arch_edit=grow), ArchFdt(PAGE))
    # 412 bytes + 0x1100 + 16 (big) + 36 (linux,booted-from-kexec) - 20 (kaslr-seed)
    assert len(blob) == 412
    assert str(e.value) == ("dtb: totalsize: the new tree needs 4796 bytes, more than the 4508 "
                            "the kernel allocates for it (-FDT_ERR_NOSPACE: the load fails)")


def test_empty_command_line_is_an_empty_bootargs() -> None:
    """kexec.c:470-477: a command line (even empty) sets bootargs; none deletes it."""
    t = _small()
    of_kexec.setup_chosen(t, FdtRequest(cmdline=""), ArchFdt(PAGE))
    assert t.get("/chosen", "bootargs") == b"\0"
    of_kexec.setup_chosen(t, FdtRequest(), ArchFdt(PAGE))
    assert t.get("/chosen", "bootargs") is None


def test_refusals() -> None:
    """kexec.c:499-506 writes RNG_SEED_SIZE (128) bytes; setup_ima_buffer exists only under
    CONFIG_IMA_KEXEC (kexec.c:229-255)."""
    with pytest.raises(UsageError, match="rng-seed is 4 bytes; the kernel writes 128"):
        Seeds(1, b"1234")
    t = _small()
    with pytest.raises(RuleError, match="no CONFIG_HAVE_IMA_KEXEC"):
        of_kexec.setup_chosen(t, FdtRequest(handover=(0x1000000, 0x1000),
                                            handover_style=HandoverStyle.IMA),
                              ArchFdt(PAGE, have_ima_kexec=False))

