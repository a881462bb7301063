"""Removing the files of jobs their owners deleted (``DELETE /api/v1/jobs/<id>``).

A web server deletes an ended job's record and leaves a tombstone, ``deleted/<id>`` naming the
job's worker (:mod:`pink.store_deletes`). The worker watches the tombstones and removes what
the job left here: its archive and log in the outbox, an export cut short (``.part``), and an
upload still in the inbox. The files of a job a run here still holds (an export finishing after
a cancel) are removed once the run lets go; the tombstone stays until its lease ends, and the
periodic sweep looks again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Collection

from pink.config import WorkerConfig
from pink.store import Store

log = logging.getLogger(__name__)


class Deletions:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        #: Tombstones whose files are removed already (forgotten when the tombstone ends).
        self._done: set[str] = set()
        #: Deleted jobs whose files wait for their run to let go (swept again when it does).
        self.waiting: set[str] = set()

    def files(self, job_id: str) -> list[Path]:
        """Every file of ``job_id`` on this worker (the names the runner and the transfers use)."""
        outbox, inbox = Path(self.cfg.outbox), Path(self.cfg.inbox)
        found = [outbox / f"{job_id}{self.cfg.archive_suffix}", outbox / f"{job_id}.log", inbox / f"{job_id}.tar"]
        found += [*outbox.glob(f"{job_id}*.part"), *inbox.glob(f"{job_id}*.part")]
        return [p for p in found if p.exists()]

    def sweep(self, store: Store, busy: Collection[str]) -> list[str]:
        """Remove the files of this worker's deleted jobs, but of the ``busy`` ones (runs still
        going). Returns the ids whose files were removed now."""
        stones = {s.job_id for s in store.tombstones(self.cfg.name)}
        self._done &= stones
        removed = []
        self.waiting = stones & set(busy) - self._done
        for job_id in sorted(stones - self._done - set(busy)):
            try:
                for path in self.files(job_id):
                    log.info("deleting %s: its owner deleted job %s", path.name, job_id)
                    path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not remove the files of deleted job %s: %s", job_id, exc)
                continue
            self._done.add(job_id)
            removed.append(job_id)
        return removed
