"""``docker save`` tarballs: read an archive's image id and layers without reading the layers,
work out the byte ranges of a thin archive, and run ``docker`` for ``submit --image``."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import posixpath
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from .errors import EXIT_USAGE, CliError
from .output import Ui, human_bytes

log = logging.getLogger(__name__)

#: A docker image config is a few kB; refuse to load a "config" that is not one.
MAX_CONFIG_BYTES = 64 << 20
IMAGE_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
DIFF_ID_RE = IMAGE_ID_RE
COMPRESSED_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\xfd7zXZ\x00": "xz",
    b"BZh": "bzip2",
}


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
    for prefix, kind in COMPRESSED_MAGIC.items():
        if magic.startswith(prefix):
            raise CliError(
                EXIT_USAGE,
                f"{path} is {kind}-compressed; PINK takes the plain tar that `docker save` writes: "
                "decompress it first, or pass --image NAME to export a local image",
            )
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
            try:
                manifest = json.loads(
                    _read_member(tf, manifest_member, MAX_CONFIG_BYTES, "manifest")
                )
            except ValueError as exc:
                raise CliError(
                    EXIT_USAGE, f"{path}: manifest.json is not valid JSON ({exc})"
                ) from exc
            if not isinstance(manifest, list) or not manifest or not isinstance(manifest[0], dict):
                raise CliError(EXIT_USAGE, f"{path}: manifest.json lists no image")
            if len(manifest) != 1:
                raise CliError(
                    EXIT_USAGE,
                    f"{path} holds {len(manifest)} images; PINK runs one: "
                    "`docker save` a single image per file",
                )
            entry = manifest[0]
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
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                found = json.loads(config)["rootfs"]["diff_ids"]
                layers = entry.get("Layers")
                if (isinstance(found, list) and isinstance(layers, list) and len(layers) == len(found)
                        and all(isinstance(d, str) and DIFF_ID_RE.match(d) for d in found)):
                    diff_ids = tuple(found)
                    spans = _layer_spans(tf, layers)
    except tarfile.TarError as exc:
        raise CliError(
            EXIT_USAGE, f"{path} is not a tar archive ({exc}); give the output of `docker save`"
        ) from exc
    tags = tuple(str(t) for t in (entry.get("RepoTags") or []) if isinstance(t, str))
    return ImageArchive(
        path=path, size=size, image_id="sha256:" + hashlib.sha256(config).hexdigest(), tags=tags,
        diff_ids=diff_ids, layer_spans=spans,
    )


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
