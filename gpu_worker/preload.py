"""Loading an image into the engine while it is still being uploaded (DESIGN §2: overlap)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import docker

from pink.states import JobState

from .export import CHUNK
from .untag import without_tags

log = logging.getLogger(__name__)


class UploadEnded(Exception):
    """The upload failed, vanished or stalled: stop reading it."""


class Preload:
    """Loads an image into the engine while it is still being uploaded (DESIGN §2: overlap).

    ``docker load`` reads the inbox file as it grows, so unpacking the layers overlaps the
    upload instead of following it (a 1 GiB load takes ~13 s here, mostly waiting on the
    disk). The daemon keeps :attr:`state` up to date from the queue: the stream ends when the
    job is QUEUED (the upload is complete and valid; the web server holds back the last bytes
    of an archive that fails validation, so a bad one never loads) and is cut off, failing the
    load, when the job fails or disappears. The run then finds the image loaded, or loads it
    itself as before if this did not work out.
    """

    #: Give up on an upload that stops growing for this long (its web server died).
    STALL_S = 600.0

    def __init__(self, job_id: str, inbox_file: Path, engine: docker.DockerClient) -> None:
        self.job_id = job_id
        self.inbox_file = inbox_file
        self.engine = engine
        self.state: JobState | None = JobState.UPLOADING
        self.done = threading.Event()
        self.loaded: set[str] = set()
        self.error = ""
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

    def _chunks(self):
        stalled_at = time.monotonic()
        complete = False
        with self.inbox_file.open("rb") as f:
            while True:
                data = f.read(CHUNK)
                if data:
                    stalled_at = time.monotonic()
                    yield data
                elif complete:
                    return
                elif not self._uploading():
                    complete = True  # read on to the end: it may have grown since the last read
                elif time.monotonic() - stalled_at > self.STALL_S:
                    raise UploadEnded(f"the upload of job {self.job_id} stopped growing")
                else:
                    time.sleep(0.02)

    def _main(self) -> None:
        try:
            while not self.inbox_file.exists():
                if not self._uploading():
                    return
                time.sleep(0.02)
            images = self.engine.images.load(without_tags(self._chunks()))
            self.loaded = {i.id for i in images}
            log.info("job %s: image loaded while it was uploaded (%s)", self.job_id, ", ".join(sorted(self.loaded)))
        except UploadEnded as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the run loads the image itself then
            self.error = f"{type(exc).__name__}: {exc}"
            log.info("job %s: loading during the upload did not work (%s); loading afterwards",
                     self.job_id, self.error)
        finally:
            self.done.set()
