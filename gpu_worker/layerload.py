"""Registering an image's layers in the engine while its archive is still being uploaded.

``docker load`` (20.10) unpacks a whole archive before it reads manifest.json, so fed the growing
inbox file it registers the first layer only after the last byte. Instead, the worker reads the
archive's tar headers itself (:class:`LayerChain`, fed by :mod:`gpu_worker.preload`) and, once
manifest.json and the config are in and the layers under layer ``i`` are registered, streams
layer ``i`` into ``docker load`` as it arrives, in a thin archive it writes itself
(:func:`thin_archive`): a *partial* config listing the diff_ids of layers ``0..i`` (nothing else
of the user's config: no command, no environment) labelled ``pink.partial``, the bytes of layer
``i`` and a manifest naming layers ``0..i``. The engine unpacks the layer while it comes, holds
the chain below from the step before and skips it, as for a thin upload, and checks layer ``i``
against its diff_id. The partial image of a step holds the chain up to ``i``; the one of the
step before is removed then.

The real image (the archive's own config bytes, so its own id) is loaded only once the upload
is complete and the web server has validated it (the job is QUEUED): its archive holds the
config and the layers not registered yet, usually none. The CLI sends manifest.json and the
config first and the layers bottom first (``pink_client.archive.ImageArchive.upload_ranges``);
an archive in ``docker save``'s own order (layer folders sorted by name, the config among them,
manifest.json last) registers less before its end, at worst everything after it.

A failed, truncated or cancelled upload leaves nothing a job could run: partial images are
removed (the engine drops their layers with them), and a partial image is never the job's
image, whose id is the digest of a config the worker never writes. Partial images are kept out
of the images and layers a worker publishes (:func:`is_partial`), out of the image GC's record,
and the daemon removes any left over by a crash at start (:func:`remove_partials`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import secrets
import tarfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import docker
import requests

from pink.layers import chain_ids

log = logging.getLogger(__name__)

PARTIAL_LABEL = "pink.partial"
CHUNK = 1 << 20
#: manifest.json and configs are a few kB; one bigger than this is not read (no pipelining).
MAX_META_BYTES = 16 << 20
MAX_LINK_HOPS = 8
#: Keys of the user's config a partial config keeps: the engine checks the platform.
PLATFORM_KEYS = ("architecture", "os", "os.version", "variant")


def is_partial(inspected: Mapping) -> bool:
    """Whether an image (``docker inspect`` output) is a partial image of an upload."""
    return PARTIAL_LABEL in ((inspected.get("Config") or {}).get("Labels") or {})


def remove_partials(engine: docker.DockerClient) -> int:
    """Remove every partial image (a worker that stopped mid-upload left them). Returns how many."""
    removed = 0
    try:
        for image in engine.images.list(all=True, filters={"label": PARTIAL_LABEL}):
            with contextlib.suppress(docker.errors.NotFound):
                engine.images.remove(image.id, force=True)
                removed += 1
    except (docker.errors.DockerException, requests.RequestException) as exc:
        log.warning("could not remove partial images: %s (tried again at the next start)", exc)
    if removed:
        log.info("removed %d partial image(s) left by an interrupted upload", removed)
    return removed


def partial_config(config: Mapping, diff_ids: list[str], token: str) -> bytes:
    """The config of a partial image holding ``diff_ids`` (the bottom layers of ``config``)."""
    doc = {k: config[k] for k in PLATFORM_KEYS if k in config}
    doc["config"] = {"Labels": {PARTIAL_LABEL: token}}
    doc["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    return json.dumps(doc, separators=(",", ":")).encode()


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info.tobuf(tarfile.USTAR_FORMAT)


def _member(name: str, data: bytes) -> bytes:
    return _header(name, len(data)) + data + bytes(-len(data) % tarfile.BLOCKSIZE)


def thin_archive(config: bytes, layer_count: int, layers: Mapping[int, tuple[Path, int, int]],
                 wait: Callable[[int], None] = lambda end: None) -> Iterator[bytes]:
    """A ``docker load`` archive of the image ``config`` describes (``layer_count`` layers) that
    holds only ``layers``: index -> (file, offset, size) of that layer's tar; the engine must hold
    the chains of the others. No tags; names the worker chooses (none from the upload).
    ``wait(end)`` returns once the file holds ``end`` bytes (it may still be growing)."""
    manifest = [{"Config": "config.json", "RepoTags": None,
                 "Layers": [f"{i}/layer.tar" for i in range(layer_count)]}]
    yield _member("config.json", config)
    for i, (path, offset, size) in sorted(layers.items()):
        yield _header(f"{i}/layer.tar", size)
        with path.open("rb") as f:
            f.seek(offset)
            left = size
            while left > 0:
                wait(offset + size - left + min(CHUNK, left))
                data = f.read(min(CHUNK, left))
                if not data:
                    raise OSError(f"{path} ends inside layer {i}")
                left -= len(data)
                yield data
        yield bytes(-size % tarfile.BLOCKSIZE)
    yield _member("manifest.json", json.dumps(manifest).encode())
    yield bytes(2 * tarfile.BLOCKSIZE)


class LayerChain:
    """Bookkeeping of one upload's layers: which members are complete, which layers are
    registered, which partial image holds them. Feed it every member once its data is complete
    (:meth:`add`); it loads what it can (:meth:`advance`) and finally the real image
    (:meth:`finish`). :meth:`discard` removes the partial image whatever happened."""

    def __init__(self, engine: docker.DockerClient, path: Path, job_id: str,
                 held_chains: frozenset[str] = frozenset(),
                 wait: Callable[[int], None] = lambda end: None) -> None:
        self.engine = engine
        self.path = path
        #: Returns once the file holds a given number of bytes (it grows during the upload).
        self.wait = wait
        self.job_id = job_id
        self.held_chains = held_chains
        self.token = f"{job_id} {secrets.token_hex(8)}"
        self.members: dict[str, tarfile.TarInfo] = {}
        self.config = b""
        self.diff_ids: list[str] = []
        self.layer_paths: list[str] = []
        #: Bottom layers the engine holds as one chain (loaded here, or held before).
        self.registered = 0
        #: The partial image holding them, if this chain loaded one.
        self.partial = ""
        #: Layers this chain loaded before the upload ended, for the logs and tests.
        self.early: list[int] = []

    # ------------------------------------------------------------------ reading the archive
    def add(self, member: tarfile.TarInfo) -> None:
        self.members[posixpath.normpath(member.name)] = member

    def _read(self, member: tarfile.TarInfo) -> bytes:
        self.wait(member.offset_data + member.size)
        with self.path.open("rb") as f:
            f.seek(member.offset_data)
            return f.read(member.size)

    def _file(self, name: str) -> tarfile.TarInfo | None:
        """The regular member ``name`` leads to (links followed), or None."""
        member = self.members.get(posixpath.normpath(name))
        for _ in range(MAX_LINK_HOPS):
            if member is None or not (member.issym() or member.islnk()):
                break
            target = member.linkname
            if member.issym():
                target = posixpath.join(posixpath.dirname(member.name), target)
            member = self.members.get(posixpath.normpath(target))
        return member if member is not None and member.isfile() else None

    def known(self) -> bool:
        """Whether manifest.json and the config are in (read them when they just came)."""
        if self.config:
            return True
        manifest = self._file("manifest.json")
        if manifest is None or manifest.size > MAX_META_BYTES:
            return False
        try:
            entries = json.loads(self._read(manifest))
            entry = entries[0]
            config_member = self._file(entry["Config"])
            if len(entries) != 1 or config_member is None or config_member.size > MAX_META_BYTES:
                return False
            config = self._read(config_member)
            diff_ids = json.loads(config)["rootfs"]["diff_ids"]
            paths = entry["Layers"]
        except (ValueError, LookupError, TypeError, AttributeError):
            return False  # not what `docker save` writes: the web server says why
        if not (isinstance(diff_ids, list) and isinstance(paths, list) and len(diff_ids) == len(paths)
                and all(isinstance(p, str) for p in paths)):
            return False
        self.config, self.diff_ids, self.layer_paths = config, diff_ids, paths
        return True

    # --------------------------------------------------------------------------- loading
    def _span(self, i: int) -> tuple[Path, int, int] | None:
        member = self._file(self.layer_paths[i])
        return None if member is None else (self.path, member.offset_data, member.size)

    def advance(self) -> None:
        """Register every layer that has begun to arrive whose layers below are registered,
        each as its bytes come (a layer's load ends when its last byte came and the engine
        registered it)."""
        if not self.known():
            return
        chains = chain_ids(self.diff_ids)
        while self.registered < len(self.diff_ids):
            i = self.registered
            span = self._span(i)
            if span is None:
                if chains[i] not in self.held_chains:
                    return  # not here yet
                self.registered += 1  # a thin upload left it out: the engine holds it
                continue
            config = partial_config(json.loads(self.config), self.diff_ids[:i + 1], self.token)
            # Streamed while it arrives: the engine unpacks it as the upload writes it.
            loaded = self._load(thin_archive(config, i + 1, {i: span}, self.wait))
            self._drop_partial()
            self.partial = next(iter(loaded))
            self.registered += 1
            self.early.append(i)
            log.info("job %s: layer %d of %d registered", self.job_id, i + 1, len(self.diff_ids))

    def finish(self) -> set[str]:
        """Load the real image (upload complete and validated): its config and the layers not
        registered yet. Returns the image ids loaded."""
        if not self.known():
            raise ValueError("the archive has no usable manifest.json and config")
        rest = {}
        for i in range(self.registered, len(self.diff_ids)):
            span = self._span(i)
            if span is not None:
                rest[i] = span
        loaded = self._load(thin_archive(self.config, len(self.diff_ids), rest))
        self._drop_partial()
        return loaded

    def _load(self, archive: Iterator[bytes]) -> set[str]:
        return {image.id for image in self.engine.images.load(archive)}

    def _drop_partial(self) -> None:
        if self.partial:
            with contextlib.suppress(docker.errors.NotFound):
                self.engine.images.remove(self.partial, force=True)
            self.partial = ""

    def discard(self) -> None:
        """Remove the partial image (its layers go with it unless another image holds them)."""
        try:
            self._drop_partial()
        except docker.errors.DockerException as exc:
            log.warning("job %s: could not remove partial image %s: %s (removed at the next start)",
                        self.job_id, self.partial, exc)
