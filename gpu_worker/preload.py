"""Loading an image into the engine while it is still being uploaded (DESIGN §2: overlap)."""

from __future__ import annotations

import io
import logging
import math
import os
import tarfile
import threading
import time
from pathlib import Path

import docker

from pink.compression import SNIFF_BYTES, sniff
from pink.states import JobState

from .export import CHUNK
from .layerload import LayerChain
from .untag import without_tags

log = logging.getLogger(__name__)


class UploadEnded(Exception):
    """The upload failed, vanished or stalled: stop reading it."""


class Preload:
    """Loads an image into the engine while it is still being uploaded (DESIGN §2: overlap).

    The thread reads the inbox file as it grows (:class:`GrowingFile`) and streams each layer
    into the engine as it arrives once the layers under it are registered
    (:class:`~gpu_worker.layerload.LayerChain`), so that at the last byte only the registration
    of the layer in flight remains; the real image is loaded
    once the job is QUEUED (the upload is complete and valid; the web server holds back the last
    bytes of an archive that fails validation, so a bad one never loads). A compressed archive,
    or one without a usable manifest.json, is streamed into ``docker load`` whole instead. The
    daemon keeps :attr:`state` up to date from the queue; the reading stops, and the partial
    layers are removed, when the job fails or disappears. The run then finds the image loaded,
    or loads it itself as before if this did not work out.
    """

    #: Give up on an upload that stops growing for this long (its web server died).
    STALL_S = 600.0

    def __init__(self, job_id: str, inbox_file: Path, engine: docker.DockerClient,
                 held_chains: frozenset[str] = frozenset()) -> None:
        self.job_id = job_id
        self.inbox_file = inbox_file
        self.engine = engine
        self.held_chains = held_chains
        self.state: JobState | None = JobState.UPLOADING
        self.done = threading.Event()
        self.loaded: set[str] = set()
        self.error = ""
        #: The layer bookkeeping of this upload (None for a whole-stream load).
        self.chain: LayerChain | None = None
        self.thread = threading.Thread(target=self._main, name=f"preload-{job_id}", daemon=True)

    def start(self) -> "Preload":
        self.thread.start()
        return self

    def _uploading(self) -> bool:
        state = self.state
        if state is JobState.UPLOADING:
            return True
        if state is None or state.terminal:
            raise UploadEnded(f"the upload of job {self.job_id} ended {state or 'without a record'}")
        return False  # QUEUED or later: the file is complete

    def _main(self) -> None:
        try:
            while not self.inbox_file.exists():
                if not self._uploading():
                    return
                time.sleep(0.02)
            with GrowingFile(self.inbox_file, self._uploading, self.STALL_S) as growing:
                if sniff(growing.peek(SNIFF_BYTES)):
                    self.loaded = self._load_whole(growing)
                else:
                    self.loaded = self._load_layers(growing)
            log.info("job %s: image loaded while it was uploaded (%s)", self.job_id, ", ".join(sorted(self.loaded)))
        except UploadEnded as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the run loads the image itself then
            self.error = f"{type(exc).__name__}: {exc}"
            log.info("job %s: loading during the upload did not work (%s); loading afterwards",
                     self.job_id, self.error)
        finally:
            if self.chain is not None:
                self.chain.discard()
            self.done.set()

    def _load_whole(self, growing: "GrowingFile") -> set[str]:
        images = self.engine.images.load(without_tags(iter(lambda: growing.read(CHUNK), b"")))
        return {i.id for i in images}

    def _load_layers(self, growing: "GrowingFile") -> set[str]:
        self.chain = chain = LayerChain(self.engine, self.inbox_file, self.job_id, self.held_chains,
                                        growing.wait_for)
        with tarfile.open(fileobj=growing, mode="r:") as tar:
            for member in tar:  # each header once it came (its data may still be on its way)
                chain.add(member)
                chain.advance()
        growing.wait_for(math.inf)  # the end of the upload: QUEUED, complete and valid
        if not chain.known():  # not what the CLI or `docker save` writes: let docker judge it
            growing.seek(0)
            return self._load_whole(growing)
        return chain.finish()


class GrowingFile(io.RawIOBase):
    """A seekable reader of a file that is still being written: a read waits until the bytes
    are there, or returns what there is once ``uploading()`` says the file is complete.
    ``uploading`` raises :class:`UploadEnded` when the upload failed."""

    def __init__(self, path: Path, uploading, stall_s: float) -> None:
        self._f = path.open("rb")
        self._uploading = uploading
        self._stall_s = stall_s
        self._complete = False
        self.size = 0

    def close(self) -> None:
        self._f.close()
        super().close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def wait_for(self, end: float) -> None:
        """Wait until the file holds ``end`` bytes, or is complete."""
        grew_at = time.monotonic()
        while not self._complete:
            size = os.fstat(self._f.fileno()).st_size
            if size > self.size:
                self.size, grew_at = size, time.monotonic()
            if self.size >= end:
                return
            if not self._uploading():
                self._complete = True  # look once more: it may have grown since the last look
                self.size = os.fstat(self._f.fileno()).st_size
            elif time.monotonic() - grew_at > self._stall_s:
                raise UploadEnded(f"the upload to {self._f.name} stopped growing")
            else:
                time.sleep(0.02)

    def peek(self, n: int) -> bytes:
        self.wait_for(n)
        pos = self._f.tell()
        data = self._f.read(n)
        self._f.seek(pos)
        return data

    def readinto(self, buffer) -> int:  # noqa: ANN001 - io's interface
        self.wait_for(self._f.tell() + len(buffer))
        return self._f.readinto(buffer)
