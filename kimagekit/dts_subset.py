"""The DTS subset kimagekit compiles itself when dtc is not available.

Plain nodes and properties, ``/memreserve/`` entries, cells of 32-bit literals, strings and byte
strings, compiled as dtc 1.6/1.7 compiles them (its lexer, escapes, boot CPU guess and strings
table). Everything else dtc does (labels, references, expressions, ``/bits/``, includes, deletes,
overlays, merged or duplicated definitions, ``name`` properties it checks and drops) is refused
with the construct and its line: a different tree is never produced.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from kimagekit.devicetree import DeviceTree, Node, Prop, Reservation
from kimagekit.errors import ParseError

__all__ = ["MAX_CELL", "compile_subset", "refuse", "tokens"]

_NODE_CHARS = re.compile(r"[a-zA-Z0-9,._+@-]+")
_PROP_CHARS = re.compile(r"[a-zA-Z0-9,._+*#?-]+")
_NAME = re.compile(r"\\?[a-zA-Z0-9,._+*#?@-]+")
_LITERAL = re.compile(r"(0[xX][0-9a-fA-F]+|[0-9]+)(U|L|UL|LL|ULL)?")
_STRING = re.compile(r'"((?:[^\\"]|\\[^\n])*)"', re.S)
_SPACE = re.compile(r"(?:\s+|/\*(?:[^*]|\*+[^*/])*\*+/|//[^\n]*\n)+")
_REF = re.compile(r"&(?:[a-zA-Z_][a-zA-Z0-9_]*|\{[a-zA-Z0-9,._+*#?@/-]*\})")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*:")
_KEYWORDS = {"/dts-v1/", "/plugin/", "/memreserve/", "/bits/", "/delete-property/",
             "/delete-node/", "/omit-if-no-ref/", "/incbin/", "/include/"}
_SIMPLE_ESC = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13}
MAX_CELL = 0xFFFFFFFF


@dataclass(frozen=True)
class _Tok:
    kind: str  # "name", "literal", "string", "bytes", "kw", or the character itself
    text: str
    line: int
    data: bytes = b""  # a string's bytes (without its NUL) or a byte string's
    num: int = 0  # a literal's value


def refuse(construct: str, line: int) -> ParseError:
    return ParseError(f"{construct}: not in the DTS subset kimagekit compiles without dtc "
                      "(install dtc, the reference compiler)", fmt="dts", field=f"line {line}")


def _syntax(what: str, line: int) -> ParseError:
    return ParseError(f"syntax error: {what}", fmt="dts", field=f"line {line}")


def _unescape(body: str, line: int) -> bytes:
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        i += 1
        if c != "\\":
            out.append(ord(c))
            continue
        e = body[i]
        if e in _SIMPLE_ESC:
            out.append(_SIMPLE_ESC[e])
            i += 1
        elif e in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i:])
            assert m is not None
            out.append(int(m.group(), 8) & 0xFF)
            i += len(m.group())
        elif e == "x":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 1:])
            if m is None:
                raise refuse("'\\x' with no hex digit (dtc aborts)", line)
            out.append(int(m.group(), 16))
            i += 1 + len(m.group())
        else:
            out.append(ord(e))
            i += 1
    return bytes(out)


def _literal(text: str, line: int) -> int:
    digits = text.rstrip("UL")
    if digits[:2].lower() == "0x":
        return int(digits, 16)
    if digits.startswith("0") and len(digits) > 1:
        if not re.fullmatch(r"0[0-7]*", digits):
            raise _syntax(f"bad integer literal '{text}'", line)
        return int(digits, 8)
    return int(digits)


def tokens(text: str) -> list[_Tok]:
    """dtc's lexer, for the subset: names only where dtc expects one (after ``{`` and ``;``)."""
    out: list[_Tok] = []
    pos, line, n = 0, 1, len(text)
    want_name = False
    while pos < n:
        m = _SPACE.match(text, pos)
        if m:
            line += m.group().count("\n")
            pos = m.end()
            continue
        c = text[pos]
        if c == "#" and (pos == 0 or text[pos - 1] == "\n") and re.match(r"#(line)?[ \t]+[0-9]",
                                                                          text[pos:]):
            raise refuse("a cpp line marker ('# N \"file\"')", line)
        if text.startswith("/*", pos):
            raise _syntax("unterminated comment", line)
        if text.startswith("//", pos):
            raise _syntax("line comment without a final newline", line)
        kw = next((k for k in _KEYWORDS if text.startswith(k, pos)), None)
        if kw is not None:
            if kw not in ("/dts-v1/", "/memreserve/"):
                raise refuse(f"'{kw}'", line)
            out.append(_Tok("kw", kw, line))
            pos += len(kw)
            want_name = False
            continue
        label = _LABEL.match(text, pos)
        name = _NAME.match(text, pos) if want_name else None
        if label and not (name and name.end() > label.end()):  # flex takes the longer match
            raise refuse(f"label '{label.group()}'", line)
        if c == "&":
            m = _REF.match(text, pos)
            raise refuse(f"reference '{m.group() if m else '&'}'", line)
        if c == "'":
            raise refuse("character literal", line)
        if c == '"':
            m = _STRING.match(text, pos)
            if m is None:
                raise _syntax("unterminated string", line)
            out.append(_Tok("string", m.group(), line, data=_unescape(m.group(1), line)))
            line += m.group().count("\n")
            pos = m.end()
            want_name = False
            continue
        if want_name:
            m = _NAME.match(text, pos)
            if m:
                raw = m.group()
                out.append(_Tok("name", raw[1:] if raw[0] == "\\" else raw, line))
                pos = m.end()
                want_name = False
                continue
        m = _LITERAL.match(text, pos)
        if m and not want_name:
            end = m.end()
            if end < n and (text[end].isalnum() or text[end] == "_"):
                raise _syntax(f"bad integer literal '{text[pos:end + 1]}'", line)
            out.append(_Tok("literal", m.group(), line, num=_literal(m.group(), line)))
            pos = end
            continue
        if c == "[":
            pos, line = _bytestring(text, pos + 1, line, out)
            continue
        if c == "(":
            raise refuse("integer expression '(...)'", line)
        if c in "{};=,<>/":
            out.append(_Tok(c, c, line))
            want_name = c in "{;"
            pos += 1
            continue
        raise _syntax(f"unexpected {c!r}", line)
    return out


def _bytestring(text: str, pos: int, line: int, out: list[_Tok]) -> tuple[int, int]:
    start_line = line
    data = bytearray()
    while True:
        m = _SPACE.match(text, pos)
        if m:
            line += m.group().count("\n")
            pos = m.end()
            continue
        if pos >= len(text):
            raise _syntax("unterminated byte string '['", start_line)
        if text[pos] == "]":
            out.append(_Tok("bytes", "[...]", start_line, data=bytes(data)))
            return pos + 1, line
        label = _LABEL.match(text, pos)
        if label:
            raise refuse(f"label '{label.group()}'", line)
        pair = text[pos:pos + 2]
        if not re.fullmatch(r"[0-9a-fA-F]{2}", pair):
            raise _syntax(f"byte string needs pairs of hex digits, not {text[pos]!r}", line)
        data.append(int(pair, 16))
        pos += 2


class _Parser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, kind: str, what: str) -> _Tok:
        t = self.peek()
        if t is None or t.kind != kind:
            line = t.line if t else (self.toks[-1].line if self.toks else 1)
            got = "end of input" if t is None else repr(t.text)
            raise _syntax(f"expected {what}, got {got}", line)
        self.i += 1
        return t

    def at(self, kind: str, text: str | None = None) -> bool:
        t = self.peek()
        return t is not None and t.kind == kind and (text is None or t.text == text)


def compile_subset(text: str) -> DeviceTree:
    """The tree dtc would compile from ``text``, or a refusal naming what is not in the subset."""
    p = _Parser(tokens(text))
    if not p.at("kw", "/dts-v1/"):
        t = p.peek()
        raise _syntax("the source must start with '/dts-v1/;'", t.line if t else 1)
    while p.at("kw", "/dts-v1/"):
        p.take("kw", "/dts-v1/")
        p.take(";", "';'")
    rsv: list[Reservation] = []
    while p.at("kw", "/memreserve/"):
        p.take("kw", "/memreserve/")
        addr = p.take("literal", "an address")
        size = p.take("literal", "a size")
        p.take(";", "';'")
        for t in (addr, size):
            if t.num > 0xFFFFFFFFFFFFFFFF:
                raise _syntax(f"integer literal '{t.text}' out of range", t.line)
        rsv.append(Reservation(addr.num, size.num))
    tree = DeviceTree(version=17, last_comp_version=16, boot_cpuid_phys=0, reservations=rsv,
                      top=[], strings=bytearray())
    slash = p.take("/", "'/' (the root node)")
    root = _node(p, tree, "", slash.line)
    tree.top.append(root)
    t = p.peek()
    if t is not None:
        if t.kind == "/":
            raise refuse("a second definition of '/' (dtc merges them)", t.line)
        raise _syntax(f"unexpected {t.text!r} after the root node", t.line)
    _check_phandles(tree)
    tree.boot_cpuid_phys = _boot_cpuid(tree)
    return tree


def _node(p: _Parser, tree: DeviceTree, name: str, line: int) -> Node:
    p.take("{", "'{'")
    node = Node(name)
    props: dict[str, int] = {}
    kids: set[str] = set()
    while not p.at("}"):
        t = p.take("name", "a property or node name")
        if p.at("{"):
            _node_name_ok(t)
            if t.text in kids:
                raise refuse(f"a second node '{t.text}' (dtc merges them)", t.line)
            kids.add(t.text)
            node.items.append(_node(p, tree, t.text, t.line))
            continue
        if kids:
            raise _syntax(f"property '{t.text}' after a subnode", t.line)
        if not _PROP_CHARS.fullmatch(t.text):
            raise _syntax(f"bad character in property name '{t.text}'", t.line)
        if t.text in props:
            raise _syntax(f"duplicate property '{t.text}'", t.line)
        if t.text == "name":
            raise refuse("a 'name' property (dtc checks it and drops it)", t.line)
        props[t.text] = t.line
        value = _value(p) if p.at("=") else b""
        p.take(";", "';'")
        node.items.append(Prop(t.text, value, tree._nameoff(t.text)))
    p.take("}", "'}'")
    p.take(";", "';' after '}'")
    return node


def _node_name_ok(t: _Tok) -> None:
    if not _NODE_CHARS.fullmatch(t.text):
        raise _syntax(f"bad character in node name '{t.text}'", t.line)
    if t.text.count("@") > 1:
        raise _syntax(f"more than one '@' in node name '{t.text}'", t.line)


def _value(p: _Parser) -> bytes:
    p.take("=", "'='")
    parts: list[bytes] = []
    while True:
        t = p.peek()
        if t is None:
            raise _syntax("value runs to the end of input", p.toks[-1].line)
        if t.kind in ("string", "bytes"):
            parts.append(t.data)
            if t.kind == "string":
                parts.append(b"\0")
            p.i += 1
        elif t.kind == "<":
            p.i += 1
            while not p.at(">"):
                c = p.take("literal", "a cell value or '>'")
                if c.num > MAX_CELL:
                    raise refuse(f"cell value '{c.text}' wider than 32 bits (dtc truncates it)",
                                 c.line)
                parts.append(struct.pack(">I", c.num))
            p.i += 1
        else:
            raise _syntax(f"expected a value, got {t.text!r}", t.line)
        if not p.at(","):
            return b"".join(parts)
        p.i += 1


def _check_phandles(tree: DeviceTree) -> None:
    # dtc fails on these (explicit_phandles); refuse rather than emit what dtc never would.
    seen: set[bytes] = set()
    for path, node in tree.walk():
        vals = {n: node.prop(n) for n in ("phandle", "linux,phandle")}
        got = {n: p.value for n, p in vals.items() if p is not None}
        for n, v in got.items():
            if len(v) != 4 or v in (bytes(4), b"\xff" * 4):
                raise ParseError(f"{path}: bad {n} value {v.hex()} (dtc refuses it)", fmt="dts",
                                 field="phandle")
        if len(set(got.values())) > 1:
            raise ParseError(f"{path}: phandle and linux,phandle differ (dtc refuses it)",
                             fmt="dts", field="phandle")
        for v in set(got.values()):
            if v in seen:
                raise ParseError(f"{path}: duplicated phandle 0x{v.hex()} (dtc refuses it)",
                                 fmt="dts", field="phandle")
            seen.add(v)


def _boot_cpuid(tree: DeviceTree) -> int:
    # dtc's guess: the first child of /cpus with a one-cell reg
    cpus = next((c for c in tree.root.children() if c.name == "cpus"), None)
    if cpus is None:
        return 0
    first = next(cpus.children(), None)
    reg = first.prop("reg") if first else None
    return int.from_bytes(reg.value, "big") if reg is not None and len(reg.value) == 4 else 0
