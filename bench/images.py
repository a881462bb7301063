"""Docker-save archives for the benchmarks, written directly (no registry, no ``docker build``).

An image is a list of layers over a static busybox root filesystem (the layer ``"busybox"``,
:func:`pink_dev.sampleimage.rootfs_tar`). A "blob" layer holds one file of pseudo-random bytes
(AES-CTR keystream: incompressible, and cheap to make on a small machine); the same seed gives
the same bytes, so two images can share a layer exactly. The archive has Docker 20.10's
``docker save`` layout (``<id>/layer.tar``, ``<id>/VERSION``, ``<id>/json``,
``<config-sha256>.json``, ``manifest.json`` and ``repositories`` last) and is streamed to disk:
memory stays flat whatever the layer sizes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tarfile
from pathlib import Path
from typing import Iterator

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pink_dev.sampleimage import BUSYBOX, rootfs_tar

BLOCK = 512
CHUNK = 8 << 20
_ZEROS = bytes(CHUNK)


def random_stream(seed: str, size: int) -> Iterator[bytes]:
    """``size`` incompressible bytes, the same for the same seed."""
    key = hashlib.sha256(seed.encode()).digest()[:16]
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    left = size
    while left > 0:
        n = min(CHUNK, left)
        yield enc.update(_ZEROS[:n])
        left -= n


@dataclasses.dataclass(frozen=True)
class Blob:
    """A layer holding one file ``path`` of ``size`` random bytes made from ``seed``."""

    seed: str
    size: int
    path: str = "data/blob"


def _member(name: str, size: int, kind: bytes = tarfile.REGTYPE, mode: int = 0o644) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode, info.mtime = size, kind, mode, 1_700_000_000
    info.uname = info.gname = "root"
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _pad(n: int) -> bytes:
    return bytes(-n % BLOCK)


def _layer_chunks(layer) -> tuple[int, Iterator[bytes]]:
    """(size, chunks) of the layer's uncompressed tar."""
    if layer == "busybox":
        data = rootfs_tar(BUSYBOX)
        return len(data), iter([data])
    assert isinstance(layer, Blob)
    head = _member(str(Path(layer.path).parent) + "/", 0, tarfile.DIRTYPE, 0o755)
    head += _member(layer.path, layer.size)
    tail = _pad(layer.size) + bytes(2 * BLOCK)

    def chunks() -> Iterator[bytes]:
        yield head
        yield from random_stream(layer.seed, layer.size)
        yield tail

    return len(head) + layer.size + len(tail), chunks()


@dataclasses.dataclass(frozen=True)
class BuiltImage:
    path: Path
    image_id: str
    diff_ids: tuple[str, ...]
    layer_sizes: tuple[int, ...]
    size: int
    tag: str


def write_image(path: Path, layers: list, cmd: list[str], tag: str) -> BuiltImage:
    """Write a docker-save archive of ``layers`` (\"busybox\" or Blob) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    diff_ids: list[str] = []
    sizes: list[int] = []
    layer_dirs: list[str] = []
    chain = ""
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as out:
        for layer in layers:
            size, chunks = _layer_chunks(layer)
            # The layer's directory name: any hex id works for `docker load`; derive it from
            # the layer chain so that equal layers get equal names in every archive.
            chain_key = f"{chain}|{layer!r}"
            dir_id = hashlib.sha256(chain_key.encode()).hexdigest()
            chain = dir_id
            out.write(_member(dir_id + "/", 0, tarfile.DIRTYPE, 0o755))
            out.write(_member(f"{dir_id}/VERSION", 3) + b"1.0" + _pad(3))
            meta = json.dumps({"id": dir_id, "created": "2023-11-14T22:13:20Z",
                               "os": "linux"}).encode()
            out.write(_member(f"{dir_id}/json", len(meta)) + meta + _pad(len(meta)))
            out.write(_member(f"{dir_id}/layer.tar", size))
            sha = hashlib.sha256()
            written = 0
            for chunk in chunks:
                sha.update(chunk)
                out.write(chunk)
                written += len(chunk)
            assert written == size, (written, size)
            out.write(_pad(size))
            diff_ids.append("sha256:" + sha.hexdigest())
            sizes.append(size)
            layer_dirs.append(dir_id)
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
            "config": {"Env": ["PATH=/bin"], "Cmd": cmd, "Labels": {"pink.bench": tag}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "pink bench"}
                        for _ in diff_ids],
        }, separators=(",", ":")).encode()
        config_hex = hashlib.sha256(config).hexdigest()
        out.write(_member(f"{config_hex}.json", len(config)) + config + _pad(len(config)))
        repo, _, version = tag.partition(":")
        manifest = json.dumps([{"Config": f"{config_hex}.json", "RepoTags": [tag],
                                "Layers": [f"{d}/layer.tar" for d in layer_dirs]}]).encode()
        out.write(_member("manifest.json", len(manifest)) + manifest + _pad(len(manifest)))
        repos = json.dumps({repo: {version or "latest": layer_dirs[-1]}}).encode()
        out.write(_member("repositories", len(repos)) + repos + _pad(len(repos)))
        out.write(bytes(2 * BLOCK))
    tmp.rename(path)
    return BuiltImage(path, "sha256:" + config_hex, tuple(diff_ids), tuple(sizes),
                      path.stat().st_size, tag)


def cached_image(folder: Path, name: str, layers: list, cmd: list[str], tag: str) -> BuiltImage:
    """write_image once per (layers, cmd, tag); later calls reuse the file and its metadata."""
    key = hashlib.sha256(repr((layers, cmd, tag)).encode()).hexdigest()[:16]
    path = folder / f"{name}-{key}.tar"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        data = json.loads(meta.read_text())
        return BuiltImage(path, data["image_id"], tuple(data["diff_ids"]),
                          tuple(data["layer_sizes"]), data["size"], tag)
    built = write_image(path, layers, cmd, tag)
    meta.write_text(json.dumps({"image_id": built.image_id, "diff_ids": built.diff_ids,
                                "layer_sizes": built.layer_sizes, "size": built.size}))
    return built

