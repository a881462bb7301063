"""Streaming validation of ``docker save`` archives.

Uploads are multi-GB and go straight from the HTTP body into an SSH channel, so the check is
push based: the caller hands every chunk to :meth:`ImageArchiveChecker.feed` (any size, any
boundaries) and calls :meth:`ImageArchiveChecker.finish` at the end of the stream. Memory
stays flat: layer data is only counted, and only small JSON-looking members (manifest.json,
the image config) are kept, under a total cap.

The tar reader is our own rather than :mod:`tarfile` because tarfile pulls bytes from a file
object, and we are pushed bytes by a web server; it also lets us refuse unsafe members before
a single byte of them reaches a worker.

Both layouts of ``docker save`` are accepted: Docker <= 24 (``<id>/layer.tar``,
``<hex>.json`` config, manifest.json usually last, symlinks for repeated layers) and Docker >= 25
(OCI ``blobs/sha256/<hex>``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, BinaryIO

from pink.errors import ImageArchiveError

log = logging.getLogger(__name__)

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)

#: Members up to this size may be buffered as metadata whatever their name.
SMALL_MEMBER_BYTES = 1 << 20
#: pax / GNU long-name payloads larger than this are refused (real ones are tiny).
MAX_EXTENDED_HEADER_BYTES = 1 << 20
#: Longest member or link name accepted (Linux PATH_MAX).
MAX_NAME_BYTES = 4096
#: A docker save archive has a handful of members per layer; this bounds the member table.
MAX_MEMBERS = 100_000
#: Symlink hops followed while resolving one path (as Linux's MAXSYMLINKS).
MAX_SYMLINK_HOPS = 40

_HEX64 = r"[0-9a-f]{64}"
_LEGACY_CONFIG_RE = re.compile(rf"({_HEX64})\.json")
_OCI_BLOB_RE = re.compile(rf"blobs/sha256/({_HEX64})")
_DIFF_ID_RE = re.compile(rf"sha256:{_HEX64}")
# Names that may hold a config or manifest bigger than SMALL_MEMBER_BYTES.
_BIG_METADATA_NAMES = ("manifest.json", "index.json")

_COMPRESSED_MAGIC = (
    (b"\x1f\x8b", "gzip", "gunzip"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
    (b"\xfd7zXZ\x00", "xz", "unxz"),
    (b"BZh", "bzip2", "bunzip2"),
)

_SAVE_HINT = "upload the output of `docker save IMAGE`"
_TRUNCATED_HINT = "the upload was cut short or the file is incomplete; upload the whole file again"

# Parser states.
_HEADER, _DATA, _PAD, _END1, _DONE = range(5)

# Member kinds kept in the member table.
_FILE, _DIR, _SYMLINK, _HARDLINK = "f", "d", "l", "h"


@dataclass(frozen=True)
class ImageInfo:
    """What a valid archive holds."""

    config_digest: str  # "sha256:<hex>" = sha256 of the config JSON = docker image ID
    repo_tags: tuple[str, ...]
    diff_ids: tuple[str, ...]  # config["rootfs"]["diff_ids"], in order
    layer_paths: tuple[str, ...]  # manifest Layers, in order (paths inside the tar)
    missing_layers: tuple[str, ...]  # diff_ids whose layer file was absent (thin archive)
    total_bytes: int


def _nts(field: bytes) -> bytes:
    """A NUL-terminated string field."""
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


def _parse_number(field: bytes) -> int:
    """Octal ASCII or GNU base-256 numeric field; ValueError when neither."""
    if field and field[0] & 0x80:
        if field[0] == 0xFF:
            raise ValueError("negative number")
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = _nts(field).strip(b" ")
    if not text:
        return 0
    return int(text, 8)


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _parse_number(block[148:156])
    except ValueError:
        return False
    # The checksum is computed with its own field taken as eight spaces (8 * 32 = 256).
    unsigned = sum(block) - sum(block[148:156]) + 256
    if stored == unsigned:
        return True
    # Some old tars summed signed chars; tarfile and GNU tar accept both.
    signed = sum(struct.unpack("148b8x356b", block)) + 256
    return stored == signed


def _compression_of(head: bytes) -> tuple[str, str] | None:
    for magic, name, tool in _COMPRESSED_MAGIC:
        if head.startswith(magic):
            return name, tool
    return None


def _not_a_tar(head: bytes, detail: str) -> ImageArchiveError:
    comp = _compression_of(head)
    if comp is not None:
        name, tool = comp
        return ImageArchiveError(
            f"not a tar archive: the upload is {name}-compressed (as from "
            f"`docker save IMAGE | {name}`); decompress it first (`{tool}`) and upload the "
            f"plain tar, or {_SAVE_HINT}"
        )
    return ImageArchiveError(f"not a tar archive: {detail}; {_SAVE_HINT}")


def _decode(raw: bytes) -> str:
    # surrogateescape keeps undecodable names distinct instead of failing or merging them.
    return raw.decode("utf-8", "surrogateescape")


class ImageArchiveChecker:
    """Push-based validator of one ``docker save`` archive.

    Call :meth:`feed` with every chunk in order, then :meth:`finish`. Both raise
    :class:`~pink.errors.ImageArchiveError` with a message for a person as soon as something
    is wrong; after an error the checker stays failed.
    """

    def __init__(self, max_metadata_bytes: int = 64 << 20) -> None:
        if max_metadata_bytes <= 0:
            raise ValueError("max_metadata_bytes must be positive")
        self._max_metadata = max_metadata_bytes
        self._metadata_used = 0
        self._seen = 0
        self._state = _HEADER
        self._blk = bytearray()
        self._headers_seen = 0
        self._head = b""  # first bytes of the stream, to recognise compressed uploads
        # Current member.
        self._cur_name = ""
        self._cur_size = 0
        self._cur_offset = 0
        self._remaining = 0
        self._sink: bytearray | None = None
        self._sniff = False  # buffering decided by the first data byte
        self._ext_type = b""
        # Extended headers waiting for the member they describe.
        self._pending_pax: dict[str, str] = {}
        self._global_pax: dict[str, str] = {}
        self._long_name: str | None = None
        self._long_link: str | None = None
        self._pending_ext_offset = -1
        # name -> (kind, size, link target or "")
        self._members: dict[str, tuple[str, int, str]] = {}
        self._content: dict[str, bytes] = {}
        self._last_member = ""
        self._error: str | None = None
        self._info: ImageInfo | None = None

    @property
    def bytes_seen(self) -> int:
        """Bytes fed so far."""
        return self._seen

    # ----------------------------------------------------------------------------- feeding

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Check the next chunk of the archive; raises ImageArchiveError when it is bad."""
        if self._error is not None:
            raise ImageArchiveError(self._error)
        if self._info is not None:
            raise RuntimeError("feed() called after finish()")
        mv = memoryview(data)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        if not mv:
            return
        if len(self._head) < 8:
            self._head += bytes(mv[: 8 - len(self._head)])
        try:
            self._feed(mv)
        except ImageArchiveError as exc:
            self._error = str(exc)
            raise

    def _feed(self, mv: memoryview) -> None:
        n = len(mv)
        pos = 0
        while pos < n:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, n - pos)
                if self._sink is not None:
                    if self._sniff:
                        self._decide_buffering(mv[pos])
                    if self._sink is not None:
                        self._sink += mv[pos : pos + take]
                pos += take
                self._seen += take
                self._remaining -= take
                if self._remaining == 0:
                    self._end_of_data()
            elif state == _PAD:
                take = min(self._remaining, n - pos)
                pos += take
                self._seen += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _HEADER
            elif state == _DONE:
                rest = mv[pos:].tobytes()
                if rest.count(0) != len(rest):
                    bad = self._seen + len(rest) - len(rest.lstrip(b"\0"))
                    raise ImageArchiveError(
                        f"unexpected data after the end of the tar archive (offset {bad}); "
                        f"{_SAVE_HINT} and nothing else"
                    )
                self._seen += len(rest)
                pos = n
            else:  # _HEADER or _END1: one whole block is needed
                if not self._blk and n - pos >= BLOCK:
                    block = mv[pos : pos + BLOCK].tobytes()
                    pos += BLOCK
                    self._seen += BLOCK
                else:
                    take = min(BLOCK - len(self._blk), n - pos)
                    self._blk += mv[pos : pos + take]
                    pos += take
                    self._seen += take
                    if len(self._blk) < BLOCK:
                        continue
                    block = bytes(self._blk)
                    self._blk.clear()
                offset = self._seen - BLOCK
                if state == _HEADER:
                    self._on_header(block, offset)
                elif block != _ZERO_BLOCK:
                    raise ImageArchiveError(
                        f"corrupt tar archive: the end-of-archive marker at offset "
                        f"{offset - BLOCK} is followed by more data; {_SAVE_HINT}"
                    )
                else:
                    self._state = _DONE

    def _decide_buffering(self, first: int) -> None:
        """Keep a candidate member only if it looks like JSON (configs and manifests do)."""
        self._sniff = False
        size = self._cur_size
        if first in b"{[" or (first in b" \t\r\n" and size <= SMALL_MEMBER_BYTES):
            self._reserve(size, self._cur_name)
        else:
            self._sink = None

    def _reserve(self, nbytes: int, what: str) -> None:
        self._metadata_used += nbytes
        if self._metadata_used > self._max_metadata:
            raise ImageArchiveError(
                f"archive metadata (member names and JSON files) exceeds the limit of "
                f"{self._max_metadata} bytes at member {what!r}; a `docker save` archive holds "
                f"far less, so this is not one, or the server's max_metadata_bytes is too small"
            )

    def _on_header(self, block: bytes, offset: int) -> None:
        if block == _ZERO_BLOCK:
            if self._pending_ext_offset >= 0:
                raise ImageArchiveError(
                    f"corrupt tar archive: the extended header at offset "
                    f"{self._pending_ext_offset} is not followed by a member; {_SAVE_HINT}"
                )
            self._state = _END1
            return
        if not _checksum_ok(block):
            if self._headers_seen == 0:
                raise _not_a_tar(self._head, "the first 512 bytes are not a tar header")
            raise ImageArchiveError(
                f"corrupt tar archive: bad header checksum at offset {offset} (after member "
                f"{self._last_member!r}); {_TRUNCATED_HINT}"
            )
        self._headers_seen += 1
        typeflag = block[156:157]
        try:
            size = _parse_number(block[124:136])
        except ValueError:
            raise ImageArchiveError(
                f"corrupt tar archive: bad size field in the header at offset {offset}"
            ) from None

        if typeflag in (b"x", b"g", b"L", b"K"):
            if size > MAX_EXTENDED_HEADER_BYTES:
                raise ImageArchiveError(
                    f"tar extended header at offset {offset} is {size} bytes, more than the "
                    f"{MAX_EXTENDED_HEADER_BYTES} accepted; {_SAVE_HINT}"
                )
            # A global header describes no particular member, so it may precede the end.
            if typeflag != b"g" and self._pending_ext_offset < 0:
                self._pending_ext_offset = offset
            self._ext_type = typeflag
            self._start_data(f"<extended header at offset {offset}>", size, offset, bytearray())
            return

        magic = block[257:265]
        name_raw = _nts(block[0:100])
        if magic[:6] == b"ustar\0":
            prefix = _nts(block[345:500])
            if prefix:
                name_raw = prefix + b"/" + name_raw
        name = _decode(name_raw)
        link = _decode(_nts(block[157:257]))
        pax = {**self._global_pax, **self._pending_pax}
        if self._long_name is not None:
            name = self._long_name
        if self._long_link is not None:
            link = self._long_link
        name = pax.get("path", name)
        link = pax.get("linkpath", link)
        if "size" in pax:
            try:
                size = int(pax["size"])
                if size < 0:
                    raise ValueError
            except ValueError:
                raise ImageArchiveError(
                    f"corrupt tar archive: bad pax size {pax['size']!r} for member {name!r}"
                ) from None
        self._pending_pax = {}
        self._long_name = self._long_link = None
        self._pending_ext_offset = -1

        # Old V7 archives mark directories as regular files with a trailing slash.
        if typeflag == b"\0" and name.endswith("/"):
            typeflag = b"5"
        self._add_member(name, link, typeflag, size, offset)

    def _add_member(
        self, raw_name: str, link: str, typeflag: bytes, size: int, offset: int
    ) -> None:
        name = self._safe_name(raw_name, "member")
        if typeflag in (b"3", b"4", b"6"):
            kind_word = {b"3": "character device", b"4": "block device", b"6": "fifo"}[typeflag]
            raise ImageArchiveError(
                f"unsafe archive: member {raw_name!r} is a {kind_word}; a `docker save` "
                f"archive holds only files, directories and links"
            )
        if typeflag not in (b"0", b"\0", b"7", b"1", b"2", b"5"):
            raise ImageArchiveError(
                f"unsupported tar member type {typeflag.decode('latin-1')!r} for {raw_name!r}; "
                f"{_SAVE_HINT}"
            )
        if name == "":
            # "./" - the archive root itself, as `tar -C dir -c .` writes it.
            if typeflag != b"5":
                raise ImageArchiveError(f"unsafe archive: member {raw_name!r} has an empty name")
            self._last_member = raw_name
            self._finish_header_only()
            return
        if name in self._members:
            raise ImageArchiveError(
                f"unsafe archive: member {name!r} appears twice; {_SAVE_HINT}"
            )
        if len(self._members) >= MAX_MEMBERS:
            raise ImageArchiveError(
                f"archive has more than {MAX_MEMBERS} members; a `docker save` archive has a "
                f"few per layer, so this is not one"
            )
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if self._members.get(parent, ("",))[0] == _SYMLINK:
                raise ImageArchiveError(
                    f"unsafe archive: member {name!r} lies inside {parent!r}, which is a symlink"
                )
        self._reserve(len(name) + len(link), name)
        self._last_member = name

        if typeflag == b"2":
            self._check_symlink(name, link)
            self._members[name] = (_SYMLINK, 0, link)
            self._finish_header_only()
        elif typeflag == b"1":
            target = self._safe_name(link, f"hardlink {name!r} target")
            kind = self._members.get(target, ("",))[0]
            if kind == "" or kind == _DIR:
                raise ImageArchiveError(
                    f"unsafe archive: hardlink {name!r} points to {link!r}, which is not a file "
                    f"earlier in the archive"
                )
            self._members[name] = (_HARDLINK, 0, target)
            self._finish_header_only()
        elif typeflag == b"5":
            self._members[name] = (_DIR, 0, "")
            self._finish_header_only()
        else:
            self._members[name] = (_FILE, size, "")
            # Candidates for metadata; _decide_buffering then keeps only those whose first
            # byte looks like JSON. A layer tar starts with a file name, so even big OCI blobs
            # (layers and config share blobs/sha256/) are dropped after one byte.
            sink: bytearray | None = None
            if parts[-1] != "layer.tar" and (
                size <= SMALL_MEMBER_BYTES
                or name in _BIG_METADATA_NAMES
                or _LEGACY_CONFIG_RE.fullmatch(name)
                or _OCI_BLOB_RE.fullmatch(name)
            ):
                sink = bytearray()
            self._ext_type = b""
            self._start_data(name, size, offset, sink, sniff=sink is not None)

    def _safe_name(self, raw: str, what: str) -> str:
        """Normalised archive path, or ImageArchiveError for absolute/``..``/NUL names."""
        subject = f"{what} {raw!r}"
        if "\0" in raw:
            raise ImageArchiveError(f"unsafe archive: {subject} contains a NUL byte")
        if len(raw.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise ImageArchiveError(
                f"unsafe archive: {what} {raw[:80]!r}... is longer than {MAX_NAME_BYTES} bytes"
            )
        if raw.startswith("/"):
            raise ImageArchiveError(f"unsafe archive: {subject} is an absolute path")
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ImageArchiveError(f"unsafe archive: {subject} contains a '..' component")
        return "/".join(parts)

    def _check_symlink(self, name: str, target: str) -> None:
        if not target:
            raise ImageArchiveError(f"unsafe archive: symlink {name!r} has an empty target")
        if "\0" in target:
            raise ImageArchiveError(f"unsafe archive: symlink {name!r} target contains a NUL byte")
        if target.startswith("/"):
            raise ImageArchiveError(
                f"unsafe archive: symlink {name!r} points to the absolute path {target!r}"
            )
        depth: list[str] = name.split("/")[:-1]
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not depth:
                    raise ImageArchiveError(
                        f"unsafe archive: symlink {name!r} -> {target!r} points outside the "
                        f"archive"
                    )
                depth.pop()
            else:
                depth.append(part)

    def _start_data(
        self, name: str, size: int, offset: int, sink: bytearray | None, sniff: bool = False
    ) -> None:
        self._cur_name = name
        self._cur_size = size
        self._cur_offset = offset
        self._remaining = size
        self._sink = sink
        self._sniff = sniff
        if size == 0:
            self._sniff = False
            self._end_of_data()
        else:
            self._state = _DATA

    def _finish_header_only(self) -> None:
        # Links, directories and devices carry no data, whatever their size field says
        # (as Go's archive/tar and Python's tarfile read them).
        self._sink = None
        self._state = _HEADER

    def _end_of_data(self) -> None:
        sink = self._sink
        self._sink = None
        if self._ext_type:
            self._on_extended(self._ext_type, bytes(sink or b""))
            self._ext_type = b""
        elif sink is not None:
            self._content[self._cur_name] = bytes(sink)
        pad = -self._cur_size % BLOCK
        if pad:
            self._remaining = pad
            self._state = _PAD
        else:
            self._state = _HEADER

    def _on_extended(self, typeflag: bytes, payload: bytes) -> None:
        where = f"at offset {self._cur_offset}"
        if typeflag in (b"L", b"K"):
            value = _decode(payload.rstrip(b"\0"))
            if typeflag == b"L":
                self._long_name = value
            else:
                self._long_link = value
            return
        records = self._parse_pax(payload, where)
        target = self._global_pax if typeflag == b"g" else self._pending_pax
        for key, value in records:
            if key.startswith("GNU.sparse."):
                raise ImageArchiveError(
                    f"unsupported tar feature: sparse file {where}; {_SAVE_HINT}"
                )
            if value == "":
                target.pop(key, None)  # an empty value deletes the keyword (POSIX)
            else:
                target[key] = value

    @staticmethod
    def _parse_pax(payload: bytes, where: str) -> list[tuple[str, str]]:
        records: list[tuple[str, str]] = []
        pos = 0
        while pos < len(payload):
            if payload[pos] == 0:
                break  # NUL padding after the last record
            space = payload.find(b" ", pos)
            try:
                if space < 0:
                    raise ValueError
                length = int(payload[pos:space])
                record = payload[pos : pos + length]
                if length <= space - pos or len(record) != length or not record.endswith(b"\n"):
                    raise ValueError
                key, eq, value = record[space - pos + 1 : -1].partition(b"=")
                if not eq:
                    raise ValueError
            except ValueError:
                raise ImageArchiveError(
                    f"corrupt tar archive: malformed pax extended header {where}"
                ) from None
            records.append((_decode(key), _decode(value)))
            pos += length
        return records

    # --------------------------------------------------------------------------- finishing

    def finish(self, present_diff_ids: Collection[str] = ()) -> ImageInfo:
        """Check the end of the stream and the image metadata; return what the image holds.

        ``present_diff_ids``: layers the receiving worker already holds; a layer file absent
        from the archive is accepted when its diff_id is in here ("thin" archive).
        """
        if self._error is not None:
            raise ImageArchiveError(self._error)
        if self._info is not None:
            return self._info
        try:
            self._check_complete()
            self._check_symlinks()
            info = self._check_image(frozenset(present_diff_ids))
        except ImageArchiveError as exc:
            self._error = str(exc)
            raise
        self._info = info
        log.debug(
            "image archive ok: %s, %d layers (%d missing), %d bytes",
            info.config_digest, len(info.diff_ids), len(info.missing_layers), info.total_bytes,
        )
        return info

    def _check_complete(self) -> None:
        if self._seen == 0:
            raise ImageArchiveError(f"empty upload: no bytes were received; {_SAVE_HINT}")
        if self._headers_seen == 0 and self._seen < BLOCK:
            raise _not_a_tar(self._head, f"only {self._seen} bytes, shorter than one tar header")
        after = f"after member {self._last_member!r}" if self._last_member else "at its start"
        if self._state == _HEADER:
            if self._blk:
                raise ImageArchiveError(
                    f"archive is truncated: it ends in the middle of a tar header {after} "
                    f"(offset {self._seen}); {_TRUNCATED_HINT}"
                )
            raise ImageArchiveError(
                f"archive is truncated: it ends {after} without the end-of-archive marker; "
                f"{_TRUNCATED_HINT}"
            )
        if self._state == _DATA:
            got = self._cur_size - self._remaining
            raise ImageArchiveError(
                f"archive is truncated: it ends in the middle of {self._describe_current()} "
                f"(got {got} of {self._cur_size} bytes); {_TRUNCATED_HINT}"
            )
        if self._state == _PAD:
            raise ImageArchiveError(
                f"archive is truncated: it ends in the middle of the padding after "
                f"{self._describe_current()}; {_TRUNCATED_HINT}"
            )
        if self._state == _END1:
            raise ImageArchiveError(
                f"archive is truncated: it ends in the middle of the end-of-archive marker; "
                f"{_TRUNCATED_HINT}"
            )
        if not self._members:
            raise ImageArchiveError(f"the archive contains no files; {_SAVE_HINT}")

    def _describe_current(self) -> str:
        if self._ext_type:
            return self._cur_name.strip("<>")
        return f"member {self._cur_name!r}"

    def _check_symlinks(self) -> None:
        # Each symlink was checked lexically as it arrived; chains (a -> ., b -> a/..) can
        # still escape once all links are known, so resolve every one for real.
        for name, (kind, _, _) in self._members.items():
            if kind == _SYMLINK:
                self._resolve(name, f"symlink {name!r}")

    def _resolve(self, path: str, what: str) -> str:
        """Follow archive symlinks in ``path``; the resolved name (which may not exist)."""
        todo = list(reversed(path.split("/")))
        done: list[str] = []
        hops = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    raise ImageArchiveError(
                        f"unsafe archive: {what} points outside the archive through other symlinks"
                    )
                done.pop()
                continue
            candidate = "/".join(done + [part])
            entry = self._members.get(candidate)
            if entry is not None and entry[0] == _SYMLINK:
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise ImageArchiveError(f"unsafe archive: {what} is part of a symlink loop")
                if entry[2].startswith("/"):  # refused in feed(); never follow one
                    raise ImageArchiveError(f"unsafe archive: {what} points outside the archive")
                todo.extend(reversed(entry[2].split("/")))
                continue
            done.append(part)
        return "/".join(done)

    def _regular_file(self, path: str, what: str) -> str | None:
        """Name of the regular file ``path`` leads to (through links), or None if absent."""
        name = self._resolve(path, what)
        entry = self._members.get(name)
        for _ in range(MAX_SYMLINK_HOPS):
            if entry is None or entry[0] != _HARDLINK:
                break
            name = self._resolve(entry[2], what)
            entry = self._members.get(name)
        if entry is None or entry[0] != _FILE:
            return None
        return name

    def _json_member(self, path: str, what: str) -> Any:
        name = self._regular_file(path, what)
        if name is None:
            raise ImageArchiveError(
                f"not a docker image: {what} {path!r} is missing from the archive; {_SAVE_HINT}"
            )
        data = self._content.get(name)
        try:
            if data is None:
                raise ValueError("not JSON")
            return json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise ImageArchiveError(
                f"not a docker image: {what} {path!r} is not valid JSON; {_SAVE_HINT}"
            ) from None

    def _manifest_path(self, value: object, what: str) -> str:
        if not isinstance(value, str) or not value:
            raise ImageArchiveError(
                f"not a docker image: manifest.json has a bad {what} entry {value!r}"
            )
        return self._safe_name(value, f"manifest.json {what}")

    def _check_image(self, present: frozenset[str]) -> ImageInfo:
        manifest = self._json_member("manifest.json", "manifest")
        if not isinstance(manifest, list) or not manifest:
            raise ImageArchiveError(
                f"not a docker image: manifest.json is not a non-empty list of images; "
                f"{_SAVE_HINT}"
            )
        if len(manifest) > 1:
            raise ImageArchiveError(
                f"the archive holds {len(manifest)} images; PINK accepts exactly one image per "
                f"job: save only the image to run (`docker save IMAGE`)"
            )
        entry = manifest[0]
        if not isinstance(entry, dict) or "Config" not in entry or "Layers" not in entry:
            raise ImageArchiveError(
                "not a docker image: the manifest.json entry has no Config or no Layers"
            )
        config_path = self._manifest_path(entry["Config"], "Config")
        layers = entry["Layers"]
        if not isinstance(layers, list):
            raise ImageArchiveError("not a docker image: manifest.json Layers is not a list")
        layer_paths = tuple(self._manifest_path(p, "Layers") for p in layers)
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ImageArchiveError("not a docker image: manifest.json RepoTags is not a list")

        config_file = self._regular_file(config_path, f"config {config_path!r}")
        config = self._json_member(config_path, "image config")
        assert config_file is not None  # _json_member raised otherwise
        digest = hashlib.sha256(self._content[config_file]).hexdigest()
        for named in (config_path, config_file):
            m = _LEGACY_CONFIG_RE.fullmatch(named) or _OCI_BLOB_RE.fullmatch(named)
            if m and m.group(1) != digest:
                raise ImageArchiveError(
                    f"damaged archive: image config {named!r} has sha256 {digest}, which does "
                    f"not match its name; {_TRUNCATED_HINT}"
                )

        rootfs = config.get("rootfs") if isinstance(config, dict) else None
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or not all(
            isinstance(d, str) and _DIFF_ID_RE.fullmatch(d) for d in diff_ids
        ):
            raise ImageArchiveError(
                f"not a docker image: image config {config_path!r} has no valid rootfs.diff_ids"
            )
        if len(diff_ids) != len(layer_paths):
            raise ImageArchiveError(
                f"damaged archive: the image config lists {len(diff_ids)} layers "
                f"(rootfs.diff_ids) but manifest.json lists {len(layer_paths)}"
            )

        missing: list[str] = []
        for path, diff_id in zip(layer_paths, diff_ids):
            if self._regular_file(path, f"layer {path!r}") is not None:
                continue
            if diff_id in present:
                missing.append(diff_id)
                continue
            raise ImageArchiveError(
                f"incomplete archive: layer {path!r} ({diff_id}) named in manifest.json is "
                f"missing from the archive, and the worker does not hold it; upload the full "
                f"output of `docker save IMAGE`"
            )
        return ImageInfo(
            config_digest=f"sha256:{digest}",
            repo_tags=tuple(tags),
            diff_ids=tuple(diff_ids),
            layer_paths=layer_paths,
            missing_layers=tuple(missing),
            total_bytes=self._seen,
        )


class ValidatingReader:
    """File-like pass-through that validates an upload while it is read.

    Meant as the source of ``scp.SCPClient.putfo(reader, path, size=length)``: every
    :meth:`read` pulls from ``source``, feeds the checker and returns the same bytes. When the
    last byte has been read, :meth:`ImageArchiveChecker.finish` runs *before* those bytes are
    returned, so a bad archive never arrives complete on the worker. :attr:`info` then holds
    the result.
    """

    def __init__(
        self,
        source: BinaryIO,
        length: int,
        checker: ImageArchiveChecker | None = None,
        chunk_size: int = 1 << 20,
        on_progress: Callable[[int], None] | None = None,
        present_diff_ids: Collection[str] = (),
    ) -> None:
        if length < 0:
            raise ValueError("length must be >= 0")
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self._source = source
        self._length = length
        self.checker = checker if checker is not None else ImageArchiveChecker()
        self._chunk = chunk_size
        self._on_progress = on_progress
        self._present = present_diff_ids
        self._pos = 0
        self.info: ImageInfo | None = None

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        """Bytes handed out so far (scp's putfo tracks progress with it)."""
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        """Up to ``n`` bytes (all that remain when ``n`` < 0); b"" once ``length`` is reached."""
        remaining = self._length - self._pos
        if remaining <= 0:
            if self.info is None:
                self.info = self.checker.finish(self._present)
            return b""
        want = remaining if n is None or n < 0 else min(n, remaining)
        if want == 0:
            return b""
        parts: list[bytes] = []
        got = 0
        while got < want:
            piece = self._source.read(min(want - got, self._chunk))
            if not piece:
                raise ImageArchiveError(
                    f"upload truncated: got {self._pos + got} of {self._length} bytes (the "
                    f"client sent less than its Content-Length); upload the file again"
                )
            if len(piece) > want - got:
                piece = piece[: want - got]  # a source that ignores the size asked for
            self.checker.feed(piece)
            parts.append(piece)
            got += len(piece)
        self._pos += got
        if self._pos >= self._length:
            self.info = self.checker.finish(self._present)
        if self._on_progress is not None:
            self._on_progress(self._pos)
        return parts[0] if len(parts) == 1 else b"".join(parts)
