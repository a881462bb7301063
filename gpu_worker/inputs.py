"""A worker's inputs: the files a job sees read-only at /in (docs/jobs.md).

A web server uploads an input into the inbox, renames it ``input-<sha256 hex>.tar`` once it is
whole and checked, and records in etcd that this worker holds it (:mod:`webapp.transfer`,
:meth:`pink.store.Store.record_input`). Before a job that names it starts,
:meth:`Inputs.folder` extracts the tar into ``<inputs_dir>/<hex>/`` once (the tar is deleted
then), refusing again what the web server refused (absolute names, ``..``, links out of the
archive, devices: defence in depth) and checking that the bytes have the input's hash; the
runner binds the folder read-only at /in. :meth:`Inputs.sweep` deletes the inputs no job has
used for ``worker.input_retention_days``, with their record, and files nobody records.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from pink.config import WorkerConfig
from pink.store import Store

log = logging.getLogger(__name__)

#: Where a job sees its input.
IN_DIR = "/in"
#: Files nobody records (the upload of a web server that died, a tar whose record was never
#: written) are removed once they have not changed for this long.
LEFTOVER_S = 3600.0
_TAR = re.compile(r"^input-(?P<digest>[0-9a-f]{64})\.tar$")
_PART = re.compile(r"^input-[0-9a-f]{20}\.part$")
_FOLDER = re.compile(r"^(?P<digest>[0-9a-f]{64})$")
_TEMP = re.compile(r"^\.(?P<digest>[0-9a-f]{64})\.")


class InputError(Exception):
    """A job's input cannot be given to it (gone from this worker, or a bad archive)."""


class _Hashing:
    """A file read through, for tarfile's stream mode, hashing every byte read."""

    def __init__(self, f) -> None:
        self.f = f
        self.sha256 = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha256.update(data)
        return data


def _member_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """What the web server refused is refused again; then tarfile's "data" filter (nothing
    lands or links outside ``dest``, no devices or fifos, no setuid bits, no owners), and file
    modes that any user a job runs as can read."""
    # Symlinks may go up with '..' while they stay inside, as data_filter checks.
    for name in (member.name, member.linkname if member.islnk() else ""):
        if name.startswith("/") or ".." in name.split("/"):
            raise InputError(f"unsafe member {member.name!r} (an absolute name or a '..' component)")
    if member.issym() and member.linkname.startswith("/"):
        raise InputError(f"unsafe member {member.name!r} (a symlink to an absolute path)")
    member = tarfile.data_filter(member, dest)
    if member.isreg() or member.islnk():
        return member.replace(mode=0o755 if member.mode & 0o100 else 0o644, deep=False)
    return member  # directories: see extract


def extract(tar_path: Path, folder: Path, input_id: str) -> None:
    """Extract the input archive ``tar_path`` into ``folder`` (which must not exist), or raise
    InputError with nothing left behind."""
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        with tar_path.open("rb") as f:
            reader = _Hashing(f)
            with tarfile.open(fileobj=reader, mode="r|", errorlevel=2) as tar:
                tar.extractall(temp, filter=_member_filter)
            while reader.read(1 << 20):  # the end-of-archive padding tarfile did not read
                pass
        if f"sha256:{reader.sha256.hexdigest()}" != input_id:
            raise InputError(f"the archive on this worker is not input {input_id} (its bytes hash to "
                             f"sha256:{reader.sha256.hexdigest()})")
        for directory, _, _ in os.walk(temp):  # those in the archive and those made for its members
            os.chmod(directory, 0o755)
        temp.rename(folder)
    except (tarfile.TarError, OSError, InputError) as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise InputError(f"cannot extract input {input_id}: {exc}") from None


class Inputs:
    """The inputs of one worker: its inbox's ``input-<hex>.tar`` files and the extracted folders
    in ``worker.inputs_dir``. Thread-safe: job runs ask for folders while the daemon sweeps."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.root = Path(cfg.inputs_dir)
        self.inbox = Path(cfg.inbox)
        self._lock = threading.Lock()
        #: hex digest -> the lock its extraction holds (jobs of one input wait for one another).
        self._locks: dict[str, threading.Lock] = {}

    def tar_path(self, digest: str) -> Path:
        return self.inbox / f"input-{digest}.tar"

    def folder(self, input_id: str) -> Path:
        """The extracted folder of ``input_id``, extracting it now if it is not yet. Raises
        InputError."""
        digest = input_id.removeprefix("sha256:")
        with self._lock:
            lock = self._locks.setdefault(digest, threading.Lock())
        with lock:
            folder, tar = self.root / digest, self.tar_path(digest)
            if not folder.is_dir():
                if not tar.is_file():
                    raise InputError(f"input {input_id} is no longer on worker {self.cfg.name}; upload it again")
                started = time.monotonic()
                extract(tar, folder, input_id)
                log.info("input %s: extracted in %.1fs", input_id, time.monotonic() - started)
            tar.unlink(missing_ok=True)  # jobs use the folder
            os.utime(folder)  # used now (see sweep)
            return folder

    def _extracting(self) -> set[str]:
        with self._lock:
            return {d for d, lock in self._locks.items() if lock.locked()}

    def sweep(self, store: Store, now: float | None = None) -> None:
        """Delete the inputs that no job has used for the retention time (none while it is 0)
        and those whose files are gone, with their records; then what no record keeps. The
        inputs of this worker's non-terminal jobs stay."""
        now = time.time() if now is None else now
        records = store.inputs_on(self.cfg.name)
        # The jobs after the records: a job placed in between has changed its input's record
        # of use, so forget_input refuses to drop that input.
        jobs = store.get_jobs(e.job_id for e in store.queue(self.cfg.name))
        in_use = {j.input for j in jobs if j.input and not j.state.terminal}
        busy = {f"sha256:{d}" for d in self._extracting()} | in_use
        kept: set[str] = set()
        for record in records:
            digest = record.input_id.removeprefix("sha256:")
            tar, folder = self.tar_path(digest), self.root / digest
            if record.input_id in busy:
                if folder.is_dir():
                    os.utime(folder)
                kept.add(digest)
                continue
            # The tar first: an extraction renames the folder into place before it deletes the tar.
            touched = [t for t in (_mtime(tar), _mtime(folder)) if t is not None]
            idle_s = now - max(record.uploaded_at, record.used_at, *touched)
            retention_s = self.cfg.input_retention_s
            if touched and (not retention_s or idle_s <= retention_s):
                kept.add(digest)
            elif store.forget_input(record):
                log.info("input %s: deleted (%s)", record.input_id,
                         f"unused for {idle_s / 86400:.1f} days" if touched else "its files are gone")
                _remove(tar)
                _remove(folder)
            else:
                kept.add(digest)  # uploaded again, or a job was placed with it, meanwhile
        self._sweep_leftovers(kept | {i.removeprefix("sha256:") for i in busy}, now)

    def _sweep_leftovers(self, kept: set[str], now: float) -> None:
        """Remove a tar uploaded again of an input extracted already, and, once untouched for
        LEFTOVER_S: partial uploads, extractions cut short, and the tars and folders of inputs
        nobody records."""
        extracting = self._extracting()
        for path in [*self.inbox.glob("input-*"), *self.root.iterdir()]:
            named = _TAR.match(path.name) or _FOLDER.match(path.name) or _TEMP.match(path.name)
            if named is None and not _PART.match(path.name):
                continue
            digest = named.group("digest") if named else ""
            temporary = named is None or path.name.startswith(".")
            if digest in extracting:
                continue
            changed = _mtime(path)
            if changed is None:
                continue
            untouched = now - changed > LEFTOVER_S
            if digest in kept and not temporary:
                if path.parent == self.inbox and (self.root / digest).is_dir():
                    log.info("removing %s: the input is extracted already", path.name)
                    _remove(path)
            elif untouched:
                log.info("removing %s: %s", path, "left over" if temporary else "no input record")
                _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _mtime(path: Path) -> float | None:
    """When ``path`` last changed; None when it does not exist (any more)."""
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return None
