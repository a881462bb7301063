"""A finished job's container filesystem, streamed through the compressor into the outbox.

Two pipelines, one result (size and sha256 of a ``.tar.zst`` written 0640, fsynced, renamed from
``.part`` when whole):

* the docker CLI pipes ``docker export`` straight into the compressor when the engine is a local
  socket: docker-py would pass every byte through this process (2.4 CPU-seconds more per GiB,
  measured);
* otherwise docker-py's export stream is fed to the compressor from a thread.

An archive that passes its cap (worker.max_output_bytes) is deleted and raises
:class:`OutputTooLarge`. An engine that goes away mid-export raises one of
:data:`TRANSIENT_ENGINE_ERRORS`, so the run resumes the export later; any other failure is
:class:`ExportError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

import docker
import requests

#: Failures of the engine itself (socket gone, restarting, timing out), not of the job.
TRANSIENT_ENGINE_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
#: What the docker CLI prints when it lost the engine, rather than the engine refusing the export.
CLI_LOST_ENGINE = ("Cannot connect to the Docker daemon", "error during connect", "unexpected EOF")
CHUNK = 1 << 20
#: The export starts writing the archive back to disk every this many bytes.
FLUSH_EVERY = 64 << 20


class ExportError(RuntimeError):
    """The export failed for a reason other than the engine going away."""


class OutputTooLarge(ExportError):
    """The compressed archive passed its cap; the message is the job's reason."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"the output passed the cap of {cap} bytes (worker.max_output_bytes): "
                         f"write less, or ask the operators")


def docker_cli(docker_url: str) -> str | None:
    """The docker CLI, to export through, when the engine is a local socket it can reach."""
    return shutil.which("docker") if docker_url.startswith("unix://") else None


def open_for_transfer(path: Path) -> BinaryIO:
    """Open an outbox file for writing with mode 0640 whatever the umask: the transfer account
    (the outbox's group) reads it through the SSH gate, nobody else may."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    os.fchmod(fd, 0o640)
    return os.fdopen(fd, "wb")


def export_container(container, engine: docker.DockerClient, docker_url: str, compressor: Sequence[str],
                     archive: Path, max_bytes: int) -> tuple[int, str]:
    """Write ``container``'s filesystem, compressed, to ``archive``; return (size, sha256).
    Past ``max_bytes`` of archive, stop, delete it and raise :class:`OutputTooLarge`."""
    cli = docker_cli(docker_url)
    if not cli:
        return export_stream(lambda sink: _feed(container, sink), compressor, archive, max_bytes)
    part = archive.with_name(archive.name + ".part")
    exporter = subprocess.Popen([cli, "-H", docker_url, "export", container.id],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc = subprocess.Popen(list(compressor), stdin=exporter.stdout, stdout=subprocess.PIPE)
    exporter.stdout.close()  # the compressor reads it now
    try:
        with proc.stdout:
            size, digest = _write(proc.stdout, part, max_bytes)
    except BaseException:
        for process in (exporter, proc):
            process.kill()
            process.wait()
        exporter.stderr.close()
        part.unlink(missing_ok=True)
        raise
    errors = _cli_errors(exporter, engine)
    _finish(proc, errors, part, archive)
    return size, digest


def export_stream(feed: Callable[[BinaryIO], object], compressor: Sequence[str], archive: Path,
                  max_bytes: int) -> tuple[int, str]:
    """Write what ``feed(sink)`` writes to ``sink`` (from a thread), compressed, to ``archive``;
    return (size, sha256). Past ``max_bytes`` of archive, stop, delete it and raise
    :class:`OutputTooLarge`; a failure of ``feed`` is raised as :func:`export_container` does."""
    part = archive.with_name(archive.name + ".part")
    proc = subprocess.Popen(list(compressor), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            feed(proc.stdin)
        except BaseException as exc:  # reported by the caller; the reader must not hang
            errors.append(exc)
        finally:
            with contextlib.suppress(BrokenPipeError):  # the compressor was stopped
                proc.stdin.close()

    feeder = threading.Thread(target=run, daemon=True)
    feeder.start()
    try:
        with proc.stdout:
            size, digest = _write(proc.stdout, part, max_bytes)
    except BaseException:
        proc.kill()  # the feeder stops when the compressor is gone
        proc.wait()
        part.unlink(missing_ok=True)
        raise
    feeder.join()
    _finish(proc, errors, part, archive)
    return size, digest


def _finish(proc: subprocess.Popen, errors: list[BaseException], part: Path, archive: Path) -> None:
    """Rename the whole archive into place, or raise why it is not whole."""
    if proc.wait() != 0 or errors:
        part.unlink(missing_ok=True)
        if errors and isinstance(errors[0], TRANSIENT_ENGINE_ERRORS):
            raise errors[0]  # the engine went away mid-export: resume it later
        raise ExportError(f"export failed: {errors[0] if errors else 'compressor exit ' + str(proc.returncode)}")
    part.rename(archive)


def _feed(container, sink: BinaryIO) -> None:
    for chunk in container.export(chunk_size=CHUNK):
        sink.write(chunk)


def _cli_errors(exporter: subprocess.Popen, engine: docker.DockerClient) -> list[BaseException]:
    """Why ``docker export`` failed, as the docker-py pipeline would have raised it."""
    try:
        if exporter.wait() == 0:
            return []
        detail = exporter.stderr.read(2000).decode(errors="replace").strip()
        engine.ping()  # an engine that went away mid-export raises here: resume later
        # An engine that restarted (back already) is no reason to fail the job either.
        lost = any(message in detail for message in CLI_LOST_ENGINE)
        return [(requests.ConnectionError if lost else ExportError)(f"docker export exited {exporter.returncode}: {detail}")]
    finally:
        exporter.stderr.close()


def _write(source: BinaryIO, part: Path, max_bytes: int) -> tuple[int, str]:
    """Copy the compressor's output to ``part``, hashing it, written back to disk as it goes;
    raise :class:`OutputTooLarge` instead of writing past ``max_bytes``."""
    sha = hashlib.sha256()
    size = 0
    flushing: threading.Thread | None = None
    with open_for_transfer(part) as out:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                break
            sha.update(chunk)
            out.write(chunk)
            # Write back as we go, so the fsync below does not wait for the whole archive.
            if size % FLUSH_EVERY < len(chunk) and (flushing is None or not flushing.is_alive()):
                out.flush()
                flushing = threading.Thread(target=os.fdatasync, args=(out.fileno(),), daemon=True)
                flushing.start()
        out.flush()
        if flushing is not None:
            flushing.join()
        if size > max_bytes:
            raise OutputTooLarge(max_bytes)
        os.fsync(out.fileno())
    return size, sha.hexdigest()
