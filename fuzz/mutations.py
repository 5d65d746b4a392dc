"""Byte mutations of the campaign: each returns the new bytes and a short description, so a
finding says what was done to which seed."""

from __future__ import annotations

import random
import struct

BYTES = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE, 0x40, 0x20]
U32 = [0, 1, 2, 3, 4, 7, 8, 0x10, 0x40, 0x7F, 0x80, 0xFF, 0x100, 0xFFF, 0x1000, 0x1001, 0xFFFF,
       0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]
U64 = [*U32, 0x100000000, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF,
       0xC000000000000000, 0xFFFFFFFF80000000]
# numeric options: the boundaries of 32 and 64 bits, pages, and one past each
NUMBERS = [0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0x100, 0x200, 0xFFF, 0x1000, 0x1001, 0x8000, 0xFFFF,
           0x10000, 0x10001, 0x20000, 0x100000, 0x1000000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
           0x100000000, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF,
           1 << 64, 1 << 100, -1]


def bit_flip(rng: random.Random, b: bytearray, _: list[bytes]) -> str:
    at = rng.randrange(len(b))
    bit = rng.randrange(8)
    b[at] ^= 1 << bit
    return f"flip {at:#x}.{bit}"


def byte_set(rng: random.Random, b: bytearray, _: list[bytes]) -> str:
    at, v = rng.randrange(len(b)), rng.choice(BYTES)
    b[at] = v
    return f"byte {at:#x}={v:#x}"


def word_set(rng: random.Random, b: bytearray, _: list[bytes]) -> str:
    """A u32 or u64 at an aligned offset (where header fields are) set to a boundary value."""
    wide = rng.random() < 0.4
    size = 8 if wide else 4
    if len(b) < size:
        return byte_set(rng, b, _)
    # aligned; biased to the first 4 KiB, where the headers are
    span = min(len(b), 4096) if rng.random() < 0.7 else len(b)
    at = rng.randrange(0, span - size + 1) & ~(size - 1)
    order = rng.choice("<>")
    v = rng.choice(U64 if wide else U32)
    struct.pack_into(order + ("Q" if wide else "I"), b, at, v)
    return f"u{size * 8}{order} {at:#x}={v:#x}"


def truncate(rng: random.Random, b: bytearray, _: list[bytes]) -> str:
    n = rng.randrange(len(b))
    del b[n:]
    return f"cut at {n:#x}"


def extend(rng: random.Random, b: bytearray, _: list[bytes]) -> str:
    n = rng.choice([1, 3, 4, 8, 64, 4096, rng.randrange(1, 65536)])
    fill = rng.choice([bytes(n), b"\xff" * n, rng.randbytes(n)])
    b += fill
    return f"extend +{n:#x}"


def duplicate(rng: random.Random, b: bytearray, _: list[bytes]) -> str:
    """A chunk copied (inserted) elsewhere: repeated records, doubled headers."""
    at = rng.randrange(len(b))
    n = rng.choice([4, 8, 16, 64, 256, 4096])
    chunk = bytes(b[at:at + n])
    to = rng.randrange(len(b) + 1)
    b[to:to] = chunk
    return f"dup {at:#x}+{len(chunk):#x} to {to:#x}"


def splice(rng: random.Random, b: bytearray, pool: list[bytes]) -> str:
    """The head of this input, the tail of another seed (same slot or any corpus file)."""
    other = rng.choice(pool)
    cut = rng.randrange(len(b) + 1)
    ocut = rng.randrange(len(other) + 1) if other else 0
    b[cut:] = other[ocut:]
    return f"splice at {cut:#x} from {ocut:#x} of a {len(other):#x}-byte seed"


OPS = [bit_flip, byte_set, word_set, word_set, truncate, extend, duplicate, splice]


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> tuple[bytes, str]:
    b = bytearray(data)
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4])):
        op = rng.choice(OPS)
        if not b and op not in (extend, splice):
            op = extend
        done.append(op(rng, b, pool))
    return bytes(b), "; ".join(done)


def number(rng: random.Random) -> int:
    return rng.choice(NUMBERS)
