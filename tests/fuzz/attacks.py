"""Unsafe and damaged archives for the fuzz tests.

:func:`unsafe_archives` puts one unsafe construction (one of :data:`ATTACKS`) into a valid
archive: absolute and ``..`` names, links out of the archive, devices, a symlinked directory
used to escape, duplicate members, unsafe manifest paths, each written the ways tar carries it
(plain header, ustar prefix, GNU long name, pax record); and headers that tar readers read
differently, where a reading the checker might take is safe and the one ``docker load`` (Go's
archive/tar) or Python's tarfile takes is not. Every one must be refused.

:func:`mutated_archives` damages a valid archive's bytes (bit flips, overwritten, inserted and
deleted bytes, truncation, duplicated, dropped and swapped blocks, header fields rewritten and
the checksum fixed, pax values changed in place) and its JSON (random values, deep nesting,
cut short). Those may be accepted or refused.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, replace

from hypothesis import strategies as st

from .archives import BLOCK, FORMATS, Archive, Member, Raw, archives, member_bytes, norm

USTAR, GNU, PAX = tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT


# ------------------------------------------------------------------------------- raw headers


def fix_checksum(block: bytearray, signed: bool = False) -> None:
    """Write the header checksum (the sum of the block with the field as eight spaces)."""
    block[148:156] = b" " * 8
    total = sum(b - 256 if signed and b > 127 else b for b in block)
    block[148:156] = b"%06o\0 " % (total & 0o777777)


def header(name: str, kind: str = "file", size: int = 0, link: str = "",
           fmt: int = USTAR) -> bytes:
    """One header block as tarfile writes it (short names only); kind "v7" is typeflag NUL."""
    info = tarfile.TarInfo(name)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                 "v7": tarfile.AREGTYPE}[kind]
    info.size, info.linkname = size, link
    block = info.tobuf(fmt)
    assert len(block) == BLOCK, name
    return block


def patched(block: bytes, at: int, value: bytes) -> bytes:
    """The header with ``value`` written at ``at`` and its checksum fixed."""
    changed = bytearray(block)
    changed[at : at + len(value)] = value
    fix_checksum(changed)
    return bytes(changed)


def extended(typeflag: bytes, payload: bytes) -> bytes:
    """A pax (x, g) or GNU long-name (L, K) header and its payload."""
    name = "././@LongLink" if typeflag in (b"L", b"K") else "PaxHeaders/x"
    block = patched(header(name, size=len(payload)), 156, typeflag)
    return block + payload + bytes(-len(payload) % BLOCK)


def pax(typeflag: bytes = b"x", **records: str) -> bytes:
    """A pax header holding ``records``: "<length> <key>=<value>\\n", the length its own."""
    payload = b""
    for key, value in records.items():
        body = f" {key}={value}\n".encode()
        n = len(body) + len(str(len(body) + len(str(len(body)))))
        payload += str(n).encode() + body
    return extended(typeflag, payload)


# ------------------------------------------------------------------------------- unsafe


@dataclass(frozen=True)
class Attack:
    """An unsafe archive: which construction, and the archive holding it."""

    kind: str
    archive: Archive

    def __repr__(self) -> str:
        return f"Attack({self.kind}, {self.archive!r})"


# What to insert, and whether it must go after every other member.
Insert = tuple[list[Member | Raw], bool]

_ENCODINGS = ("ustar", "gnu", "pax", "pax records")
_EVIL = ("/etc/cron.d/evil", "../evil")


def _encoded(draw: st.DrawFn, m: Member) -> Raw:
    """The member written as ustar, GNU or pax, or as pax records over a harmless header."""
    how = draw(st.sampled_from(_ENCODINGS))
    if how == "pax records":
        records = (("path", m.name),) + ((("linkpath", m.link),) if m.link else ())
        cover = replace(m, name="harmless", link="harmless" if m.link else "", pax=records)
        return Raw(member_bytes(cover, PAX), f"{m!r} in pax records")
    try:
        return Raw(member_bytes(m, FORMATS[how]), f"{m!r} as {how}")
    except ValueError:  # too long for ustar
        return Raw(member_bytes(m, PAX), f"{m!r} as pax")


def _name(draw: st.DrawFn, stem: str) -> str:
    return f"{stem}{draw(st.integers(0, 99))}"


def _bad_name(names: tuple[str, ...]) -> Callable[[st.DrawFn, Archive], Insert]:
    def insert(draw: st.DrawFn, base: Archive) -> Insert:
        kind = draw(st.sampled_from(("file", "dir", "symlink", "hardlink")))
        link = {"symlink": "x", "hardlink": "manifest.json"}.get(kind, "")
        m = Member(draw(st.sampled_from(names)), kind, b"evil" if kind == "file" else b"", link)
        return [_encoded(draw, m)], kind == "hardlink"  # after the file it links to
    return insert


def _nul_name(draw: st.DrawFn, base: Archive) -> Insert:
    name = "x" * 120 + "\0/../../evil"  # long, so that it travels in a pax record
    return [Raw(member_bytes(Member(name, data=b"x"), PAX), "pax path with a NUL")], False


def _absolute_symlink(draw: st.DrawFn, base: Archive) -> Insert:
    target = draw(st.sampled_from(("/etc", "/", "//etc/passwd", "/./x")))
    return [_encoded(draw, Member(_name(draw, "abs"), "symlink", link=target))], False


def _symlink_out(draw: st.DrawFn, base: Archive) -> Insert:
    depth = draw(st.integers(0, 3))
    name = "/".join([_name(draw, "d") for _ in range(depth)] + [_name(draw, "up")])
    up = "../" * (depth + draw(st.integers(1, 3)))
    link = up + draw(st.sampled_from(("etc/passwd", "", "x")))
    return [_encoded(draw, Member(name, "symlink", link=link))], False


def _symlink_chain_out(draw: st.DrawFn, base: Archive) -> Insert:
    """here -> ".", away -> "here/../": inside when read alone, outside through "here"."""
    parts = [_name(draw, "c") for _ in range(draw(st.integers(0, 2)))]
    here, away = "/".join(parts + ["here"]), "/".join(parts + ["away"])
    dot = draw(st.sampled_from((".", "./", ".//.")))
    link = "here/" + "../" * (len(parts) + 1) + draw(st.sampled_from(("", "etc")))
    pair = [Member(here, "symlink", link=dot), Member(away, "symlink", link=link)]
    return draw(st.permutations(pair)), False


def _under_symlink(draw: st.DrawFn, base: Archive) -> Insert:
    target = draw(st.sampled_from((".", "extra", "blobs", "sub")))
    child = draw(st.sampled_from((
        Member("lnk/x", data=b"x"), Member("lnk/up", "symlink", link=".."), Member("lnk/d", "dir"),
    )))
    return [Member("lnk", "symlink", link=target), child], False


def _hardlink_out(draw: st.DrawFn, base: Archive) -> Insert:
    target = draw(st.sampled_from(("/etc/shadow", "../etc/shadow", "a/../../etc/shadow", "//x")))
    return [_encoded(draw, Member(_name(draw, "hl"), "hardlink", link=target))], False


def _hardlink_to_absent(draw: st.DrawFn, base: Archive) -> Insert:
    """A hardlink to a file not in the archive, or to one that comes later."""
    target = draw(st.sampled_from(("etc/shadow", "later")))
    inserted: list[Member | Raw] = [Member(_name(draw, "hl"), "hardlink", link=target)]
    if target == "later":
        inserted.append(Member("later", data=b"x"))
    return inserted, False


def _hardlink_to_symlink(draw: st.DrawFn, base: Archive) -> Insert:
    """A symlink that stays inside from where it is, hardlinked at the top: link(2) makes the
    symlink itself appear there, where its target leads out."""
    depth = draw(st.integers(1, 3))
    name = "/".join(["hs", *(f"d{i}" for i in range(depth - 1)), "s"])
    symlink = Member(name, "symlink", link="../" * depth + "manifest.json")
    return [symlink, _encoded(draw, Member(_name(draw, "hl"), "hardlink", link=name))], False


def _device(draw: st.DrawFn, base: Archive) -> Insert:
    kind = draw(st.sampled_from(("chr", "blk", "fifo")))
    name = draw(st.sampled_from(("dev/x", "null", "extra/p")))
    return [_encoded(draw, Member(name, kind))], False


def _duplicate(draw: st.DrawFn, base: Archive) -> Insert:
    """A member named as another one is, or as it is after normalisation."""
    name = draw(st.sampled_from([norm(m.name) for m in base.members if isinstance(m, Member)]))
    spelled = draw(st.sampled_from((name, "./" + name, name + "/", name.replace("/", "//"))))
    kind = draw(st.sampled_from(("file", "dir", "symlink")))
    return [_encoded(draw, Member(spelled, kind, b"[]", "x" if kind == "symlink" else ""))], False


def _global_pax(draw: st.DrawFn, base: Archive) -> Insert:
    """A global pax header that makes an unsafe member look safe to a reader applying it
    (Go's archive/tar ignores global headers). At the end, so that no other member is
    renamed, relinked or resized by it."""
    evil = draw(st.sampled_from(_EVIL))
    record = draw(st.sampled_from(("path", "linkpath", "size")))
    if record == "path":
        raw = pax(b"g", path="innocent") + header(evil)
    elif record == "linkpath":
        raw = pax(b"g", linkpath="manifest.json") + header("ln", "symlink", link=evil)
    else:  # the evil header would be the data of "f"
        raw = pax(b"g", size=str(BLOCK)) + header("f") + header(evil)
    return [Raw(raw, f"global pax {record}")], True


def _long_name_and_pax_path(draw: st.DrawFn, base: Archive) -> Insert:
    """Both name a member: Go's archive/tar takes the GNU long name, tarfile the first."""
    long_name = extended(b"L", draw(st.sampled_from(_EVIL)).encode() + b"\0")
    parts = draw(st.permutations([long_name, pax(path="innocent")]))
    return [Raw(b"".join(parts) + header("short"), "GNU long name and pax path")], False


def _empty_long_name(draw: st.DrawFn, base: Archive) -> Insert:
    """Go's archive/tar ignores an empty GNU long name and takes the header's."""
    raw = extended(b"L", draw(st.sampled_from((b"", b"\0"))))
    raw += header(draw(st.sampled_from(_EVIL)) + "/", "dir")
    return [Raw(raw, "empty GNU long name over a directory")], False


def _star_prefix(draw: st.DrawFn, base: Archive) -> Insert:
    """Go's archive/tar reads 131 bytes of prefix in a star header: ".." for "..x"."""
    block = patched(header("name"), 508, b"tar\0")
    return [Raw(patched(block, 345, b"./" * 64 + b"/..x"), "star header prefix")], False


def _gnu_prefix(draw: st.DrawFn, base: Archive) -> Insert:
    """tarfile (always) and Go (when atime does not parse) read a prefix in a GNU header."""
    block = header(draw(st.sampled_from(("name", "x/y"))), fmt=GNU)
    return [Raw(patched(block, 345, b"../../etc\0"), "GNU header with a prefix")], False


def _leading_nul(draw: st.DrawFn, base: Archive) -> Insert:
    """A size field of a NUL then 512 in octal: 512 to Go, which trims leading NULs, so the
    header of "cover" is data and the evil header a member; 0 to a reader stopping at it."""
    first = patched(header("a"), 124, b"\0" + b"%010o\0" % BLOCK)
    raw = first + header("cover", size=BLOCK) + header(draw(st.sampled_from(_EVIL)))
    return [Raw(raw, "size field with a leading NUL")], False


def _negative_size(draw: st.DrawFn, base: Archive) -> Insert:
    block = patched(header("neg"), 156, draw(st.sampled_from((b"x", b"L", b"0"))))
    size = draw(st.sampled_from((b"-0000001000\0", b"-0000002000\0", b"-1\0")))
    raw = patched(block, 124, size) + header(draw(st.sampled_from(_EVIL)))
    return [Raw(raw, "negative size")], False


def _v7_directory_with_data(draw: st.DrawFn, base: Archive) -> Insert:
    """Typeflag NUL, header name "d", pax path "d/", size 1024: Go reads a directory with no
    data, tarfile (which looks at the header name) a file whose data hides two blocks."""
    head = pax(path="d/") + patched(header("d", "v7"), 124, b"%011o\0" % (2 * BLOCK))
    cover = header("cover", size=2 * BLOCK) + bytes(BLOCK) + header(draw(st.sampled_from(_EVIL)))
    return [Raw(head + cover, "V7 directory with data")], False


_INSERTS: dict[str, Callable[[st.DrawFn, Archive], Insert]] = {
    "absolute name": _bad_name(("/etc/cron.d/evil", "/", "//etc/x", "/./etc/x",
                                "/" + "a" * 120 + "/x")),
    "'..' name": _bad_name(("../evil", "a/../../evil", "..", "a/..", "./../x", "a/b/../../../x",
                            "a" * 120 + "/../../x")),
    "NUL in name": _nul_name,
    "absolute symlink": _absolute_symlink,
    "symlink out": _symlink_out,
    "symlink chain out": _symlink_chain_out,
    "member under a symlink": _under_symlink,
    "hardlink out": _hardlink_out,
    "hardlink to no earlier member": _hardlink_to_absent,
    "hardlink to a symlink": _hardlink_to_symlink,
    "device": _device,
    "duplicate member": _duplicate,
    "global pax header": _global_pax,
    "GNU long name and pax path": _long_name_and_pax_path,
    "empty GNU long name": _empty_long_name,
    "star prefix": _star_prefix,
    "GNU header prefix": _gnu_prefix,
    "octal field with a leading NUL": _leading_nul,
    "negative size": _negative_size,
    "V7 directory with data": _v7_directory_with_data,
}
ATTACKS = (*_INSERTS, "unsafe manifest path")


def _unsafe_manifest(draw: st.DrawFn, base: Archive) -> list[Member | Raw]:
    """The members with manifest.json naming the config or a layer by an absolute or '..'
    path."""
    digest = base.digest.removeprefix("sha256:")
    config = f"{digest}.json" if base.layout == "legacy" else f"blobs/sha256/{digest}"
    layers = list(base.layer_paths)
    spell = st.sampled_from(("/{}", "../{}", "x/../{}", "./../{}"))
    if layers and draw(st.booleans()):
        i = draw(st.integers(0, len(layers) - 1))
        layers[i] = draw(spell).format(layers[i])
    else:
        config = draw(spell).format(config)
    manifest = json.dumps([{"Config": config, "RepoTags": list(base.tags), "Layers": layers}])
    return [replace(m, data=manifest.encode()) if m.name == "manifest.json" else m
            for m in base.members]


@st.composite
def unsafe_archives(draw: st.DrawFn, kind: str | None = None) -> Attack:
    """A valid archive with one unsafe construction in it (of ``kind``, or any), somewhere."""
    kind = kind or draw(st.sampled_from(ATTACKS))
    base = draw(archives())
    if kind == "unsafe manifest path":
        return Attack(kind, base.with_members(_unsafe_manifest(draw, base)))
    inserted, last = _INSERTS[kind](draw, base)
    members = list(base.members)
    at = len(members) if last else draw(st.integers(0, len(members)))
    return Attack(kind, base.with_members(members[:at] + inserted + members[at:]))


# ------------------------------------------------------------------------------- mutations

_FIELDS = {  # name: (offset, length) in a header block
    "name": (0, 100), "mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12),
    "mtime": (136, 12), "chksum": (148, 8), "typeflag": (156, 1), "linkname": (157, 100),
    "magic": (257, 6), "version": (263, 2), "uname": (265, 32), "devmajor": (329, 8),
    "devminor": (337, 8), "prefix": (345, 155), "star trailer": (508, 4),
}
_NUMERIC = {"mode", "uid", "gid", "size", "mtime", "chksum", "devmajor", "devminor"}
_PATHS = ("../x", "/etc/passwd", "a/../../b", "", ".", "./", "manifest.json", "x" * 100,
          "../../../../../../etc", "./" * 64 + "/..", "blobs/sha256", "\xff\xfe")
_PAX_RECORD = re.compile(rb"(\d+) (path|linkpath|size|mtime|uid)=([^\n]*)\n")
JSON_DAMAGE = ("random", "manifest-shaped", "nested", "cut")


@dataclass(frozen=True)
class Mutated:
    """A damaged archive: the valid one it came from, what was done, and the bytes."""

    archive: Archive
    json_damage: str  # one of JSON_DAMAGE, or "" where only bytes were damaged
    steps: tuple[str, ...]
    data: bytes

    def __repr__(self) -> str:
        return f"Mutated({list(self.steps)!r}, {len(self.data)} B, from {self.archive!r})"


def _numeric(draw: st.DrawFn, length: int) -> bytes:
    """A numeric field as tar writers write it, or as some reader might misread it."""
    n = draw(st.integers(0, 2048) | st.sampled_from((512, 1024, 10240))
             | st.integers(0, 8 ** (length - 1) - 1))
    digits = b"%0*o" % (length - 1, n)
    style = draw(st.sampled_from(("octal", "negative", "base-256", "leading NUL", "spaces",
                                  "sign", "underscore", "garbage")))
    if style == "base-256":
        lead = draw(st.sampled_from((0x80, 0xFF, 0xC0, 0x81)))
        return bytes([lead]) + n.to_bytes(length, "big")[1:]
    if style == "garbage":
        return draw(st.binary(min_size=length, max_size=length))
    return {
        "octal": digits + b"\0",
        "negative": b"-" + digits[1:],
        "leading NUL": b"\0" + digits[1:],
        "spaces": b"   " + digits[3:],
        "sign": b"+" + digits[1:],
        "underscore": digits[:2] + b"_" + digits[3:],
    }[style][:length]


def _field_value(draw: st.DrawFn, field: str, length: int, names: list[str]) -> bytes:
    if field in _NUMERIC:
        return _numeric(draw, length)
    if field == "typeflag":
        flags = st.sampled_from(tuple(bytes([b]) for b in b"0123456789xgLKSVMNDAI\0 "))
        return draw(flags | st.binary(min_size=1, max_size=1))
    if field in ("magic", "version", "star trailer"):
        magic = st.sampled_from((b"ustar\0", b"ustar ", b"00", b" \0", b"tar\0", b"\0" * 6))
        return draw(magic | st.binary(min_size=length, max_size=length))[:length]
    text = draw(st.sampled_from(_PATHS + tuple(names)) | st.text(max_size=length))
    return text.encode("utf-8", "surrogateescape")[:length].ljust(length, b"\0")


def _offset(draw: st.DrawFn, data: bytearray, headers: tuple[int, ...]) -> int:
    """Somewhere in the archive, half of the time in a header."""
    near = [h for h in headers if h < len(data)]
    if near and draw(st.booleans()):
        return min(draw(st.sampled_from(near)) + draw(st.integers(0, BLOCK - 1)), len(data) - 1)
    return draw(st.integers(0, len(data) - 1))


def _mutate(draw: st.DrawFn, data: bytearray, headers: tuple[int, ...], names: list[str]) -> str:
    """Damage ``data`` in place once; say how."""
    op = draw(st.sampled_from(("bit flip", "bytes", "truncate", "insert", "delete", "block",
                               "header field", "pax value")))
    at = _offset(draw, data, headers)
    if op == "bit flip":
        bit = draw(st.integers(0, 7))
        data[at] ^= 1 << bit
        return f"flip bit {bit} at {at}"
    if op == "bytes":
        value = draw(st.binary(min_size=1, max_size=8)
                     | st.sampled_from((b"\0", b"\xff", b"/", b".", b"0", b" ")))
        data[at : at + len(value)] = value
        return f"write {value!r} at {at}"
    if op == "truncate":
        del data[at:]
        return f"truncate at {at}"
    if op == "insert":
        value = draw(st.binary(min_size=1, max_size=600)
                     | st.sampled_from((bytes(BLOCK), bytes(2 * BLOCK))))
        data[at:at] = value
        return f"insert {len(value)} bytes at {at}"
    if op == "delete":
        n = draw(st.integers(1, 1024) | st.just(BLOCK))
        del data[at : at + n]
        return f"delete {n} bytes at {at}"
    if op == "block" and len(data) >= BLOCK:
        a, b = (draw(st.integers(0, len(data) // BLOCK - 1)) * BLOCK for _ in range(2))
        how = draw(st.sampled_from(("duplicate", "drop", "swap")))
        first, second = bytes(data[a : a + BLOCK]), bytes(data[b : b + BLOCK])
        if how == "duplicate":
            data[b:b] = first
        elif how == "drop":
            del data[a : a + BLOCK]
        else:
            data[a : a + BLOCK], data[b : b + BLOCK] = second, first
        return f"{how} block at {a} ({b})"
    if op == "header field" and any(h + BLOCK <= len(data) for h in headers):
        h = draw(st.sampled_from([h for h in headers if h + BLOCK <= len(data)]))
        field = draw(st.sampled_from(sorted(_FIELDS)))
        start, length = _FIELDS[field]
        value = _field_value(draw, field, length, names)
        block = bytearray(data[h : h + BLOCK])
        block[start : start + len(value)] = value
        if field != "chksum" and draw(st.integers(0, 9)):  # mostly with the checksum fixed
            fix_checksum(block, signed=draw(st.integers(0, 9)) == 0)
        data[h : h + BLOCK] = block
        return f"header at {h}: {field} = {value!r}"
    records = list(_PAX_RECORD.finditer(data))
    if op == "pax value" and records:
        m = draw(st.sampled_from(records))
        old = m.group(3)
        new = draw(st.sampled_from((b"/" + old[1:], b"../" + old[3:], old[:-1] + b"/",
                                    b"-" + old[1:], old[:1] + b"\0" + old[2:], b"9" * len(old))))
        new = new[: len(old)].ljust(len(old), b"/")  # the same length: the framing holds
        data[m.start(3) : m.end(3)] = new
        return f"pax {m.group(2).decode()}: {old[:40]!r} -> {new[:40]!r}"
    return f"{op}: nothing to change"


_json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10)
    | st.sampled_from(_PATHS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(("Config", "Layers", "RepoTags", "rootfs", "diff_ids"))
        | st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _json_damage(draw: st.DrawFn, archive: Archive, how: str) -> tuple[Archive, str]:
    """The archive with one of its JSON members rewritten: a random value, a manifest-shaped
    list of random values, arrays or objects nested deep, or the document cut short."""
    docs = [m for m in archive.members if isinstance(m, Member) and m.kind == "file"
            and m.data[:1] in (b"{", b"[", b" ", b"\n")]
    target = draw(st.sampled_from(docs))  # manifest.json at least
    if how == "random":
        data = json.dumps(draw(_json_values)).encode()
    elif how == "manifest-shaped":  # naming members, or anything
        names = st.sampled_from([m.name for m in archive.members if isinstance(m, Member)])
        entry = {"Config": draw(names | _json_values),
                 "Layers": draw(st.lists(names | _json_values, max_size=4)),
                 "RepoTags": draw(_json_values)}
        data = json.dumps([entry]).encode()
    elif how == "nested":
        depth = draw(st.sampled_from((100, 1000, 10_000, 100_000)))
        data = draw(st.sampled_from((b"[" * depth + b"]" * depth,
                                     b'{"a":' * depth + b"1" + b"}" * depth)))
    else:
        data = target.data[: draw(st.integers(0, len(target.data) - 1))]
    damaged = [replace(m, data=data) if m is target else m for m in archive.members]
    return archive.with_members(damaged), f"{target.name}: {how} JSON ({len(data)} B)"


@st.composite
def mutated_archives(draw: st.DrawFn, json_damage: str | None = None) -> Mutated:
    """A valid archive with its JSON damaged (in a quarter of the cases, or always in the way
    ``json_damage`` names) and its bytes damaged, one to four times in all."""
    archive = draw(archives())
    steps: list[str] = []
    if json_damage is None and draw(st.integers(0, 3)) == 0:
        json_damage = draw(st.sampled_from(JSON_DAMAGE))
    if json_damage:
        archive, step = _json_damage(draw, archive, json_damage)
        steps.append(step)
    encoded = archive.encode()
    data = bytearray(encoded.data)
    names = [m.name for m in archive.members if isinstance(m, Member)]
    for _ in range(draw(st.integers(0 if steps else 1, 3))):
        if data:
            steps.append(_mutate(draw, data, encoded.headers, names))
    return Mutated(archive, json_damage or "", tuple(steps), bytes(data))
