"""The worker's job slots, live: an admin's setting in etcd (pink.slots) wins over the
configured ``max_parallel_jobs`` until it is reset. A watch on the key marks it changed and
wakes the loop, which re-reads it on its next cycle."""

from __future__ import annotations

import logging
import threading
from typing import Callable

from pink import slots
from pink.store import Store

log = logging.getLogger(__name__)


class LiveSlots:
    def __init__(self, store: Store, worker: str, configured: int, wake: threading.Event) -> None:
        self.store, self.worker, self.configured, self.wake = store, worker, configured, wake
        #: The effective number of job slots, as of the last :meth:`effective`.
        self.value = configured
        self._changed = threading.Event()
        self._changed.set()
        self._unwatch: Callable[[], None] | None = None

    def watch(self) -> None:
        """Start the watch (it heals itself; a re-made watch re-reads the setting too)."""
        if self._unwatch is None:
            # slots/<name> also matches slots/<name>x: a needless re-read at most.
            self._unwatch = self.store.watch_prefix(("slots", self.worker), self._on_change)

    def close(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    def _on_change(self, _ok: bool) -> None:
        self._changed.set()
        self.wake.set()

    def effective(self) -> int:
        """The job slots now: re-read from etcd after a change (raises while etcd is away, and
        reads again next time)."""
        if self._changed.is_set():
            self._changed.clear()
            try:
                entry = slots.setting(self.store, self.worker)
            except BaseException:
                self._changed.set()
                raise
            value = entry["slots"] if entry else self.configured
            if value != self.value:
                how = f"set by {entry.get('by', '?')}" if entry else "the configured max_parallel_jobs"
                log.info("job slots: %d -> %d (%s)", self.value, value, how)
            self.value = value
        return self.value
