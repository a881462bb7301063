"""A job's input (``pink submit --input PATH``): a file or folder turned into a deterministic
tar archive that the job sees at ``/in``, streamed from the files themselves (no copy on disk):
one pass hashes it (the id is its sha256), and only when no worker holds it yet a second pass
is the body of ``POST /api/v1/inputs``.

The same files give the same archive, hence the same id, wherever and by whom they were
copied: members in a fixed order (each folder's entries sorted by their names' bytes, a folder
before its contents), uid/gid 0 without user or group names, mtimes in whole seconds,
permission bits only (no setuid, setgid or sticky bits); symlinks stay symlinks and hardlinks
hardlinks. PAX format, as Python's tarfile writes it (a plain ustar header unless a name or
size needs PAX records).
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import stat
import tarfile
import time
from pathlib import Path
from typing import Any, Iterator

from .errors import EXIT_REFUSED, EXIT_USAGE, CliError, is_transient
from .http import CONNECT_TIMEOUT_S, Api
from .jobs import CHUNK, UPLOAD_ATTEMPTS, UPLOAD_READ_TIMEOUT_S, StreamBody, backoff, holders
from .output import Ui, human_bytes

log = logging.getLogger(__name__)

BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE


def _padding(size: int) -> int:
    return -size % BLOCK


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class InputArchive:
    """The tar archive of ``path``: its members are listed once (``size`` is known before any
    byte is read); :meth:`blocks` reads the files again each time it is called."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: (header fields, the file the data comes from: regular files only)
        self.members: list[tuple[tarfile.TarInfo, str | None]] = []
        self._links: dict[tuple[int, int], str] = {}
        try:
            st = os.stat(path)  # a symlink given as PATH is followed
        except OSError as exc:
            raise CliError(EXIT_USAGE, f"--input {path}: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            self._add_folder(str(path))
        elif stat.S_ISREG(st.st_mode):
            self._add(Path(os.path.abspath(path)).name, str(path), st)
        else:
            raise CliError(EXIT_USAGE, f"--input {path} is neither a file nor a folder")
        size = 2 * BLOCK + sum(len(_header(info)) + info.size + _padding(info.size)
                               for info, _ in self.members)
        self.size = size + -size % RECORD  # tarfile ends an archive on a whole record

    def _add_folder(self, root: str) -> None:
        """Depth first, each folder's entries sorted by name, without a member for ``root``."""
        stack = [(os.path.join(root, n), n) for n in reversed(self._listdir(root))]
        while stack:
            full, name = stack.pop()
            try:
                st = os.lstat(full)
            except OSError as exc:
                raise CliError(EXIT_USAGE, f"--input: cannot read {full}: {exc.strerror}") from None
            self._add(name, full, st)
            if stat.S_ISDIR(st.st_mode):
                stack.extend((os.path.join(full, n), f"{name}/{n}") for n in reversed(self._listdir(full)))

    @staticmethod
    def _listdir(folder: str) -> list[str]:
        try:
            return sorted(os.listdir(folder), key=os.fsencode)
        except OSError as exc:
            raise CliError(EXIT_USAGE, f"--input: cannot list {folder}: {exc.strerror}") from None

    def _add(self, name: str, full: str, st: os.stat_result) -> None:
        info = tarfile.TarInfo(name)
        info.mtime = int(st.st_mtime)
        info.mode = stat.S_IMODE(st.st_mode) & 0o777
        source = None
        if stat.S_ISREG(st.st_mode):
            first = self._links.setdefault((st.st_dev, st.st_ino), name) if st.st_nlink > 1 else name
            if first != name:
                info.type, info.linkname = tarfile.LNKTYPE, first
            else:
                info.size, source = st.st_size, full
        elif stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(full)
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), info.linkname))
            if info.linkname.startswith("/") or target == ".." or target.startswith("../"):
                raise CliError(
                    EXIT_USAGE,
                    f"--input: {full} is a symlink to {info.linkname}, outside {self.path}: a job "
                    "sees only the input itself (copy what it points to into the folder instead)",
                )
        else:
            raise CliError(
                EXIT_USAGE,
                f"--input: {full} is not a file, folder or symlink (a device, socket or FIFO)",
            )
        self.members.append((info, source))

    def blocks(self) -> Iterator[bytes]:
        """The archive's bytes in blocks of about 1 MiB (the headers of small files gathered)."""
        buf = bytearray()
        for piece in self._pieces():
            if not buf and len(piece) >= CHUNK:
                yield piece  # file data goes on without a copy
                continue
            buf += piece
            if len(buf) >= CHUNK:
                yield bytes(buf)
                buf.clear()
        if buf:
            yield bytes(buf)

    def _pieces(self) -> Iterator[bytes]:
        offset = 0
        for info, source in self.members:
            header = _header(info)
            yield header
            offset += len(header) + info.size + _padding(info.size)
            if source is None:
                continue
            try:
                f = open(source, "rb")
            except OSError as exc:
                raise CliError(EXIT_USAGE, f"--input: cannot read {source}: {exc.strerror}") from None
            with f:
                left = info.size  # a file that grew is cut; one that shrank, StreamBody refuses
                while left > 0 and (block := f.read(min(CHUNK, left))):
                    left -= len(block)
                    yield block
            yield bytes(_padding(info.size))
        yield bytes(self.size - offset)  # two zero blocks, then up to a whole record

    def digest(self, ui: Ui) -> str:
        """The first pass: the archive's id, ``sha256:<hex>``."""
        hasher = hashlib.sha256()
        progress = ui.progress("hashing input", self.size)
        for block in StreamBody(self.size, self.blocks, progress, f"--input {self.path}"):
            hasher.update(block)
        progress.finish()
        return "sha256:" + hasher.hexdigest()


def _upload(api: Api, archive: InputArchive, input_id: str, placement: dict[str, Any], ui: Ui) -> dict[str, Any]:
    """The second pass, as the body of ``POST /inputs``; a broken connection is retried (the
    input is named by its content: sending it twice stores it once)."""
    for attempt in range(1, UPLOAD_ATTEMPTS + 1):
        progress = ui.progress("uploading input", archive.size)
        try:
            data = api.json(
                "POST", "/inputs", params={**placement, "sha256": input_id},
                data=StreamBody(archive.size, archive.blocks, progress, f"--input {archive.path}"),
                headers={"Content-Type": "application/x-tar"},
                timeout=(CONNECT_TIMEOUT_S, UPLOAD_READ_TIMEOUT_S), ok=(200, 201),
            )
        except CliError as exc:
            progress.abort()
            if not is_transient(exc) or attempt == UPLOAD_ATTEMPTS:
                raise
            delay = backoff(attempt)
            ui.info(f"input upload interrupted ({exc}); retrying in {delay:.3g} s"
                    f" (retry {attempt} of {UPLOAD_ATTEMPTS - 1})")
            time.sleep(delay)
            continue
        progress.finish()
        if data.get("input") != input_id:
            raise CliError(EXIT_REFUSED, f"the server stored the input as {data.get('input')!r}, "
                                         f"not as {input_id}: is it a PINK server of the same version?")
        return data
    raise AssertionError("unreachable")  # pragma: no cover


def send_input(api: Api, archive: InputArchive, placement: dict[str, Any], ui: Ui) -> str:
    """Make sure a worker where the job can run holds the input; returns its id. ``placement``:
    the job's ``gpus``, ``data``, ``cpus``, ``memory`` and ``image``, so the input lands where
    the job fits (next to its image when it can)."""
    input_id = archive.digest(ui)
    log.info("input id %s, %d bytes", input_id, archive.size)
    held = holders(api, f"/inputs/{input_id}", params=placement)
    if held:
        ui.info(f"input already on worker {', '.join(held)}: 0 bytes sent")
        return input_id
    data = _upload(api, archive, input_id, placement, ui)
    ui.info(f"input {input_id} ({human_bytes(archive.size)}) stored on worker {data.get('worker', '?')}")
    return input_id
