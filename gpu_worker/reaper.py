"""Removing containers off the runs' path: one thread removes, one container at a time, the
containers of jobs that are over and containers made ahead that are no longer wanted.

A run hands its container over once its job's record is terminal and goes; a freed job slot
starts the next job without waiting for a removal. Whatever is not removed (the engine away,
the daemon stopped first) is removed by the daemon's sweep of orphans later.
"""

from __future__ import annotations

import logging
import queue
import threading

import docker.errors

from .export import TRANSIENT_ENGINE_ERRORS

log = logging.getLogger(__name__)


def remove_container(container, what: str) -> bool:
    """Remove ``container`` and its anonymous volumes; False when it is not removed now (gone
    or being removed already, or the engine is away: the sweep of orphans does it later)."""
    try:
        container.remove(force=True, v=True)  # with a path: mode's volume
        return True
    except (docker.errors.APIError, *TRANSIENT_ENGINE_ERRORS) as exc:
        log.info("%s: container not removed now: %s", what, exc)
        return False


class Reaper:
    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def remove(self, container, what: str) -> None:
        """Remove ``container`` soon (now, in the caller, when the thread is not running)."""
        if self._thread is None:
            remove_container(container, what)
        else:
            self._queue.put((container, what))

    def start(self) -> "Reaper":
        self._thread = threading.Thread(target=self._main, name="reaper", daemon=True)
        self._thread.start()
        return self

    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                container, what = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            remove_container(container, what)
