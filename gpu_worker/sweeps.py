"""The daemon's periodic clean-up of this host: containers and inbox files of jobs that are
over (or unknown), containers made ahead that nobody holds, and outputs past their retention."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pink.model import JOB_ID
from pink.states import JobState

from .container import AHEAD_LABEL
from .reaper import remove_container

if TYPE_CHECKING:
    from .daemon import WorkerDaemon

log = logging.getLogger(__name__)


def sweep_orphans(daemon: "WorkerDaemon") -> None:
    """Remove containers and inbox files whose job is over or unknown (never a live one)."""
    entries = daemon.store.queue(daemon.wcfg.name)
    # An array's upload is named after the array; its jobs here that have not ended need it.
    live = {e.job_id for e in entries} | {e.array_id for e in entries if e.array_id}
    queued = {e.job_id for e in entries if e.state is JobState.QUEUED}
    # sparse: no inspect per container, which races with runs removing their containers.
    for container in daemon.engine.containers.list(all=True, sparse=True,
                                                 filters={"label": f"pink.worker={daemon.wcfg.name}"}):
        labels = container.attrs.get("Labels") or {}
        job_id = labels.get("pink.job", "")
        if job_id in daemon.runs or daemon.ahead.holds(job_id):
            continue
        if job_id in queued and AHEAD_LABEL in labels:
            # Made ahead by an earlier run of this daemon (or one no longer wanted): only a
            # claim starts a container, and this job is not claimed, so it never started.
            log.info("removing container made ahead for queued job %s", job_id)
            remove_container(container, f"job {job_id}")
            continue
        if job_id in live:
            continue
        job = daemon.store.get_job(job_id) if JOB_ID.match(job_id) else None
        if job is None or job.state.terminal:
            log.info("removing container of finished job %s", job_id)
            remove_container(container, f"job {job_id}")
    # Uploads, and exports cut short, of jobs that are over.
    leftovers = [*Path(daemon.wcfg.inbox).glob("*.tar"), *Path(daemon.wcfg.outbox).glob("*.part")]
    for path in leftovers:
        job_id = path.name[:20]
        if job_id in live or job_id in daemon.runs or not JOB_ID.match(job_id):
            continue
        job = daemon.store.get_job(job_id)
        if job is None or job.state.terminal:
            log.info("removing %s of finished job %s", path.name, job_id)
            path.unlink(missing_ok=True)


def expire_outputs(daemon: "WorkerDaemon") -> None:
    """Delete the archives and logs of jobs whose retention ran out (``output_expires_at``,
    stamped when they ended)."""
    keep_s = daemon.wcfg.output_retention_s
    if not keep_s:
        return  # keep everything, whatever was promised before
    now = time.time()
    for path in Path(daemon.wcfg.outbox).iterdir():
        job_id = path.name[:20]
        if not path.name.endswith((daemon.wcfg.archive_suffix, ".log")) or not JOB_ID.match(job_id) \
                or job_id in daemon.runs:
            continue
        try:
            if now - path.stat().st_mtime <= keep_s:
                continue
            job = daemon.store.get_job(job_id)
            # Jobs that ended before retention existed carry no stamp: count from their end.
            if job is None or (job.state.terminal and now > (job.output_expires_at or job.updated_at + keep_s)):
                log.info("deleting %s: the retention of its job ran out", path.name)
                path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not expire %s: %s", path.name, exc)
