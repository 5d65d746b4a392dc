"""Device tree source text: written the way ``dtc -I dtb -O dts`` (1.6) writes it; read by dtc
itself when it is installed, else by the exact subset reader in :mod:`kimagekit.dts_subset`."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kimagekit import fdt_raw
from kimagekit.devicetree import DeviceTree, Node, is_redundant_name
from kimagekit.dts_subset import compile_subset
from kimagekit.errors import ParseError, UsageError
from kimagekit.fileio import read_input
from kimagekit.formats import fdt as F

__all__ = [
    "AUTO", "DTC_MAX_OUTPUT", "DTC_TIMEOUT", "blob_to_dts", "dtc_path", "from_dts",
    "from_dts_file", "looks_like_dts", "run_dtc", "to_dts", "value_text",
]

_ESCAPES = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r",
            0x5C: "\\\\", 0x22: '\\"', 0: "\\0"}
_STRINGISH_BYTES = bytes([*range(0x20, 0x7F), 0, 7, 8, 9, 10, 11, 12, 13])
_ESCAPED = re.compile(b"[" + re.escape(bytes(sorted(_ESCAPES))) + b"]")


def to_dts(tree: DeviceTree) -> str:
    """DTS text; types are guessed from the bytes with dtc's own rule, so the text matches dtc's."""
    out = ["/dts-v1/;", ""]
    out += [f"/memreserve/\t0x{r.address:016x} 0x{r.size:016x};" for r in tree.reservations]
    _node(tree.root, 0, out)
    return "\n".join(out) + "\n"


def blob_to_dts(buf: fdt_raw.Blob) -> str | None:
    """:func:`to_dts` of the tree in ``buf``, written as the tokens are walked (no model); None
    when the model must read it (an old version, a property after a child node)."""
    blocks = fdt_raw.usable(buf)
    if blocks is None:
        return None
    walk = fdt_raw.Walk(buf, blocks)
    out = ["/dts-v1/;", ""]
    out += [f"/memreserve/\t0x{r.address:016x} 0x{r.size:016x};" for r in blocks.reservations]
    try:
        done = _dts_lines(walk, out)
    except fdt_raw.Anomaly:
        for _ in walk.tokens(walk.start):  # the checked walk: it raises the defect's error
            pass
        return None  # pragma: no cover - both walks make the same checks
    return "\n".join(out) + "\n" if done else None


def _dts_lines(walk: fdt_raw.Walk, out: list[str]) -> bool:
    # One loop over the tokens, checked as fdt_raw.Walk.tokens checks them (fdt_raw.Anomaly
    # when one fails); False when a property follows a child node (to_dts puts it first).
    buf, pos, end, strings = walk.buf, walk.start, walk.end, walk.strings
    last_nul = strings.rfind(b"\0")
    unpack, unpack2 = fdt_raw.U32.unpack_from, fdt_raw.LEN_OFF.unpack_from
    tabs = ["\t" * i for i in range(F.FDT_MAX_DEPTH + 2)]
    names: dict[int, str] = {}
    seen: dict[bytes, str] = {}
    stack: list[bytes] = []
    had_child = [False]  # per open node: a child node seen yet
    root_done = False
    value, append = _value, out.append
    while True:
        if pos + 4 > end:
            raise fdt_raw.Anomaly
        tag = unpack(buf, pos)[0]
        if tag == F.FDT_PROP:
            if pos + 12 > end or not stack:
                raise fdt_raw.Anomaly
            ln, nameoff = unpack2(buf, pos + 4)
            at = pos + 12
            pos = (at + ln + 3) & -4
            if nameoff > last_nul or pos > end:
                raise fdt_raw.Anomaly
            if had_child[-1]:
                return False
            text = names.get(nameoff)
            if text is None:
                text = names[nameoff] = \
                    strings[nameoff:strings.index(b"\0", nameoff)].decode("latin-1")
            raw = buf[at:at + ln]
            if text == "name" and raw == stack[-1].partition(b"@")[0] + b"\0":
                continue  # dtc's checks drop it
            shown = seen.get(raw)
            if shown is None:
                shown = value(raw)
                if len(seen) < 4096 and shown[3:4] == '"':  # strings repeat (compatible, ...)
                    seen[raw] = shown
            append(f"{tabs[len(stack)]}{text}{shown}")
        elif tag == F.FDT_BEGIN_NODE:
            nul = buf.find(b"\0", pos + 4, end)
            nxt = (nul + 4) & -4
            if root_done or nul < 0 or nxt > end or len(stack) >= F.FDT_MAX_DEPTH:
                raise fdt_raw.Anomaly
            name = buf[pos + 4:nul]
            if stack:
                had_child[-1] = True
                append("")
            had_child.append(False)
            append(f"{tabs[len(stack)]}{name.decode('latin-1') or '/'} {{")
            stack.append(name)
            pos = nxt
        elif tag == F.FDT_END_NODE:
            if not stack:
                raise fdt_raw.Anomaly
            stack.pop()
            had_child.pop()
            append(f"{tabs[len(stack)]}}};")
            root_done = not stack
            pos += 4
        elif tag == F.FDT_NOP:
            pos += 4
        elif tag == F.FDT_END and root_done and not stack:
            return True
        else:
            raise fdt_raw.Anomaly


def _node(node: Node, level: int, out: list[str]) -> None:
    tabs = "\t" * level
    out.append(f"{tabs}{node.name or '/'} {{")
    for p in node.props():
        if p.name == "name" and is_redundant_name(node, p.value):
            continue  # dtc's checks drop it
        out.append(f"{tabs}\t{p.name}{_value(p.value)}")
    for c in node.children():
        out.append("")
        _node(c, level + 1, out)
    out.append(f"{tabs}}};")


def value_text(raw: bytes) -> str:
    """One value as dtc writes it (``"text"``, ``<0x1 0x2>``, ``[01 02]``; empty: ``<empty>``)."""
    return _value(raw).removeprefix(" = ").removesuffix(";") or "<empty>"


def _value(v: bytes) -> str:
    # dtc's guess (stringish, then cells, then bytes), each test done by C loops over the value
    if not v:
        return ";"
    if v[-1] == 0 and not v.translate(None, _STRINGISH_BYTES):
        nul = v.count(0)
        if nul <= len(v) - nul:
            body = v[:-1]
            text = "".join(_ESCAPES.get(b, chr(b)) for b in body) if _ESCAPED.search(body) \
                else body.decode("latin-1")
            return f' = "{text}";'
    if len(v) % 4 == 0:
        n = len(v) // 4
        if n > 64:
            return " = <" + " ".join(map("0x%02x".__mod__, struct.unpack(f">{n}I", v))) + ">;"
        unpack, fmt = _CELLS[n]
        return fmt % unpack(v)
    return " = [" + v.hex(" ") + "];"


# per cell count up to 64: the unpacker and the whole text's format
_CELLS = [(struct.Struct(f">{n}I").unpack, " = <" + " ".join(["0x%02x"] * n) + ">;")
          for n in range(65)]


# -- reading -----------------------------------------------------------------------------------
def looks_like_dts(head: bytes) -> bool:
    text = re.sub(rb"(/\*.*?\*/|//[^\n]*)", b"", head, flags=re.S).lstrip()
    return text.startswith(b"/dts-v1/")


# The dtc to use: ``$KIMAGEKIT_DTC`` when set (empty: none, forcing kimagekit's own subset
# reader), else dtc on PATH. Passing ``dtc=`` to the functions below overrides both.
AUTO = "auto"
DTC_TIMEOUT = 60.0  # seconds
DTC_MAX_OUTPUT = 256 << 20  # bytes: a DTB's offsets are 32-bit, real ones are far smaller


def dtc_path() -> str | None:
    env = os.environ.get("KIMAGEKIT_DTC")
    if env is not None:
        return env or None
    return shutil.which("dtc")


def from_dts(text: str | bytes, *, dtc: str | None = AUTO) -> DeviceTree:
    """Compile DTS source: by dtc (the reference compiler) when there is one, else by
    :mod:`kimagekit.dts_subset`, which refuses what it cannot compile exactly as dtc does.
    Bytes (a file's, stdin's) are compiled as they are; text as the UTF-8 file holding it."""
    tool = dtc_path() if dtc == AUTO else dtc
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    if tool is None:
        return compile_subset(raw.decode("latin-1"))
    return DeviceTree.parse(run_dtc(tool, raw))


def from_dts_file(path: str | os.PathLike[str], *, dtc: str | None = AUTO,
                  include_dirs: Sequence[str | os.PathLike[str]] = ()) -> DeviceTree:
    """Compile a DTS file (dtc resolves ``/include/`` beside it and in ``include_dirs``)."""
    tool = dtc_path() if dtc == AUTO else dtc
    if tool is None:
        return compile_subset(read_input(path).decode("latin-1"))
    return DeviceTree.parse(run_dtc(tool, None, source=path, include_dirs=include_dirs))


def run_dtc(tool: str, text: bytes | None, *, source: str | os.PathLike[str] | None = None,
            include_dirs: Sequence[str | os.PathLike[str]] = ()) -> bytes:
    """``dtc -I dts -O dtb`` on ``text`` (stdin) or ``source``; time and output size bounded.
    A failure is one ParseError line carrying dtc's own diagnostics."""
    with tempfile.TemporaryDirectory(prefix="kimagekit-dtc-") as tmp:
        out = Path(tmp) / "out.dtb"
        cmd = [tool, "-q", "-I", "dts", "-O", "dtb", "-o", str(out)]
        for d in include_dirs:
            cmd += ["-i", str(d)]
        cmd.append("-" if source is None else str(source))
        try:
            run = subprocess.run(cmd, input=text if source is None else None,
                                 stdin=None if source is None else subprocess.DEVNULL,
                                 capture_output=True, timeout=DTC_TIMEOUT, check=False,
                                 preexec_fn=_limit_output)
        except subprocess.TimeoutExpired:
            raise ParseError(f"dtc did not finish within {DTC_TIMEOUT:g} s", fmt="dts",
                             field="dtc") from None
        except OSError as exc:
            raise UsageError(f"cannot run dtc ({tool}): {exc.strerror}", fmt="dts") from None
        if run.returncode == -signal.SIGXFSZ:
            raise ParseError(f"dtc's output is larger than {DTC_MAX_OUTPUT} bytes", fmt="dts",
                             field="dtc")
        if run.returncode < 0:
            name = signal.Signals(-run.returncode).name
            raise ParseError(f"dtc died of {name}: {_one_line(run.stderr)}", fmt="dts",
                             field="dtc")
        if run.returncode != 0:
            raise ParseError(f"dtc refused it: {_one_line(run.stderr)}", fmt="dts", field="dtc")
        return out.read_bytes()


def _limit_output() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_FSIZE, (DTC_MAX_OUTPUT, DTC_MAX_OUTPUT))


def _one_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    text = "; ".join(lines) or "no diagnostics (exit status only)"
    return text if len(text) <= 400 else text[:397] + "..."
