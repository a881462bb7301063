"""Valid ``docker save`` archives for the fuzz tests: a small model, its tar encoding, and the
Hypothesis strategy that generates them.

An :class:`Archive` is a list of members plus what :class:`~webapp.upload.ImageArchiveChecker`
must report for it (config digest, diff_ids, layer paths, tags, missing layers of a thin
archive). Both layouts are generated: Docker <= 24 (``<id>/layer.tar``, ``<hex>.json``,
manifest.json, ``repositories``; a repeated layer as a symlink, a hardlink or a copy) and
Docker >= 25 (OCI ``blobs/sha256/<hex>``, index.json, oci-layout, manifest.json), written as
ustar, GNU or pax by :mod:`tarfile` (so long names travel in the ustar prefix, GNU long-name
records or pax ``path`` records), with extra files, directories, symlinks and hardlinks that
stay inside the archive, in Docker's member order or shuffled.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, replace

from hypothesis import strategies as st

BLOCK = 512
FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}
TYPES = {
    "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}
#: Path components: plain, with dots and spaces, JSON-looking, and non-ASCII (pax and GNU only).
_ASCII = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@+ {[]}"
_WIDE = _ASCII + "éüßñ中文дж€😀"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def norm(path: str) -> str:
    """A member name as the checker keys it: no empty or ``.`` components."""
    return "/".join(p for p in path.split("/") if p not in ("", "."))


@dataclass(frozen=True)
class Member:
    """One tar member; kind is one of :data:`TYPES`."""

    name: str
    kind: str = "file"
    data: bytes = b""
    link: str = ""
    pax: tuple[tuple[str, str], ...] = ()  # pax records of this member (pax format only)
    attrs: tuple[tuple[str, object], ...] = ()  # TarInfo attributes: mtime, mode, uid, ...

    def __repr__(self) -> str:
        link = f" -> {self.link!r}" if self.link else ""
        size = f" ({len(self.data)} B)" if self.kind == "file" else ""
        pax = f" pax={dict(self.pax)!r}" if self.pax else ""
        return f"<{self.kind} {self.name!r}{link}{size}{pax}>"


@dataclass(frozen=True)
class Raw:
    """Bytes written as they are between members: hand-made headers."""

    data: bytes
    what: str

    def __repr__(self) -> str:
        return f"<raw {self.what}, {len(self.data)} B>"


@dataclass(frozen=True)
class Encoded:
    """An archive's bytes and the offsets of the headers :mod:`tarfile` wrote."""

    data: bytes
    headers: tuple[int, ...]


@dataclass(frozen=True)
class Archive:
    """A ``docker save`` archive and what the checker must report for it."""

    layout: str  # "legacy" or "oci"
    fmt: str  # a key of FORMATS
    members: tuple[Member | Raw, ...]
    config: bytes
    diff_ids: tuple[str, ...]
    layer_paths: tuple[str, ...]
    tags: tuple[str, ...]
    present: frozenset[str] = frozenset()  # diff_ids the worker holds (thin archive)
    missing: tuple[str, ...] = ()  # diff_ids of manifest layers left out, in manifest order
    global_pax: tuple[tuple[str, str], ...] = ()
    trailing: int = 0  # zero bytes after the end-of-archive marker

    @property
    def digest(self) -> str:
        return f"sha256:{sha256(self.config)}"

    def with_members(self, members: list[Member | Raw]) -> "Archive":
        return replace(self, members=tuple(members))

    def encode(self) -> Encoded:
        """The archive's bytes, ending with the end-of-archive marker and ``trailing`` zeros."""
        out = bytearray()
        headers: list[int] = []
        if self.global_pax:
            out += tarfile.TarInfo.create_pax_global_header(dict(self.global_pax))
        for m in self.members:
            if isinstance(m, Raw):
                out += m.data
                continue
            record = member_bytes(m, FORMATS[self.fmt])
            headers += (len(out) + at for at in _header_offsets(record))
            out += record
        out += bytes(2 * BLOCK + self.trailing)
        return Encoded(bytes(out), tuple(headers))

    def __repr__(self) -> str:
        thin = f", thin: missing {len(self.missing)}" if self.missing else ""
        glob = f", global pax {dict(self.global_pax)!r}" if self.global_pax else ""
        return (f"Archive({self.layout}, {self.fmt}, {len(self.diff_ids)} layers{thin}{glob}, "
                f"members={list(self.members)!r})")


def member_bytes(m: Member, fmt: int) -> bytes:
    """The member's headers (extended ones included), data and padding, as tarfile writes them."""
    info = tarfile.TarInfo(m.name)
    info.type = TYPES[m.kind]
    for key, value in m.attrs:
        setattr(info, key, value)
    info.linkname = m.link
    info.size = len(m.data) if m.kind == "file" else 0
    info.pax_headers = dict(m.pax)
    data = m.data if m.kind == "file" else b""
    return info.tobuf(fmt, "utf-8", "surrogateescape") + data + bytes(-len(data) % BLOCK)


def _header_offsets(record: bytes) -> list[int]:
    """Offsets of the header blocks in one member's record (extended headers, then the header)."""
    offsets, pos = [], 0
    while pos < len(record):
        offsets.append(pos)
        block = record[pos : pos + BLOCK]
        if block[156:157] not in (b"x", b"g", b"L", b"K"):
            break
        size = int(block[124:136].strip(b" \0") or b"0", 8)
        pos += BLOCK + -(-size // BLOCK) * BLOCK
    return offsets


# ------------------------------------------------------------------------------- strategies


def _paths(alphabet: str) -> st.SearchStrategy[str]:
    component = st.text(alphabet, min_size=1, max_size=12).filter(lambda c: c not in (".", ".."))
    return st.lists(component, min_size=1, max_size=3).map("/".join)


_PATHS = {True: _paths(_ASCII), False: _paths(_WIDE)}  # by "ustar only"
_hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
_tags = st.lists(
    st.from_regex(r"[a-z0-9]{1,8}(/[a-z0-9]{1,8})?:[A-Za-z0-9_.-]{1,8}", fullmatch=True),
    max_size=3, unique=True,
)
_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(_WIDE, max_size=20)
)
_config_extra = st.dictionaries(
    st.text(_WIDE, min_size=1, max_size=8).filter(
        lambda k: k not in ("rootfs", "os", "config", "architecture", "history")),
    _json_scalars, max_size=3)
_layer_entries = st.lists(st.tuples(
    st.sampled_from(("file", "dir", "symlink", "hardlink", "chr")),
    st.sampled_from(("bin/sh", "/etc/passwd", "../../escape", "{json-like", "[", " space",
                     "usr/lib/x.so", "dev/null")),
    st.integers(0, 3000),
), max_size=5)


def _attrs(rng: random.Random, fmt: str) -> tuple[tuple[str, object], ...]:
    """Member metadata the checker ignores, within what the format can hold."""
    big = fmt != "ustar"
    attrs: list[tuple[str, object]] = [
        ("mtime", rng.choice([0, 1_700_000_000, rng.randrange(8**11 if not big else 1 << 36)])),
        ("mode", rng.choice([0o644, 0o755, 0o4755, 0o777, rng.randrange(8**7)])),
        ("uid", rng.choice([0, 1000, rng.randrange(8**7 if not big else 1 << 40)])),
        ("gid", rng.choice([0, 1000, rng.randrange(8**7 if not big else 1 << 40)])),
        ("uname", rng.choice(["", "root", "üser-" + "x" * rng.randrange(40) if big else "user"])),
    ]
    if fmt == "pax" and rng.random() < 0.3:
        attrs[0] = ("mtime", rng.randrange(1 << 40) + rng.random())
    return tuple(attrs)


@st.composite
def layer_tars(draw: st.DrawFn) -> bytes:
    """A layer: a tar (sometimes gzip-compressed) the checker must not look into. Its entries
    may be absolute, leave through ``..``, or be devices: only the image's own filesystem."""
    entries = draw(_layer_entries)
    seed = draw(st.integers(0, 2**32))
    fmt = draw(st.sampled_from(list(FORMATS.values())))
    rng = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        files: list[str] = []
        for i, (kind, name, size) in enumerate(entries):
            info = tarfile.TarInfo(f"{name}.{i}")
            if kind == "file" or (kind == "hardlink" and not files):
                info.size = size
                tar.addfile(info, io.BytesIO(rng.randbytes(size)))
                files.append(info.name)
                continue
            info.type = TYPES[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = "/etc/shadow" if kind == "symlink" else files[0]
            tar.addfile(info)
    data = buf.getvalue()
    return gzip.compress(data, mtime=0) if draw(st.booleans()) and draw(st.booleans()) else data


def _diff_id(layer: bytes) -> str:
    raw = gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer
    return f"sha256:{sha256(raw)}"


def _json(draw: st.DrawFn, value: object, big: bool = False) -> bytes:
    """JSON as a writer might lay it out (compact, indented, non-ASCII kept or escaped)."""
    text = json.dumps(
        value,
        indent=draw(st.sampled_from((None, None, 2, "\t"))),
        separators=draw(st.sampled_from(((",", ":"), (", ", ": ")))),
        ensure_ascii=draw(st.booleans()),
        sort_keys=draw(st.booleans()),
    )
    # Leading whitespace only on small members: the checker buffers a member that starts
    # with whitespace only up to SMALL_MEMBER_BYTES (Docker never writes any).
    lead = "" if big else draw(st.sampled_from(("", "", "\n", " ")))
    return (lead + text + draw(st.sampled_from(("", "\n")))).encode()


@st.composite
def archives(draw: st.DrawFn) -> Archive:
    """A valid ``docker save`` archive of either layout, in one of the three tar formats."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    short = fmt == "ustar"
    layout = draw(st.sampled_from(("legacy", "oci")))
    contents = list(dict.fromkeys(draw(st.lists(layer_tars(), min_size=1, max_size=3))))
    order = draw(st.lists(st.integers(0, len(contents) - 1), max_size=4))
    layers = [contents[i] for i in order]
    diff_ids = [_diff_id(lay) for lay in layers]
    tags = draw(_tags)

    config_value = {
        "architecture": draw(st.sampled_from(("amd64", "arm64", "riscv64"))),
        "os": "linux",
        "config": {"Cmd": ["/bin/sh", "-c", draw(st.text(_WIDE, max_size=30))],
                   "Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "fuzz"} for _ in layers],
        **draw(_config_extra),
    }
    # Now and then a config over 1 MiB (the checker buffers it by its name, not its size).
    big = draw(st.integers(0, 40)) == 0
    if big:
        config_value["comment"] = "x" * (1 << 20)
    config = _json(draw, config_value, big)

    drop: set[bytes] = set()
    if layers and draw(st.integers(0, 3)) == 0:  # a thin archive, a quarter of the time
        drop = draw(st.sets(st.sampled_from(sorted(set(layers))), min_size=1))
    missing = tuple(d for lay, d in zip(layers, diff_ids) if lay in drop)
    present = frozenset(missing) | draw(st.frozensets(_hex64.map("sha256:".__add__), max_size=2))

    if layout == "legacy":
        members, paths = _legacy(draw, layers, config, tags, drop, short)
    else:
        members, paths = _oci(draw, layers, config, tags, drop)
    members += _extras(draw, members, short)
    if draw(st.booleans()):
        members = draw(st.permutations(members))
    rng = random.Random(draw(st.integers(0, 2**32)))
    members = [replace(m, pax=_pax(rng) if fmt == "pax" else (), attrs=_attrs(rng, fmt))
               for m in _links_after_targets(members)]
    global_pax: tuple[tuple[str, str], ...] = ()
    if fmt == "pax" and draw(st.booleans()):
        global_pax = (("comment", draw(st.text(_WIDE, max_size=20))),)
    trailing = draw(st.sampled_from((0, 0, 1, 511, 512, 9216)))
    return Archive(layout, fmt, tuple(members), config, tuple(diff_ids), tuple(paths),
                   tuple(tags), present, missing, global_pax, trailing)


def _pax(rng: random.Random) -> tuple[tuple[str, str], ...]:
    """Pax records the checker must pass over (they name nothing it checks)."""
    pool = [("comment", "fuzz ✓"), ("SCHILY.xattr.user.k", "v"), ("atime", "1700000000.5"),
            ("gname", "grüppe"), ("hdrcharset", "ISO-IR 10646 2000 UTF-8")]
    return tuple(rng.sample(pool, rng.randrange(3)))


def _legacy(draw: st.DrawFn, layers: list[bytes], config: bytes, tags: list[str],
            drop: set[bytes], short: bool) -> tuple[list[Member], list[str]]:
    """Docker <= 24: a directory per layer, the config as <hex>.json, manifest.json last."""
    prefix = ""
    if draw(st.booleans()) and draw(st.booleans()):
        # ustar: the hardlink to a repeated layer must fit the 100-byte linkname field.
        prefix = draw(st.text("abcdef", min_size=1, max_size=20 if short else 200)) + "/"
    ids = draw(st.lists(_hex64, min_size=len(layers), max_size=len(layers), unique=True))
    repeat = draw(st.sampled_from(("symlink", "hardlink", "copy")))
    members: list[Member] = []
    paths: list[str] = []
    first: dict[bytes, str] = {}
    for lay, layer_id in zip(layers, ids):
        d = prefix + layer_id
        members += [Member(d, "dir"), Member(f"{d}/VERSION", data=b"1.0"),
                    Member(f"{d}/json", data=json.dumps({"id": layer_id}).encode())]
        path = f"{d}/layer.tar"
        paths.append(path)
        if lay in drop:
            continue
        if lay in first and repeat == "symlink":  # as Docker 20.10 writes a repeated layer
            first_id = first[lay].split("/")[-2]
            members.append(Member(path, "symlink", link=f"../{first_id}/layer.tar"))
        elif lay in first and repeat == "hardlink":
            members.append(Member(path, "hardlink", link=first[lay]))
        else:
            first.setdefault(lay, path)
            members.append(Member(path, data=lay))
    manifest = [{"Config": f"{sha256(config)}.json", "RepoTags": tags or None, "Layers": paths}]
    members += [Member(f"{sha256(config)}.json", data=config),
                Member("manifest.json", data=_json(draw, manifest))]
    if tags and draw(st.booleans()):
        name, tag = tags[0].rsplit(":", 1)
        repositories = {name: {tag: ids[-1] if ids else ""}}
        members.append(Member("repositories", data=_json(draw, repositories)))
    return members, paths


def _oci(draw: st.DrawFn, layers: list[bytes], config: bytes, tags: list[str],
         drop: set[bytes]) -> tuple[list[Member], list[str]]:
    """Docker >= 25: every layer, the config and the OCI manifest as blobs/sha256/<hex>."""
    oci_manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": f"sha256:{sha256(config)}", "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": f"sha256:{sha256(lay)}", "size": len(lay)} for lay in layers],
    }).encode()
    blobs = {sha256(lay): lay for lay in layers if lay not in drop}
    blobs[sha256(config)] = config
    blobs[sha256(oci_manifest)] = oci_manifest
    members = [Member("blobs", "dir"), Member("blobs/sha256", "dir")] if draw(st.booleans()) else []
    members += [Member(f"blobs/sha256/{h}", data=data) for h, data in blobs.items()]
    paths = [f"blobs/sha256/{sha256(lay)}" for lay in layers]
    descriptor = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "digest": f"sha256:{sha256(oci_manifest)}", "size": len(oci_manifest)}
    if tags:
        descriptor["annotations"] = {"io.containerd.image.name": tags[0]}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [descriptor]}
    manifest = [{"Config": f"blobs/sha256/{sha256(config)}", "RepoTags": tags, "Layers": paths}]
    members += [Member("index.json", data=_json(draw, index)),
                Member("manifest.json", data=_json(draw, manifest)),
                Member("oci-layout", data=b'{"imageLayoutVersion":"1.0.0"}')]
    if draw(st.booleans()):
        members.append(Member("repositories", data=b"{}"))
    return members, paths


def _extras(draw: st.DrawFn, members: list[Member], short: bool) -> list[Member]:
    """Members beside the image, all inside the archive: files (some JSON-looking), directories,
    symlinks to other members or to absent paths, hardlinks to files."""
    extras: list[Member] = []
    taken = {norm(m.name) for m in members}
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(("file", "dir", "symlink", "hardlink")))
        name = "extra/" + draw(_PATHS[short])
        if short and len(name.encode()) > 99:
            continue
        parents = {"/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1)}
        below = any(t.startswith(name + "/") for t in taken)
        if name in taken or below or any(
            m.kind != "dir" and norm(m.name) in parents for m in members + extras
        ):
            continue
        files = [m.name for m in members + extras if m.kind in ("file", "hardlink")]
        if kind == "file":
            data = draw(st.sampled_from((b"", b"{}", b"[1, 2]", b' {"k": 1}', b"plain text\n")))
            extras.append(Member(name, data=data * draw(st.integers(1, 3))))
        elif kind == "dir":
            extras.append(Member(name, "dir"))
        elif kind == "hardlink" and files:
            extras.append(Member(name, "hardlink", link=draw(st.sampled_from(files))))
        elif kind == "symlink":
            targets = [norm(m.name) for m in members + extras if m.kind != "symlink"]
            target = draw(st.sampled_from(targets + ["absent/file"]))
            up = "../" * name.count("/")
            noise = draw(st.sampled_from(("", "./", ".//")))
            link = noise + up + target
            if short and len(link.encode()) > 99:
                continue
            extras.append(Member(name, "symlink", link=link))
        else:
            continue
        taken.add(name)
    return extras


def _links_after_targets(members: list[Member]) -> list[Member]:
    """The same members, each hardlink moved after the member it links to."""
    out: list[Member] = []
    placed: set[str] = set()
    waiting: dict[str, list[Member]] = {}
    for m in members:
        if m.kind == "hardlink" and norm(m.link) not in placed:
            waiting.setdefault(norm(m.link), []).append(m)
            continue
        ready = [m]
        while ready:
            m = ready.pop()
            out.append(m)
            placed.add(norm(m.name))
            ready += waiting.pop(norm(m.name), [])
    return out
