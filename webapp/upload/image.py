"""Streaming validation of ``docker save`` archives, on top of the tar reader.

Uploads are multi-GB and go straight from the HTTP body into an SSH channel, so the check is
push based: the caller hands every chunk to :meth:`ImageArchiveChecker.feed` (any size, any
boundaries) and calls :meth:`ImageArchiveChecker.finish` at the end of the stream. Memory
stays flat: layer data is only counted, and only small JSON-looking members (manifest.json,
the image config) are kept, under a total cap. Unsafe members (absolute or ``..`` names,
links out of the archive, devices) are refused before a single byte of them reaches a worker.

Both layouts of ``docker save`` are accepted: Docker <= 24 (``<id>/layer.tar``,
``<hex>.json`` config, manifest.json usually last, symlinks for repeated layers) and Docker >= 25
(OCI ``blobs/sha256/<hex>``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pink.errors import ImageArchiveError

from .tarstream import SAVE_HINT, TRUNCATED_HINT, TarStream

log = logging.getLogger(__name__)

#: Members up to this size may be buffered as metadata whatever their name.
SMALL_MEMBER_BYTES = 1 << 20
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


def _safe_name(raw: str, what: str) -> str:
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


def _check_symlink(name: str, target: str) -> None:
    """Refuse a symlink whose target, read lexically, leaves the archive."""
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


def _manifest_path(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ImageArchiveError(
            f"not a docker image: manifest.json has a bad {what} entry {value!r}"
        )
    return _safe_name(value, f"manifest.json {what}")


class ImageArchiveChecker(TarStream):
    """Push-based validator of one ``docker save`` archive.

    Call :meth:`feed` with every chunk in order, then :meth:`finish`. Both raise
    :class:`~pink.errors.ImageArchiveError` with a message for a person as soon as something
    is wrong; after an error the checker stays failed.
    """

    def __init__(self, max_metadata_bytes: int = 64 << 20) -> None:
        if max_metadata_bytes <= 0:
            raise ValueError("max_metadata_bytes must be positive")
        super().__init__()
        self._max_metadata = max_metadata_bytes
        self._metadata_used = 0
        # name -> (kind, size, link target or "")
        self._members: dict[str, tuple[str, int, str]] = {}
        self._content: dict[str, bytes] = {}
        self._info: ImageInfo | None = None

    # ------------------------------------------------------------------ tar reader hooks

    def _on_member(
        self, raw_name: str, link: str, typeflag: bytes, size: int, offset: int
    ) -> tuple[str, bool]:
        name = _safe_name(raw_name, "member")
        if typeflag in (b"3", b"4", b"6"):
            kind_word = {b"3": "character device", b"4": "block device", b"6": "fifo"}[typeflag]
            raise ImageArchiveError(
                f"unsafe archive: member {raw_name!r} is a {kind_word}; a `docker save` "
                f"archive holds only files, directories and links"
            )
        if typeflag not in (b"0", b"\0", b"7", b"1", b"2", b"5"):
            raise ImageArchiveError(
                f"unsupported tar member type {typeflag.decode('latin-1')!r} for {raw_name!r}; "
                f"{SAVE_HINT}"
            )
        if name == "":
            # "./" - the archive root itself, as `tar -C dir -c .` writes it.
            if typeflag != b"5":
                raise ImageArchiveError(f"unsafe archive: member {raw_name!r} has an empty name")
            return raw_name, False
        if name in self._members:
            raise ImageArchiveError(
                f"unsafe archive: member {name!r} appears twice; {SAVE_HINT}"
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

        if typeflag == b"2":
            _check_symlink(name, link)
            self._members[name] = (_SYMLINK, 0, link)
            return name, False
        if typeflag == b"1":
            target = _safe_name(link, f"hardlink {name!r} target")
            kind = self._members.get(target, ("",))[0]
            if kind == _SYMLINK:
                # link(2) links the symlink itself: its target is then read from elsewhere.
                raise ImageArchiveError(
                    f"unsafe archive: hardlink {name!r} points to the symlink {link!r}, which "
                    f"would lead elsewhere from the hardlink's place"
                )
            if kind == "" or kind == _DIR:
                raise ImageArchiveError(
                    f"unsafe archive: hardlink {name!r} points to {link!r}, which is not a file "
                    f"earlier in the archive"
                )
            self._members[name] = (_HARDLINK, 0, target)
            return name, False
        if typeflag == b"5":
            self._members[name] = (_DIR, 0, "")
            return name, False
        self._members[name] = (_FILE, size, "")
        # Candidates for metadata; _keep then keeps only those whose first byte looks like
        # JSON. A layer tar starts with a file name, so even big OCI blobs (layers and config
        # share blobs/sha256/) are dropped after one byte.
        candidate = parts[-1] != "layer.tar" and bool(
            size <= SMALL_MEMBER_BYTES
            or name in _BIG_METADATA_NAMES
            or _LEGACY_CONFIG_RE.fullmatch(name)
            or _OCI_BLOB_RE.fullmatch(name)
        )
        return name, candidate

    def _keep(self, name: str, size: int, first: int) -> bool:
        """Keep a candidate member only if it looks like JSON (configs and manifests do)."""
        if first in b"{[" or (first in b" \t\r\n" and size <= SMALL_MEMBER_BYTES):
            self._reserve(size, name)
            return True
        return False

    def _on_content(self, name: str, data: bytes) -> None:
        self._content[name] = data

    def _reserve(self, nbytes: int, what: str) -> None:
        self._metadata_used += nbytes
        if self._metadata_used > self._max_metadata:
            raise ImageArchiveError(
                f"archive metadata (member names and JSON files) exceeds the limit of "
                f"{self._max_metadata} bytes at member {what!r}; a `docker save` archive holds "
                f"far less, so this is not one, or the server's max_metadata_bytes is too small"
            )

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
            self._check_end()
            if not self._members:
                raise ImageArchiveError(f"the archive contains no files; {SAVE_HINT}")
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
                f"not a docker image: {what} {path!r} is missing from the archive; {SAVE_HINT}"
            )
        data = self._content.get(name)
        try:
            if data is None:
                raise ValueError("not JSON")
            return json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
            raise ImageArchiveError(
                f"not a docker image: {what} {path!r} is not valid JSON; {SAVE_HINT}"
            ) from None

    def _check_image(self, present: frozenset[str]) -> ImageInfo:
        manifest = self._json_member("manifest.json", "manifest")
        if not isinstance(manifest, list) or not manifest:
            raise ImageArchiveError(
                f"not a docker image: manifest.json is not a non-empty list of images; "
                f"{SAVE_HINT}"
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
        config_path = _manifest_path(entry["Config"], "Config")
        layers = entry["Layers"]
        if not isinstance(layers, list):
            raise ImageArchiveError("not a docker image: manifest.json Layers is not a list")
        layer_paths = tuple(_manifest_path(p, "Layers") for p in layers)
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
                    f"not match its name; {TRUNCATED_HINT}"
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
            total_bytes=self.bytes_seen,
        )
