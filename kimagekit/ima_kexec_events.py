"""The ``kexec_load`` and ``kexec_execute`` critical-data events (6.15+, linux-source 7.2.13
``security/integrity/ima/ima_kexec.c`` ``ima_measure_kexec_event``), as the entries they add.

The loading kernel measures ``kexec_load`` right after sizing the hand-over segment
(``ima_alloc_kexec_file_buf``), and ``kexec_execute`` in its reboot notifier before measurements
are suspended and the list is dumped into the segment (``ima_queue.c`` ``ima_reboot_notifier``,
priority 0, before the dump's ``INT_MIN``). Each records the segment's memsz and the list's size
(with the 24-byte kexec header) and count at that moment. They are entries only under a policy
that measures ``func=CRITICAL_DATA`` (``ima_policy=critical_data``); the builtin rule names no
template, so they are ``ima-buf`` (``d-ng|n-ng|buf``) entries in PCR
``CONFIG_IMA_MEASURE_PCR_IDX``, the buffer hashed with IMA's hash (``CONFIG_IMA_DEFAULT_HASH``
or ``ima_hash=``), unhashed in the ``buf`` field.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from enum import StrEnum

from kimagekit.formats import ima as schema
from kimagekit.formats.ima import Endian
from kimagekit.ima_binary import ImaEntry, encode_entry, hash_factory, template_digest

__all__ = ["KexecEvents", "event_text", "kexec_event", "with_kexec_events"]

TEMPLATE = "ima-buf"
EVENT_LEN = 256  # IMA_KEXEC_EVENT_LEN: scnprintf's bound, far above what three numbers need
KEXEC_HDR_SIZE = 24  # sizeof(struct ima_kexec_hdr), which ima_get_binary_runtime_size adds


class KexecEvents(StrEnum):
    """Which events ``build`` appends to the list it is given."""

    NONE = "none"
    EXECUTE = "execute"            # the list given is the one just before reboot
    LOAD_EXECUTE = "load+execute"  # the list given is the one at load, nothing measured after


def event_text(segment_size: int, list_bytes: int, count: int) -> bytes:
    """The event's buffer: ``list_bytes`` is the binary list without header (the kernel's
    ``binary_runtime_size``), ``count`` its entries (``ima_num_records``)."""
    text = (f"kexec_segment_size={segment_size};ima_binary_runtime_size="
            f"{list_bytes + KEXEC_HDR_SIZE};ima_runtime_measurements_count={count};")
    return text.encode()[:EVENT_LEN - 1]


def kexec_event(name: str, segment_size: int, list_bytes: int, count: int, *,
                hash_algo: str = "sha1", pcr: int = 10, endian: Endian = "<") -> ImaEntry:
    """The ``ima-buf`` entry of event ``name`` (``kexec_load`` or ``kexec_execute``) measured
    while the hand-over segment is ``segment_size`` bytes and the list ``count`` entries of
    ``list_bytes`` bytes (binary, without header)."""
    buf = event_text(segment_size, list_bytes, count)
    u32 = struct.Struct(endian + "I")
    digest = hash_factory(hash_algo)(buf).digest()
    fields = (hash_algo.encode() + b":\0" + digest, name.encode() + b"\0", buf)
    data = b"".join(u32.pack(len(f)) + f for f in fields)
    return ImaEntry(pcr, template_digest(TEMPLATE, data, "sha1", endian), TEMPLATE, data, endian,
                    count)


def with_kexec_events(entries: Sequence[ImaEntry], segment_size: int, events: KexecEvents, *,
                      hash_algo: str = "sha1", pcr: int = 10,
                      endian: Endian = "<") -> list[ImaEntry]:
    """``entries`` with the events the loading kernel adds after them: ``execute`` appends
    ``kexec_execute`` (the list given is the one at reboot); ``load+execute`` appends
    ``kexec_load`` then ``kexec_execute`` (the list given is the one the load sized the segment
    from, and nothing else was measured before the reboot)."""
    out = list(entries)
    size = sum(len(encode_entry(e, endian, schema.TPM_DIGEST_SIZE)) for e in out)
    names = {KexecEvents.NONE: (), KexecEvents.EXECUTE: ("kexec_execute",),
             KexecEvents.LOAD_EXECUTE: ("kexec_load", "kexec_execute")}[events]
    for name in names:
        event = kexec_event(name, segment_size, size, len(out), hash_algo=hash_algo, pcr=pcr,
                            endian=endian)
        out.append(event)
        size += len(encode_entry(event))
    return out
