"""A lease kept alive by its owner's loop; re-granted (and logged once) when it was lost."""

from __future__ import annotations

import logging
import threading
import time

from .metrics import LEASE_REGRANTS, LEASE_RENEW_SECONDS
from .store import Store

log = logging.getLogger(__name__)


class Lease:
    def __init__(self, store: Store, ttl_s: int, owner: str) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.owner = owner
        self.id = 0
        self._lock = threading.Lock()

    def keepalive(self) -> bool:
        """Refresh the lease; grant a new one if there is none or it expired. Returns True
        when a new lease was granted, so the owner re-attaches its keys."""
        with self._lock:
            if self.id:
                start = time.monotonic()
                refreshed = self.store.refresh_lease(self.id)
                LEASE_RENEW_SECONDS.observe(time.monotonic() - start)
                if refreshed:
                    return False
            if self.id:
                log.warning("%s: lease %x expired (etcd unreachable for over %ss?); taking a new one",
                            self.owner, self.id, self.ttl_s)
            self.id = self.store.grant_lease(self.ttl_s)
            LEASE_REGRANTS.inc()
            return True

    def current(self) -> int:
        """The lease id, granting one first if needed."""
        if not self.id:
            self.keepalive()
        return self.id
