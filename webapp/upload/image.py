"""Streaming validation of ``docker save`` archives, on top of the safe tar stream (:mod:`.safetar`).

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

from .safetar import FILE, HARDLINK, MAX_SYMLINK_HOPS, SafeTarStream, safe_name
from .tarstream import SAVE_HINT

log = logging.getLogger(__name__)

#: Members up to this size may be buffered as metadata whatever their name.
SMALL_MEMBER_BYTES = 1 << 20

_HEX64 = r"[0-9a-f]{64}"
_LEGACY_CONFIG_RE = re.compile(rf"({_HEX64})\.json")
_OCI_BLOB_RE = re.compile(rf"blobs/sha256/({_HEX64})")
_DIFF_ID_RE = re.compile(rf"sha256:{_HEX64}")
# Names that may hold a config or manifest bigger than SMALL_MEMBER_BYTES.
_BIG_METADATA_NAMES = ("manifest.json", "index.json")


@dataclass(frozen=True)
class ImageInfo:
    """What a valid archive holds."""

    config_digest: str  # "sha256:<hex>" = sha256 of the config JSON = docker image ID
    repo_tags: tuple[str, ...]
    diff_ids: tuple[str, ...]  # config["rootfs"]["diff_ids"], in order
    layer_paths: tuple[str, ...]  # manifest Layers, in order (paths inside the tar)
    missing_layers: tuple[str, ...]  # diff_ids whose layer file was absent (thin archive)
    total_bytes: int


def _manifest_path(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ImageArchiveError(
            f"not a docker image: manifest.json has a bad {what} entry {value!r}"
        )
    return safe_name(value, f"manifest.json {what}")


class ImageArchiveChecker(SafeTarStream):
    """Push-based validator of one ``docker save`` archive.

    Call :meth:`feed` with every chunk in order, then :meth:`finish`. Both raise
    :class:`~pink.errors.ImageArchiveError` with a message for a person as soon as something
    is wrong; after an error the checker stays failed.
    """

    def __init__(self, max_metadata_bytes: int = 64 << 20) -> None:
        super().__init__(max_metadata_bytes)
        self._content: dict[str, bytes] = {}
        # The config manifest.json names, once a manifest.json came first: kept whatever its
        # name and size (a config is found by the manifest, not by its name).
        self._config_name = ""

    # ------------------------------------------------------------------ tar reader hooks

    def _wants(self, name: str, size: int) -> bool:
        # Candidates for metadata; _keep then keeps only those whose first byte looks like
        # JSON. A layer tar starts with a file name, so even big OCI blobs (layers and config
        # share blobs/sha256/) are dropped after one byte.
        return name.rpartition("/")[2] != "layer.tar" and bool(
            name == self._config_name
            or size <= SMALL_MEMBER_BYTES
            or name in _BIG_METADATA_NAMES
            or _LEGACY_CONFIG_RE.fullmatch(name)
            or _OCI_BLOB_RE.fullmatch(name)
        )

    def _keep(self, name: str, size: int, first: int) -> bool:
        """Keep a candidate member only if it looks like JSON (configs and manifests do)."""
        if first in b"{[" or (first in b" \t\r\n" and size <= SMALL_MEMBER_BYTES):
            self._reserve(size, name)
            return True
        return False

    def _on_content(self, name: str, data: bytes) -> None:
        self._content[name] = data
        if name == "manifest.json":
            try:
                config = json.loads(data)[0]["Config"]
                self._config_name = safe_name(config, "config") if isinstance(config, str) else ""
            except (ValueError, UnicodeDecodeError, RecursionError, LookupError, TypeError,
                    ImageArchiveError):
                pass  # _check_image says what is wrong with it

    # --------------------------------------------------------------------------- finishing

    def finish(self, present_diff_ids: Collection[str] = ()) -> ImageInfo:
        """Check the end of the stream and the image metadata; return what the image holds.

        ``present_diff_ids``: layers the receiving worker already holds; a layer file absent
        from the archive is accepted when its diff_id is in here ("thin" archive).
        """
        info = self._finished(lambda: self._check_image(frozenset(present_diff_ids)))
        log.debug(
            "image archive ok: %s, %d layers (%d missing), %d bytes",
            info.config_digest, len(info.diff_ids), len(info.missing_layers), info.total_bytes,
        )
        return info

    def _regular_file(self, path: str, what: str) -> str | None:
        """Name of the regular file ``path`` leads to (through links), or None if absent."""
        name = self._resolve(path, what)
        entry = self._members.get(name)
        for _ in range(MAX_SYMLINK_HOPS):
            if entry is None or entry[0] != HARDLINK:
                break
            name = self._resolve(entry[2], what)
            entry = self._members.get(name)
        if entry is None or entry[0] != FILE:
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
        if not self._members:
            raise ImageArchiveError(f"the archive contains no files; {SAVE_HINT}")
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
        # The image id is the digest of the config's bytes, whatever the file's name: `docker
        # load` reads the config by the path manifest.json gives and never checks that name.
        digest = hashlib.sha256(self._content[config_file]).hexdigest()

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
