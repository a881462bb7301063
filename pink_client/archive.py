"""``docker save`` tarballs: read an archive's image id and layers without reading the layers,
work out the byte ranges of a thin archive, and run ``docker`` for ``submit --image``.

A compressed archive (gzip, zstd, xz, bzip2, as ``docker load`` takes) is read as a stream,
decompressed on the way (:mod:`pink.compression`), once; it is sent whole (its layers cannot be
cut out of the compressed bytes, so no thin upload), and the server decompresses it again."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import posixpath
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from pink.compression import CompressedStreamError, decompressed, sniff

from .errors import EXIT_USAGE, CliError
from .output import Ui, human_bytes

log = logging.getLogger(__name__)

#: A docker image config is a few kB; refuse to load a "config" that is not one.
MAX_CONFIG_BYTES = 64 << 20
IMAGE_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
DIFF_ID_RE = IMAGE_ID_RE
#: Members of a compressed archive up to this size that look like JSON are kept while it
#: streams (the config may come before manifest.json names it); at most MAX_CONFIG_BYTES of them.
SMALL_JSON_BYTES = 1 << 20
CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class ImageArchive:
    path: Path
    size: int
    image_id: str
    tags: tuple[str, ...]
    #: The image's layers, bottom first (config rootfs.diff_ids).
    diff_ids: tuple[str, ...] = ()
    #: Per layer, the byte range [start, end) of the member holding its tar (headers, data and
    #: padding), or None when it cannot be left out of a thin archive.
    layer_spans: tuple[tuple[int, int] | None, ...] = ()
    #: Where the tar's end marker starts (0 when unknown).
    members_end: int = 0

    def upload_ranges(self, omit: int = 0) -> list[tuple[int, int]]:
        """The byte ranges to send, in the order to send them: every member but the layer files
        in the archive's order (manifest.json and the config among them), then the layer files
        bottom first, then the end marker. The worker registers each layer as soon as it and
        those under it are in (gpu_worker.layerload); ``docker save`` puts manifest.json last
        and the layers in name order. The same bytes as :meth:`thin_ranges` (``omit`` > 0) or
        the whole file, in another order; that order where the layers cannot be placed."""
        plain = self.thin_ranges(omit) if omit else [(0, self.size)]
        layers = list(dict.fromkeys(self.layer_spans[omit:]))  # a repeated layer is one file
        if not plain or not self.members_end or not layers or None in layers:
            return plain
        tail = [(self.members_end, self.size)]
        moved = sorted(layers) + tail  # type: ignore[arg-type] # None was ruled out
        rest = []
        for start, end in plain:
            for a, b in moved:
                if a < end and b > start:
                    if a > start:
                        rest.append((start, a))
                    start = max(start, b)
            if start < end:
                rest.append((start, end))
        return rest + layers + tail  # type: ignore[operator]

    def thin_ranges(self, omit: int) -> list[tuple[int, int]]:
        """Byte ranges of the archive without the members of its ``omit`` bottom layers
        (manifest and config unchanged: what `docker load` takes when it holds those layers).
        Empty when they cannot be left out."""
        if omit <= 0 or omit > len(self.layer_spans):
            return []
        kept = set(self.layer_spans[omit:])
        cut = sorted({span for span in self.layer_spans[:omit] if span is not None and span not in kept})
        if len(cut) < len({span for span in self.layer_spans[:omit] if span not in kept}):
            return []  # a layer we cannot place in the file
        ranges, pos = [], 0
        for start, end in cut:
            if start > pos:
                ranges.append((pos, start))
            pos = end
        if pos < self.size:
            ranges.append((pos, self.size))
        return ranges


def _layer_spans(tf: tarfile.TarFile, layer_paths: list) -> tuple[tuple[int, int] | None, ...]:
    """Where each layer's regular file sits in the archive (symlinks followed)."""
    if tf.pax_headers:
        return tuple(None for _ in layer_paths)  # a global header shapes later members: keep all
    members = {m.name.rstrip("/"): m for m in tf.getmembers()}
    spans: list[tuple[int, int] | None] = []
    for path in layer_paths:
        member = members.get(str(path).rstrip("/")) if isinstance(path, str) else None
        for _ in range(8):
            if member is None or not member.issym():
                break
            target = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), member.linkname))
            member = members.get(target)
        if member is None or not member.isfile():
            spans.append(None)
            continue
        end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        spans.append((member.offset, end))
    return tuple(spans)


def _read_member(tf: tarfile.TarFile, member: tarfile.TarInfo, limit: int, what: str) -> bytes:
    if not member.isfile():
        raise CliError(
            EXIT_USAGE,
            f"{tf.name}: {member.name} is not a regular file; is it a `docker save` archive?",
        )
    if member.size > limit:
        raise CliError(
            EXIT_USAGE,
            f"{tf.name}: {what} {member.name} is implausibly large ({human_bytes(member.size)})",
        )
    f = tf.extractfile(member)
    assert f is not None  # isfile() was checked
    with f:
        return f.read()


def read_image_archive(path: Path) -> ImageArchive:
    """Find the image id of a ``docker save`` tarball without reading its layers.

    tarfile's member index seeks from header to header, so the cost is one read per member
    header even though Docker 20.10 puts manifest.json at the very end.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(6)
    except FileNotFoundError:
        raise CliError(
            EXIT_USAGE,
            f"{path}: no such file (give the tarball written by `docker save -o FILE IMAGE`)",
        ) from None
    except OSError as exc:
        raise CliError(EXIT_USAGE, f"cannot read {path}: {exc.strerror}") from exc
    if sniff(magic):
        return _read_compressed(path, size, sniff(magic))
    try:
        with tarfile.open(path, mode="r:") as tf:
            try:
                manifest_member = tf.getmember("manifest.json")
            except KeyError:
                raise CliError(
                    EXIT_USAGE,
                    f"{path} has no manifest.json: "
                    "it is not a complete `docker save` archive (truncated?)",
                ) from None
            entry = _manifest_entry(
                path, _read_member(tf, manifest_member, MAX_CONFIG_BYTES, "manifest"))
            config_name = entry.get("Config")
            if not isinstance(config_name, str) or not config_name:
                raise CliError(EXIT_USAGE, f"{path}: manifest.json names no image config")
            try:
                config_member = tf.getmember(config_name)
            except KeyError:
                raise CliError(
                    EXIT_USAGE,
                    f"{path}: the image config {config_name} named by manifest.json is missing",
                ) from None
            config = _read_member(tf, config_member, MAX_CONFIG_BYTES, "image config")
            diff_ids: tuple[str, ...] = ()
            spans: tuple[tuple[int, int] | None, ...] = ()
            members_end = 0
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                found = json.loads(config)["rootfs"]["diff_ids"]
                layers = entry.get("Layers")
                if (isinstance(found, list) and isinstance(layers, list) and len(layers) == len(found)
                        and all(isinstance(d, str) and DIFF_ID_RE.match(d) for d in found)):
                    diff_ids = tuple(found)
                    spans = _layer_spans(tf, layers)
                    members_end = tf.offset  # all members were read: the end marker's offset
    except tarfile.TarError as exc:
        raise CliError(
            EXIT_USAGE, f"{path} is not a tar archive ({exc}); give the output of `docker save`"
        ) from exc
    tags = tuple(str(t) for t in (entry.get("RepoTags") or []) if isinstance(t, str))
    return ImageArchive(
        path=path, size=size, image_id="sha256:" + hashlib.sha256(config).hexdigest(), tags=tags,
        diff_ids=diff_ids, layer_spans=spans, members_end=members_end,
    )


def _manifest_entry(path: Path, raw: bytes) -> dict:
    """The one image manifest.json lists."""
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise CliError(EXIT_USAGE, f"{path}: manifest.json is not valid JSON ({exc})") from exc
    if not isinstance(manifest, list) or not manifest or not isinstance(manifest[0], dict):
        raise CliError(EXIT_USAGE, f"{path}: manifest.json lists no image")
    if len(manifest) != 1:
        raise CliError(
            EXIT_USAGE,
            f"{path} holds {len(manifest)} images; PINK runs one: "
            "`docker save` a single image per file",
        )
    return manifest[0]


class _Plain(io.RawIOBase):
    """The decompressed bytes of a compressed archive, as a file tarfile reads in stream mode."""

    def __init__(self, f) -> None:
        self._pieces = decompressed(iter(lambda: f.read(CHUNK), b""))
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - io's interface
        while not self._pending:
            piece = next(self._pieces, b"")
            if not piece:
                return 0
            self._pending = memoryview(piece)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _stream_members(path: Path, keep) -> dict[str, bytes]:
    """One pass over a compressed archive: the data of the regular members ``keep(name, size,
    kept)`` asks for (``kept``: what is kept so far)."""
    kept: dict[str, bytes] = {}
    try:
        with open(path, "rb") as f, tarfile.open(
                fileobj=io.BufferedReader(_Plain(f), CHUNK), mode="r|") as tf:
            for member in tf:
                name = posixpath.normpath(member.name)
                if member.isfile() and keep(name, member.size, kept):
                    data = tf.extractfile(member)
                    assert data is not None  # isfile() was checked
                    kept[name] = data.read()
    except CompressedStreamError as exc:
        raise CliError(EXIT_USAGE, f"{path}: {exc}; is the file complete?") from None
    except (tarfile.TarError, EOFError) as exc:
        raise CliError(
            EXIT_USAGE, f"{path} holds no tar archive ({exc}); give the output of `docker save`"
        ) from None
    except OSError as exc:
        raise CliError(EXIT_USAGE, f"cannot read {path}: {exc.strerror or exc}") from exc
    return kept


def _read_compressed(path: Path, size: int, kind: str) -> ImageArchive:
    """:func:`read_image_archive` of a compressed archive: one streamed pass keeps manifest.json
    and the small JSON members (one of them the config, whatever its name); a second pass
    fetches a config too big to have been kept before manifest.json named it."""
    budget = MAX_CONFIG_BYTES

    def small_json(name: str, size: int, kept: dict[str, bytes]) -> bool:
        nonlocal budget
        if name != "manifest.json" and (size > SMALL_JSON_BYTES or not name.endswith(".json")
                                        and not name.startswith("blobs/")):
            return False
        budget -= size
        return budget >= 0

    log.debug("%s is %s-compressed: reading it as a stream", path, kind)
    kept = _stream_members(path, small_json)
    if "manifest.json" not in kept:
        raise CliError(EXIT_USAGE, f"{path} has no manifest.json: it is not a complete "
                                   "`docker save` archive (truncated?)")
    entry = _manifest_entry(path, kept["manifest.json"])
    config_name = entry.get("Config")
    if not isinstance(config_name, str) or not config_name:
        raise CliError(EXIT_USAGE, f"{path}: manifest.json names no image config")
    config_name = posixpath.normpath(config_name)
    config = kept.get(config_name)
    if config is None:
        config = _stream_members(
            path, lambda name, size, _: name == config_name and size <= MAX_CONFIG_BYTES
        ).get(config_name)
    if config is None:
        raise CliError(EXIT_USAGE, f"{path}: the image config {config_name} named by "
                                   "manifest.json is missing (or too large)")
    diff_ids: tuple[str, ...] = ()
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        found = json.loads(config)["rootfs"]["diff_ids"]
        if isinstance(found, list) and all(isinstance(d, str) and DIFF_ID_RE.match(d) for d in found):
            diff_ids = tuple(found)
    tags = tuple(str(t) for t in (entry.get("RepoTags") or []) if isinstance(t, str))
    return ImageArchive(path=path, size=size, image_id="sha256:" + hashlib.sha256(config).hexdigest(),
                        tags=tags, diff_ids=diff_ids)


def _docker(argv: list[str]) -> str:
    docker = shutil.which("docker")
    if not docker:
        raise CliError(
            EXIT_USAGE,
            "docker is not on PATH, so --image cannot export the image: "
            "run `docker save -o image.tar NAME` where docker is and pass image.tar",
        )
    log.debug("running docker %s", argv)
    try:
        done = subprocess.run([docker, *argv], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip() or f"exit status {exc.returncode}"
        raise CliError(EXIT_USAGE, f"`docker {' '.join(argv)}` failed: {detail}") from exc
    return done.stdout


def docker_image_id(name: str) -> str:
    image_id = _docker(["image", "inspect", "--format", "{{.Id}}", "--", name]).strip()
    if not IMAGE_ID_RE.match(image_id):
        raise CliError(
            EXIT_USAGE,
            f"docker reported {image_id!r} as the id of {name}, which is not a sha256 image id",
        )
    return image_id


def docker_save(name: str, dest: Path, ui: Ui) -> ImageArchive:
    ui.info(f"exporting {name} with docker save ...")
    _docker(["save", "-o", str(dest), "--", name])
    return read_image_archive(dest)
