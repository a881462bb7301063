"""The second opinion on an archive the checker accepted: what other tar readers see in it, and
whether extracting that would be safe.

Two readers: Python's :mod:`tarfile`, and :func:`go_view`, a model of Go's ``archive/tar``
(the reader of ``docker load``) written from its source: octal fields with leading NULs
trimmed, the 131-byte prefix of star headers, GNU long names winning over pax ``path``,
global pax headers ignored, negative sizes refused. Each yields the members it reads, up to
its first error (the members before it would have been extracted already).

:func:`unsafe_reason` then replays the extraction the way Docker's archive package does it:
in order, parents resolved through the symlinks made so far, a member replacing what was at
its place, a hardlink made with link(2), which links a symlink itself rather than its target.
"""

from __future__ import annotations

import io
import re
import tarfile
from typing import NamedTuple

BLOCK = 512
_ZERO = bytes(BLOCK)
_MAX_SPECIAL = 1 << 20  # Go's maxSpecialFileSize for pax and GNU long-name payloads
_HOPS = 40
_KINDS = {b"0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink", b"3": "chr",
          b"4": "blk", b"5": "dir", b"6": "fifo"}


class Entry(NamedTuple):
    """A member as one reader sees it."""

    name: str
    kind: str  # file, dir, symlink, hardlink, chr, blk, fifo, global
    link: str


def views(data: bytes) -> dict[str, list[Entry]]:
    """The members each reader reads, by reader."""
    return {"tarfile": tarfile_view(data), "Go archive/tar": go_view(data)}


# ------------------------------------------------------------------------------- tarfile


def _tarfile_kind(m: tarfile.TarInfo) -> str:
    for kind, test in (("dir", m.isdir), ("symlink", m.issym), ("hardlink", m.islnk),
                       ("chr", m.ischr), ("blk", m.isblk), ("fifo", m.isfifo)):
        if test():
            return kind
    return "file"


def tarfile_view(data: bytes) -> list[Entry]:
    """The members Python's tarfile reads, up to its first error."""
    out: list[Entry] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            while (m := tar.next()) is not None:
                out.append(Entry(m.name, _tarfile_kind(m), m.linkname))
    except (tarfile.TarError, EOFError):
        pass
    return out


# ------------------------------------------------------------------------------- Go


class _GoError(Exception):
    """archive/tar returned ErrHeader or io.ErrUnexpectedEOF."""


def _go_string(field: bytes) -> str:
    end = field.find(b"\0")
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


def _go_octal(field: bytes) -> int:
    text = field.strip(b" \0")  # leading NULs too: Go trims both ends before parsing
    end = text.find(b"\0")
    text = text if end < 0 else text[:end]
    if text and not re.fullmatch(rb"[0-7]+", text):
        raise _GoError("bad octal field")
    return int(text or b"0", 8)


def _go_numeric(field: bytes) -> int:
    if field and field[0] & 0x80:
        inv = 0xFF if field[0] & 0x40 else 0
        x = 0
        for i, c in enumerate(field):
            c ^= inv
            if i == 0:
                c &= 0x7F
            if x >> 56:
                raise _GoError("base-256 overflow")
            x = x << 8 | c
        if x >> 63:
            raise _GoError("base-256 overflow")
        return ~x if inv else x
    return _go_octal(field)


def _go_format(block: bytes) -> str:
    stored = _go_octal(block[148:156])
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32
    signed = sum(b - 256 if b > 127 else b for b in block) - sum(
        b - 256 if b > 127 else b for b in block[148:156]) + 8 * 32
    if stored not in (unsigned, signed):
        raise _GoError("bad checksum")
    magic, version, trailer = block[257:263], block[263:265], block[508:512]
    if magic == b"ustar\0":
        return "star" if trailer == b"tar\0" else "ustar"
    return "gnu" if magic == b"ustar " and version == b" \0" else "v7"


def _go_pax(payload: bytes) -> dict[str, str]:
    """The records of a pax header; an empty value keeps the header's own field."""
    records: dict[str, str] = {}
    rest = payload
    while rest:
        sp = rest.find(b" ")
        if sp < 0 or not re.fullmatch(rb"[+-]?[0-9]+", rest[:sp]):
            raise _GoError("bad pax record length")
        n = int(rest[:sp])
        if n < 5 or n > len(rest) or n <= sp + 1:
            raise _GoError("bad pax record length")
        rec, nl, rest = rest[sp + 1 : n - 1], rest[n - 1 : n], rest[n:]
        key, eq, value = rec.partition(b"=")
        if nl != b"\n" or not eq:
            raise _GoError("bad pax record")
        if b"\0" in (value if key in (b"path", b"linkpath", b"uname", b"gname") else key):
            raise _GoError("NUL in pax record")
        name = key.decode("utf-8", "surrogateescape")
        if value:
            records[name] = value.decode("utf-8", "surrogateescape")
        else:
            records.pop(name, None)
    return records


def _go_header(block: bytes) -> tuple[str, int, bytes, str]:
    """Name, size, typeflag and link name of a header block, as Go's readHeader reads them."""
    fmt = _go_format(block)
    name, link = _go_string(block[0:100]), _go_string(block[157:257])
    numeric = [block[100:108], block[108:116], block[116:124], block[136:148]]  # mode ... mtime
    if fmt != "v7":
        numeric += [block[329:337], block[337:345]]  # devmajor, devminor
    if fmt == "star":
        numeric += [block[476:488], block[488:500]]  # atime, ctime
    for field in numeric:
        _go_numeric(field)
    prefix = ""
    if fmt in ("ustar", "star"):
        prefix = _go_string(block[345:476] if fmt == "star" else block[345:500])
    elif fmt == "gnu":
        try:
            for field in (block[345:357], block[357:369]):  # atime, ctime
                if field[0]:
                    _go_numeric(field)
        except _GoError:  # read as a pre-Go 1.8 prefix (golang.org/issue/12594)
            text = _go_string(block[345:500])
            prefix = text if text.isascii() else ""
    if prefix:
        name = f"{prefix}/{name}"
    return name, _go_numeric(block[124:136]), block[156:157], link


def go_view(data: bytes) -> list[Entry]:
    """The members Go's archive/tar (as of Go 1.10 and later) returns from ``Next``."""
    out: list[Entry] = []
    pos = 0
    pax: dict[str, str] = {}
    long_name = long_link = ""
    try:
        while True:
            block = data[pos : pos + BLOCK]
            if len(block) < BLOCK:
                return out  # EOF, or ErrUnexpectedEOF in a header
            pos += BLOCK
            if block == _ZERO:
                return out  # the end marker (a zero block then anything else: ErrHeader)
            name, size, typeflag, link = _go_header(block)
            if size < 0 and typeflag not in (b"1", b"2", b"3", b"4", b"5", b"6"):
                raise _GoError("negative size")
            if typeflag in (b"x", b"g", b"L", b"K"):
                if size < 0 or size > _MAX_SPECIAL:
                    raise _GoError("special file size")
                payload = data[pos : pos + size]
                if len(payload) < size:
                    raise _GoError("unexpected EOF")
                pos += size + -size % BLOCK
                if typeflag == b"g":
                    out.append(Entry(name, "global", ""))
                    pax, long_name, long_link = {}, "", ""
                elif typeflag == b"x":
                    pax = _go_pax(payload)
                elif typeflag == b"L":
                    long_name = _go_string(payload)
                else:
                    long_link = _go_string(payload)
                continue
            if any(k.startswith("GNU.sparse.") for k in pax) or typeflag == b"S":
                raise _GoError("sparse file (not modelled)")
            name, link = pax.get("path", name), pax.get("linkpath", link)
            if "size" in pax:
                if not re.fullmatch(r"[+-]?[0-9]+", pax["size"]):
                    raise _GoError("bad pax size")
                size = int(pax["size"])
            name, link = long_name or name, long_link or link
            if typeflag == b"\0":
                typeflag = b"5" if name.endswith("/") else b"0"
            kind = _KINDS.get(typeflag, "file")
            if kind != "file":
                size = 0  # header-only types
            if size < 0:
                raise _GoError("negative size")
            out.append(Entry(name, kind, link))
            pos += size + -size % BLOCK
            pax, long_name, long_link = {}, "", ""
    except _GoError:
        return out


# ------------------------------------------------------------------------------- extraction


class _Escape(Exception):
    """A path resolved to somewhere outside the extraction directory."""


def _walk(tree: dict[tuple[str, ...], tuple[str, str]], start: tuple[str, ...], rel: str,
          follow_last: bool) -> tuple[str, ...] | None:
    """Resolve ``rel`` from directory ``start`` through the symlinks in ``tree``, as the kernel
    would; None where it cannot be (a loop, a file used as a directory)."""
    done = list(start)
    todo = rel.split("/")[::-1]
    hops = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                raise _Escape
            done.pop()
            continue
        done.append(part)
        kind, target = tree.get(tuple(done), ("", ""))
        more = any(p not in ("", ".") for p in todo)
        if kind == "symlink" and (more or follow_last):
            hops += 1
            if hops > _HOPS:
                return None
            if target.startswith("/"):
                raise _Escape
            done.pop()
            todo += target.split("/")[::-1]
        elif kind not in ("", "dir", "symlink") and more:
            return None
    return tuple(done)


def unsafe_reason(entries: list[Entry]) -> str | None:
    """Why extracting these members, in order, would write or link outside the target
    directory, or create a device; None when it would not."""
    tree: dict[tuple[str, ...], tuple[str, str]] = {}
    for e in entries:
        if e.kind == "global":
            continue
        if "\0" in e.name or e.name.startswith("/"):
            return f"member {e.name!r} is absolute or holds a NUL"
        if ".." in e.name.split("/"):
            return f"member {e.name!r} has a '..' component"
        if e.kind in ("chr", "blk", "fifo"):
            return f"member {e.name!r} is a {e.kind} device"
        parts = tuple(p for p in e.name.split("/") if p not in ("", "."))
        if not parts:
            continue
        try:
            parent = _walk(tree, (), "/".join(parts[:-1]), follow_last=True)
        except _Escape:
            return f"member {e.name!r} lands outside through a symlinked directory"
        if parent is None:
            continue  # extraction fails for this member (loop, or a file as its directory)
        where = parent + parts[-1:]
        entry = (e.kind, e.link)
        if e.kind == "symlink":
            if e.link.startswith("/") or "\0" in e.link:
                return f"symlink {e.name!r} points to the absolute path {e.link!r}"
        elif e.kind == "hardlink":
            if e.link.startswith("/") or ".." in e.link.split("/"):
                return f"hardlink {e.name!r} points to {e.link!r}, outside"
            try:
                source = _walk(tree, (), e.link, follow_last=False)
            except _Escape:
                return f"hardlink {e.name!r} points outside through a symlink"
            if source is None or source not in tree:
                return f"hardlink {e.name!r} points to {e.link!r}, which is not in the archive"
            entry = tree[source]
            if entry[0] == "dir":
                continue  # link(2) refuses directories
        elif e.kind != "dir":
            entry = ("file", "")
        below = [k for k in tree if k[: len(where)] == where]
        there = tree.get(where, ("dir", "") if below else None)  # made by an earlier MkdirAll
        if there is None or not there[0] == entry[0] == "dir":
            for key in below:
                del tree[key]  # Docker removes what was there (RemoveAll)
            tree[where] = entry
        else:
            tree[where] = there
    for where, (kind, target) in tree.items():
        if kind == "symlink":
            try:
                _walk(tree, where[:-1], target, follow_last=True)
            except _Escape:
                return f"symlink {'/'.join(where)!r} -> {target!r} resolves outside the archive"
    return None
