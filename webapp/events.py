"""Wake-ups for server-sent events: one etcd watch on the job records per web server process.

Streams (``GET /api/v1/events``) wait here instead of polling etcd; when any job record
changes they wake, re-read the store (the truth) and send what changed for their caller. If
the watch cannot be made or breaks, waits simply time out sooner and the streams poll.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from pink.errors import PinkError
from pink.store import Store

log = logging.getLogger(__name__)


class JobChanges:
    """A counter that goes up on every change under ``jobs/``; ``wait`` blocks until it does."""

    #: Seconds between attempts to (re)make a broken watch.
    RETRY_S = 5.0

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cond = threading.Condition()
        self._version = 0
        self._cancel: Callable[[], None] | None = None
        self._next_try = 0.0

    @property
    def version(self) -> int:
        return self._version

    @property
    def watching(self) -> bool:
        return self._cancel is not None

    def _on_event(self, ok: bool) -> None:
        with self._cond:
            self._version += 1
            if not ok:
                self._cancel = None  # made again by the next wait
            self._cond.notify_all()

    def _ensure_watch(self) -> None:
        with self._cond:
            if self._cancel is not None or time.monotonic() < self._next_try:
                return
            self._next_try = time.monotonic() + self.RETRY_S
        try:
            cancel = self._store.watch_prefix(("jobs", ""), self._on_event)
        except PinkError as exc:
            log.warning("no etcd watch for live job events (streams poll instead): %s", exc)
            return
        with self._cond:
            if self._cancel is None:
                self._cancel = cancel
                return
        cancel()  # another thread won the race

    def wait(self, seen: int, timeout: float) -> int:
        """Block until the version differs from ``seen`` or ``timeout`` passes; return it."""
        self._ensure_watch()
        if not self.watching:
            timeout = min(timeout, 2.0)
        with self._cond:
            self._cond.wait_for(lambda: self._version != seen, timeout)
            return self._version
