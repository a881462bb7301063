"""A user's ``docker save`` archive, as the worker hands it to ``docker load``: without tags.

``docker load`` applies the tags an archive names (``RepoTags`` in manifest.json, the legacy
``repositories`` file, the image-name annotations of an OCI index), so an upload could make
``some/tag:latest`` on a worker's engine point at its own code. The worker, not the archive,
decides tags: it runs images by id and tags none. This re-frames the archive as it streams
(tar headers re-written, member data passed through in chunks, the small JSON members
rewritten), so memory stays flat whatever the image's size. A compressed archive (gzip, zstd,
xz, bzip2: the web server checked the plain tar inside it) is decompressed on the way, so the
engine gets the plain tar whatever its version reads.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Iterable, Iterator

from pink.compression import decompressed

CHUNK = 1 << 20
BLOCK = 512
#: OCI index annotations that ``docker load`` turns into tags.
NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


def without_tags(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The archive in ``chunks`` (plain or compressed), as a plain tar with every tag it names
    removed."""
    source = io.BufferedReader(_ChunkReader(decompressed(chunks)), CHUNK)
    with tarfile.open(fileobj=source, mode="r|") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if name == "repositories":
                continue
            data = tar.extractfile(member) if member.isfile() else None
            if data is not None and name in ("manifest.json", "index.json"):
                raw = _untagged(name, data.read(member.size))
                member.size = len(raw)
                data = io.BytesIO(raw)
            yield member.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            if data is not None:
                while piece := data.read(CHUNK):
                    yield piece
                if member.size % BLOCK:
                    yield bytes(BLOCK - member.size % BLOCK)
        # Read on to the end (tar padding), where a compressed stream's end is checked.
        while source.read(CHUNK):
            pass
    yield bytes(2 * BLOCK)  # end of archive


def _untagged(name: str, raw: bytes) -> bytes:
    doc = json.loads(raw)
    if name == "manifest.json":
        for entry in doc:
            entry["RepoTags"] = None
    else:
        for entry in doc.get("manifests", []):
            annotations = entry.get("annotations") or {}
            for key in NAME_ANNOTATIONS:
                annotations.pop(key, None)
    return json.dumps(doc).encode()


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterable of byte strings."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - io's interface
        while not self._pending:
            self._pending = memoryview(next(self._chunks, b""))
            if not self._pending:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n
