"""The load of the scale bench: users submitting held-image jobs through nginx, and what is
read back from etcd (how many jobs have not ended yet, which ones a worker runs).

A submit is the request the CLI makes for an image a worker holds: ``POST /api/v1/jobs?image=``
with an empty body and an Idempotency-Key (the CLI's ``GET /images/<id>`` before it is not
timed).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
import uuid
from pathlib import Path

from pink import config as pink_config
from pink.errors import PinkError
from pink.states import JobState
from pink.store import Store

import pink_dev as dev

from .engine import IMAGE_ID


@dataclasses.dataclass
class Submit:
    at: float          # when the request was sent (time.time())
    seconds: float     # until the answer
    status: int
    queued_before: int  # jobs not ended (queued + running) when it was sent
    job_id: str = ""


class Load:
    """``threads`` submitters, each cycling through the users' tokens."""

    def __init__(self, url: str, ca_cert: Path, tokens: dict[str, str], config_path: Path, threads: int) -> None:
        self.url, self.ca_cert, self.tokens, self.threads = url, ca_cert, list(tokens.values()), threads
        self.store = Store(pink_config.load(str(config_path), env={}).etcd)
        self.lock = threading.Lock()
        self.results: list[Submit] = []
        self.ok = 0
        self.pending = 0  # jobs not ended, as last counted from etcd
        self.fresh = 0  # jobs made since that count
        self._seq = itertools.count()

    def close(self) -> None:
        self.store.etcd.close()

    # ----- etcd reads
    def not_ended(self) -> int:
        """Jobs in the queues (every job that has not ended has a queue entry). A read that
        times out on an overloaded machine is tried again, up to a minute."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return len(self.store._range(self.store._k("queue", ""), keys_only=True))
            except PinkError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def running_on(self, worker: str) -> list[str]:
        return [e.job_id for e in self.store.queue(worker) if e.state is JobState.RUNNING]

    def states(self, job_ids: list[str]) -> dict[str, JobState | None]:
        found = {j.id: j.state for j in self.store.get_jobs(job_ids)}
        return {j: found.get(j) for j in job_ids}

    # ----- submitting
    def _session(self, token: str) -> dev.ApiSession:
        return dev.ApiSession(self.url, token, str(self.ca_cert))

    def submit_one(self, session: dev.ApiSession) -> Submit:
        n = next(self._seq)
        before = self.pending + self.fresh
        t0 = time.time()
        m0 = time.monotonic()
        try:
            resp = session.post("/api/v1/jobs", params={"image": IMAGE_ID, "name": f"scale-{n}"}, data=b"",
                                headers={"Idempotency-Key": uuid.uuid4().hex, "Content-Length": "0"}, timeout=120)
            status, job_id = resp.status_code, (resp.json().get("id", "") if resp.status_code == 201 else "")
        except Exception:  # noqa: BLE001 - counted as a failed submit
            status, job_id = 0, ""
        result = Submit(t0, time.monotonic() - m0, status, before, job_id)
        with self.lock:
            self.results.append(result)
            if status == 201:
                self.ok += 1
                self.fresh += 1
        return result

    def run(self, stop_when, may_submit=lambda _load: True, poll_s: float = 0.5) -> list[Submit]:
        """Submit from every thread until ``stop_when(self)``; a thread waits while
        ``may_submit(self)`` is false. The count of jobs not ended is refreshed every ``poll_s``."""
        done = threading.Event()
        start = len(self.results)

        def submitter(k: int) -> None:
            sessions = [self._session(t) for t in self.tokens[k::self.threads] or self.tokens]
            for session in itertools.cycle(sessions):
                if done.is_set():
                    break
                if not may_submit(self):
                    time.sleep(0.02)
                    continue
                self.submit_one(session)
            for session in sessions:
                session.close()

        threads = [threading.Thread(target=submitter, args=(k,), daemon=True) for k in range(self.threads)]
        for t in threads:
            t.start()
        try:
            while not stop_when(self):
                if not any(t.is_alive() for t in threads):
                    raise RuntimeError("every submitting thread stopped (see above)")
                time.sleep(poll_s)
                with self.lock:
                    fresh = self.fresh
                count = self.not_ended()
                with self.lock:
                    self.pending, self.fresh = count, self.fresh - fresh
        finally:
            done.set()
            for t in threads:
                t.join(150)
        return self.results[start:]
