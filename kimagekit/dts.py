"""Device tree source text: written the way ``dtc -I dtb -O dts`` (1.6) writes it, read through
the ``fdt`` package behind the error choke point."""

from __future__ import annotations

import re
import struct

from kimagekit.devicetree import DeviceTree, Node, Prop, Reservation
from kimagekit.errors import ParseError, converted

_ESCAPES = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r",
            0x5C: "\\\\", 0x22: '\\"', 0: "\\0"}
_STRINGISH = set(range(0x20, 0x7F)) | {0, 7, 8, 9, 10, 11, 12, 13}


def to_dts(tree: DeviceTree) -> str:
    """DTS text; types are guessed from the bytes with dtc's own rule, so the text matches dtc's."""
    out = ["/dts-v1/;", ""]
    out += [f"/memreserve/\t0x{r.address:016x} 0x{r.size:016x};" for r in tree.reservations]
    _node(tree.root, 0, out)
    return "\n".join(out) + "\n"


def _node(node: Node, level: int, out: list[str]) -> None:
    tabs = "\t" * level
    out.append(f"{tabs}{node.name or '/'} {{")
    for p in node.props():
        out.append(f"{tabs}\t{p.name}{_value(p.value)}")
    for c in node.children():
        out.append("")
        _node(c, level + 1, out)
    out.append(f"{tabs}}};")


def value_text(raw: bytes) -> str:
    """One value as dtc writes it (``"text"``, ``<0x1 0x2>``, ``[01 02]``; empty: ``<empty>``)."""
    return _value(raw).removeprefix(" = ").removesuffix(";") or "<empty>"


def _value(v: bytes) -> str:
    if not v:
        return ";"
    nul = v.count(0)
    if v[-1] == 0 and all(b in _STRINGISH for b in v) and nul <= len(v) - nul:
        text = "".join(_ESCAPES.get(b, chr(b)) for b in v[:-1])
        return f' = "{text}";'
    if len(v) % 4 == 0:
        cells = struct.unpack(f">{len(v) // 4}I", v)
        return " = <" + " ".join(f"0x{c:02x}" for c in cells) + ">;"
    return " = [" + " ".join(f"{b:02x}" for b in v) + "];"


# -- reading -----------------------------------------------------------------------------------
def looks_like_dts(head: bytes) -> bool:
    text = re.sub(rb"(/\*.*?\*/|//[^\n]*)", b"", head, flags=re.S).lstrip()
    return text.startswith(b"/dts-v1/")


def from_dts(text: str) -> DeviceTree:
    """Parse DTS source. Limits of the ``fdt`` reader apply (no ``/bits/``, no ``/include/``)."""
    import fdt

    with converted("dts", "source"):
        try:
            obj = fdt.parse_dts(_one_statement_per_line(text))
        except NotImplementedError as exc:
            raise ParseError(str(exc), fmt="dts", field="source") from exc
        except Exception as exc:  # fdt raises bare Exception for syntax it cannot read
            if isinstance(exc, ValueError | IndexError | KeyError | AssertionError):
                raise
            raise ParseError(f"unreadable DTS ({type(exc).__name__}: {exc})", fmt="dts",
                             field="source") from exc
        entries = [Reservation(int(e["address"]), int(e["size"])) for e in obj.entries]
        obj.entries.clear()  # the list may be fdt's shared default: leave it empty for the next
        tree = DeviceTree(version=17, last_comp_version=16,
                          boot_cpuid_phys=int(obj.header.boot_cpuid_phys or 0),
                          reservations=entries, top=[], strings=bytearray())
        tree.top.append(_convert(obj.root, tree, is_root=True))
    return tree


def _one_statement_per_line(text: str) -> str:
    """fdt's reader is line-based (``a { b; };`` on one line loses ``b``): drop comments and
    break after every ``{``, ``;`` and before ``}`` outside strings."""
    out: list[str] = []
    i, n, quote = 0, len(text), False
    while i < n:
        c = text[i]
        if quote:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                quote = False
        elif c == '"':
            quote = True
            out.append(c)
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif c in "{;":
            out.append(c + "\n")
        elif c == "}":
            out.append("\n}")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _convert(src: object, tree: DeviceTree, is_root: bool = False) -> Node:
    name = "" if is_root else str(getattr(src, "name", ""))
    node = Node(name)
    for p in getattr(src, "props", []):
        pname = str(p.name)
        node.items.append(Prop(pname, _prop_bytes(p), tree._nameoff(pname)))
    for c in getattr(src, "nodes", []):
        node.items.append(_convert(c, tree))
    return node


def _prop_bytes(p: object) -> bytes:
    import fdt

    if isinstance(p, fdt.PropStrings):
        return b"".join(_unescape(str(s)) + b"\0" for s in p.data)
    if isinstance(p, fdt.PropWords):
        width = int(p.word_size) // 8
        return b"".join(int(w).to_bytes(width, "big") for w in p.data)
    if isinstance(p, fdt.PropBytes):
        return bytes(p.data)
    return b""


_ESC_RE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.S)
_SIMPLE = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13}


def _unescape(s: str) -> bytes:
    # dtc's escapes: \x with up to 2 hex digits, octal with up to 3 digits, C letters.
    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        if e[0] == "x":
            return chr(int(e[1:], 16))
        if e[0] in "01234567":
            return chr(int(e, 8) & 0xFF)
        return chr(_SIMPLE[e]) if e in _SIMPLE else e

    return _ESC_RE.sub(one, s).encode("latin-1")
