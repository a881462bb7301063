"""One retry helper for transient failures: deadline, exponential backoff, full jitter."""

from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypeVar

from .errors import StoreUnavailable
from .metrics import ETCD_RETRIES

log = logging.getLogger(__name__)
T = TypeVar("T")


class Retry:
    """Call a function until it succeeds, raises a permanent error, or the deadline passes.

    Only exceptions in ``transient`` are retried; anything else propagates at once. When the
    deadline is reached the last transient exception is raised. The deadline counts from the
    first failure: an attempt that hung until its own timeout (an etcd member whose host is
    gone answers nothing) must not use up the time for trying the others.
    """

    def __init__(
        self,
        deadline_s: float = 10.0,
        first_delay_s: float = 0.05,
        max_delay_s: float = 1.0,
        transient: tuple[type[BaseException], ...] = (StoreUnavailable,),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deadline_s = deadline_s
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.transient = transient
        self._sleep = sleep
        self._clock = clock

    def __call__(self, fn: Callable[[], T], what: str = "call") -> T:
        end: float | None = None
        delay = self.first_delay_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except self.transient as exc:
                if end is None:
                    end = self._clock() + self.deadline_s
                left = end - self._clock()
                if left <= 0:
                    raise
                ETCD_RETRIES.inc()
                pause = min(random.uniform(0, delay), left)
                log.debug("%s failed (attempt %d: %s); retrying in %.2fs", what, attempt, exc, pause)
                self._sleep(pause)
                delay = min(delay * 2, self.max_delay_s)
