"""What a finished job leaves behind, by its output mode (docs/jobs.md, "Output modes").

* ``full``: the container's filesystem (:func:`gpu_worker.export.export_container`).
* ``changes``: what the job added or changed, from ``docker diff``, plus ``.pink-deleted`` at
  the archive's root listing what it deleted. On overlay2 the engine computes the diff from the
  container's own writable layer, and each changed path is read with the archive API, so the
  cost follows what the job wrote, not the image's size.
* ``path:/DIR``: DIR is an empty volume of the container's own (``nocopy``: the image's files
  there are hidden), writable by the job's root whether the engine remaps users or not; the
  archive holds DIR alone.
* ``none``: no archive.

Both new modes read through the engine's API, not the engine's storage directory: the worker
daemon runs as an unprivileged user of the docker group (roles/pink_worker), which cannot read
/var/lib/docker. The archive API gives the host's owners of a container whose users the engine
remaps (docker export gives the container's): they are mapped back, so uid 0 is the job's root
in every mode.
"""

from __future__ import annotations

import io
import posixpath
import re
import tarfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

import docker
import docker.types

from pink.model import MAX_OUTPUT_ENTRIES, output_dir

from .export import CHUNK, export_container, export_stream

#: The file at the root of a ``changes`` archive that lists the paths the job deleted.
DELETED_LIST = ".pink-deleted"
#: ``docker diff`` kinds.
MODIFIED, ADDED, DELETED = 0, 1, 2
#: Each read of the archive API mounts the container's filesystem (~20-80 ms here): past this
#: many reads in one directory of the image, that directory is read once, keeping the changes.
GROUP_AT = 32
#: An engine that remaps users keeps its storage under ``<data-root>/<uid>.<gid>/`` (docker's
#: userns-remap layout), its containers' root being that uid and gid on the host.
_REMAPPED_ROOT = re.compile(r"/(\d+)\.(\d+)/")


def remapped_root(attrs: dict) -> tuple[int, int]:
    """The host's (uid, gid) of the container's root, from its ``docker inspect``: (0, 0) when
    its engine does not remap users, or the container opted out (UsernsMode host, GPU jobs)."""
    if (attrs.get("HostConfig") or {}).get("UsernsMode") == "host":
        return 0, 0
    data = (attrs.get("GraphDriver") or {}).get("Data") or {}
    found = _REMAPPED_ROOT.search(data.get("UpperDir") or data.get("MergedDir") or "")
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _inspected(container) -> dict:
    """``container``'s ``docker inspect``; a container object made without one
    (gpu_worker.container creates without inspecting) is inspected now."""
    if "GraphDriver" not in container.attrs:
        container.reload()
    return container.attrs


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (docker-py's archive streams)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks: Iterator[bytes] = iter(chunks)
        self.left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.left:
            self.left = next(self.chunks, b"")
            if not self.left:
                return 0
        n = min(len(buffer), len(self.left))
        buffer[:n] = self.left[:n]
        self.left = self.left[n:]
        return n


def plan_changes(diff: Iterable[dict] | None) -> tuple[list[tuple[str, bool]], list[str]]:
    """From ``docker diff`` (``[{"Path", "Kind"}]``): the paths to read, each with whether only
    the entry itself is wanted (a changed directory whose changes are listed on their own), and
    the deleted paths, sorted.

    An added path inside an added directory comes with its directory; a changed directory with
    changes listed below it needs nothing of its own (its listed children are read); a changed
    path without any is a file, or a directory whose own metadata changed (its entry only).
    A deleted path that the job made again (an overlay "opaque" directory) is both deleted and
    read: the archive holds all it contains now."""
    kinds = {c["Path"]: c["Kind"] for c in diff or ()}
    parents = {posixpath.dirname(p) for p in kinds}
    parents |= {a for p in parents for a in _ancestors(p)}
    reads = []
    for path, kind in sorted(kinds.items()):
        if kind == DELETED or any(kinds.get(a) == ADDED for a in _ancestors(path)):
            continue
        if kind == MODIFIED and path in parents:
            continue
        reads.append((path, kind == MODIFIED))
    return reads, sorted(p for p, k in kinds.items() if k == DELETED)


def group_reads(reads: list[tuple[str, bool]]) -> list[tuple[str, dict[str, bool]]]:
    """The archive API reads to make for ``reads`` (:func:`plan_changes`): (path to read,
    {wanted path: entry only}). Reads directly in one directory of the image, more than
    GROUP_AT of them (a job that wrote many files into /tmp), become one read of that directory
    that keeps what is wanted: its cost follows the directory's size, so not for ``/``."""
    by_parent: dict[str, dict[str, bool]] = {}
    for path, entry_only in reads:
        by_parent.setdefault(posixpath.dirname(path), {})[path] = entry_only
    grouped = []
    for parent, wanted in by_parent.items():
        if len(wanted) > GROUP_AT and parent != "/":
            grouped.append((parent, wanted))
        else:
            grouped += [(path, {path: entry_only}) for path, entry_only in wanted.items()]
    return sorted(grouped)


def _wanted(path: str, wanted: dict[str, bool]) -> bool:
    """Whether ``path`` is wanted: named, or inside a wanted path that is not "entry only"."""
    if path in wanted:
        return True
    return any(wanted.get(a) is False for a in _ancestors(path))


def _ancestors(path: str) -> Iterator[str]:
    while path not in ("/", ""):
        path = posixpath.dirname(path)
        yield path


class Entries:
    """The archive's top entries (by the first ``depth`` components of each name), with sizes."""

    def __init__(self, depth: int = 1) -> None:
        self.depth = depth
        self.found: dict[str, dict] = {}

    def add(self, member: tarfile.TarInfo) -> None:
        parts = member.name.strip("/").split("/")
        if len(parts) < self.depth:
            return  # the output directory itself
        name = "/" + "/".join(parts[:self.depth])
        kind = "file" if len(parts) == self.depth and member.isfile() else \
            "link" if len(parts) == self.depth and (member.issym() or member.islnk()) else "dir"
        entry = self.found.setdefault(name, {"name": name, "bytes": 0, "type": kind})
        entry["bytes"] += member.size if member.isfile() else 0

    def deleted(self, path: str) -> None:
        self.found.setdefault(path, {"name": path, "bytes": 0, "type": "deleted"})

    def top(self) -> tuple[dict, ...]:
        ranked = sorted(self.found.values(), key=lambda e: (e["type"] == "deleted", -e["bytes"], e["name"]))
        return tuple(ranked[:MAX_OUTPUT_ENTRIES])


def copy_path(container, path: str, out: tarfile.TarFile, entries: Entries, wanted: dict[str, bool] | None = None,
              root: tuple[int, int] = (0, 0)) -> None:
    """Add ``path`` of ``container`` to ``out`` under its own name (less the leading /), read
    with the engine's archive API; of it only the ``wanted`` paths (path -> only the entry
    itself, not what a directory holds; default: all of ``path``). Owners from ``root`` (the
    host's ids of the container's root) on are mapped back to the container's."""
    wanted = {path: False} if wanted is None else wanted
    chunks, _ = container.get_archive(path, chunk_size=CHUNK)
    prefix = posixpath.dirname(path).strip("/")
    with tarfile.open(fileobj=io.BufferedReader(ChunkReader(chunks), CHUNK), mode="r|") as tar:
        for member in tar:
            member.name = posixpath.join(prefix, member.name) if prefix else member.name
            if not _wanted("/" + member.name.rstrip("/"), wanted):
                continue
            if member.islnk():  # hard links name their target from the archive's root
                member.linkname = posixpath.join(prefix, member.linkname) if prefix else member.linkname
            if member.uid >= root[0]:
                member.uid -= root[0]
            if member.gid >= root[1]:
                member.gid -= root[1]
            entries.add(member)
            out.addfile(member, tar.extractfile(member) if member.isfile() else None)
            if wanted == {path: True}:
                break  # the entry comes first
    if hasattr(chunks, "close"):
        chunks.close()


def deleted_list(paths: list[str]) -> bytes:
    """``.pink-deleted``: one deleted path a line, absolute, as the job saw it."""
    return "".join(f"{p}\n" for p in paths).encode()


def write_changes(container, sink: BinaryIO, entries: Entries) -> None:
    """The ``changes`` archive of ``container`` as an uncompressed tar into ``sink``."""
    reads, deleted = plan_changes(container.diff())
    root = remapped_root(_inspected(container))
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as out:
        for path, wanted in group_reads(reads):
            copy_path(container, path, out, entries, wanted, root)
        listing = deleted_list(deleted)
        info = tarfile.TarInfo(DELETED_LIST)
        info.size, info.mode, info.mtime = len(listing), 0o644, int(time.time())
        out.addfile(info, io.BytesIO(listing))
    for path in deleted:
        entries.deleted(path)


def write_dir(container, folder: str, sink: BinaryIO, entries: Entries) -> None:
    """The ``path:`` archive: ``folder`` of ``container``, as an uncompressed tar into ``sink``."""
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as out:
        copy_path(container, folder, out, entries, root=remapped_root(_inspected(container)))


def output_mounts(mode: str, image: Callable[[], dict]) -> list[docker.types.Mount]:
    """The mount a job of output ``mode`` gets: for ``path:/DIR`` an anonymous volume at DIR
    (removed with the container), none otherwise.

    The volume is empty and owned by the job's root. An image whose USER (``image()``: its
    ``docker inspect``, asked for path: only) is not root could not write there: for it, docker
    copies the image's DIR into the volume, with its owner, as for any volume; so such an image
    should have DIR, owned by its user (and it starts with what the image has there)."""
    folder = output_dir(mode)
    if not folder:
        return []
    user = ((image().get("Config") or {}).get("User") or "").split(":")[0]
    return [docker.types.Mount(target=folder, source=None, type="volume", no_copy=user in ("", "0", "root"))]


def export_output(mode: str, container, engine: docker.DockerClient, docker_url: str, compressor,
                  archive: Path, max_bytes: int) -> tuple[int, str, tuple[dict, ...]]:
    """Write the archive of a job of output ``mode`` (not ``none``); return (size, sha256,
    top entries). Raises what :func:`~gpu_worker.export.export_container` raises."""
    if mode == "full":
        size, digest = export_container(container, engine, docker_url, compressor, archive, max_bytes)
        return size, digest, ()
    folder = output_dir(mode)
    entries = Entries(depth=len(folder.strip("/").split("/")) + 1 if folder else 1)
    if folder:
        size, digest = export_stream(lambda sink: write_dir(container, folder, sink, entries),
                                     compressor, archive, max_bytes)
    elif mode == "changes":
        size, digest = export_stream(lambda sink: write_changes(container, sink, entries),
                                     compressor, archive, max_bytes)
    else:
        raise ValueError(f"unknown output mode {mode!r}")
    return size, digest, entries.top()
