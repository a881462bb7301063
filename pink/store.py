"""The store: what PINK's keys in etcd mean, and the only code that writes them.

Rules every method keeps (DESIGN §3):

* A job changes state only through :meth:`Store.transition` (and :meth:`Store.claim`, which is a
  transition): one transaction that compares the job key's ``mod_revision`` with the one the
  caller read. Losing that race returns ``None``; it is not an error.
* New jobs, idempotency keys, claims, users and tokens are create-if-absent.
* Claims and worker heartbeats hang on the worker's lease, so they vanish with the worker.
* Only an unreachable etcd raises (:class:`~pink.errors.StoreUnavailable`).

Key layout under the prefix (default ``/pink``)::

    jobs/<id>                 the job record (JSON)
    queue/<worker>/<id>       index of the worker's non-terminal jobs (small JSON)
    userjobs/<user>/<id>      index of a user's jobs
    idem/<user>/<sha256(key)> job id created for an Idempotency-Key
    claims/<id>               worker name; on the worker's lease
    uploads/<id>              present while a web server streams the job's image; on its lease
    inputs/<hex>/<worker>     the worker holds input sha256:<hex>: {"bytes", "users", "at"}
    inputuse/<hex>/<worker>   the last job placed there with it: {"job", "at"}
    workers/<name>            static registration; alive/<name> heartbeat on the lease
    drain/<name>              present while an admin has drained the worker
    slots/<name>              an admin's live job slots for the worker (pink.slots)
    arrayjobs/                job arrays: see pink.arraystore
    arrayslots/, gpuslots/    run slots of claimed jobs: see pink.runslots
    down/<name>               when a web server first saw the worker without a lease
    react/<id>                outbox of a job to retry if LOST or to notify (pink.reactions)
    deleted/<id>              tombstone of a deleted job (pink/store_deletes.py); on a lease
    acct/, usage/, retire/    accounting and record retention: pink/store_usage.py
    users/<name>, tokens/<sha256(token)>
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import uuid
from typing import Any, Callable, Iterable

from . import arraystore, metrics, runslots
from . import reactions
from .config import EtcdConfig
from .errors import InputUnavailable, StoreUnavailable
from .etcd import EtcdClient, prefix_end, transactions as tx
from .model import InputRecord, Job, Token, User, WorkerInfo
from .queues import QueueEntry, QueueLoad, QueueMirror
from .store_deletes import DeletesMixin
from .store_retention import RetentionMixin
from .store_usage import UsageMixin
from .states import CLAIMED, JobState, can_transition

log = logging.getLogger(__name__)

#: etcd's default --max-txn-ops.
MAX_TXN_OPS = 128


class IllegalTransition(ValueError):
    """A caller asked for a move the state table forbids: a bug, not a race."""


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Store(DeletesMixin, UsageMixin, RetentionMixin):
    def __init__(self, cfg: EtcdConfig, client: EtcdClient | None = None) -> None:
        self.prefix = cfg.prefix.rstrip("/")
        self.etcd = client or EtcdClient(cfg)
        self.queue_mirror = QueueMirror(self)

    # ----- keys -----------------------------------------------------------------------------
    def _k(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    def job_key(self, job_id: str) -> str:
        return self._k("jobs", job_id)

    def queue_key(self, worker: str, job_id: str = "") -> str:
        return self._k("queue", worker, job_id)

    def queues_prefix(self) -> str:
        """The prefix of every worker's queue."""
        return self._k("queue", "")

    def claim_key(self, job_id: str) -> str:
        return self._k("claims", job_id)

    def upload_key(self, job_id: str) -> str:
        return self._k("uploads", job_id)

    # ----- low level --------------------------------------------------------------------------
    def _txn(self, compare: list, success: list, what: str) -> tuple[bool, int, list]:
        """Run one transaction; return (succeeded, revision it wrote at, responses)."""

        def run(client):
            ok, responses = client.transaction(compare=compare, success=success, failure=[])
            revision = 0
            for r in responses:
                if not isinstance(r, list) and r.HasField("response_put"):
                    revision = r.response_put.header.revision
            return ok, revision, responses

        return self.etcd.call(run, what)

    def _get(self, key: str) -> tuple[bytes | None, int]:
        value, meta = self.etcd.call(lambda c: c.get(key), f"get {key}")
        return value, (meta.mod_revision if meta else 0)

    def _get_prefix(self, prefix: str, keys_only: bool = False) -> list[tuple[str, bytes, int]]:
        def run(client):
            return [
                (m.key.decode(), v, m.mod_revision)
                for v, m in client.get_prefix(prefix, keys_only=keys_only)
            ]

        return self.etcd.call(run, f"list {prefix}")

    def _get_prefixes(self, *prefixes: str) -> list[list[tuple[str, bytes, int]]]:
        """Several prefixes at one revision in one round trip (a transaction of ranges)."""
        ops = [tx.get(p, prefix_end(p.encode())) for p in prefixes]
        _, _, responses = self._txn([], ops, "list " + ", ".join(prefixes))
        return [[(m.key.decode(), v, m.mod_revision) for v, m in rows] for rows in responses]

    # ----- jobs -----------------------------------------------------------------------------
    def create_job(self, job: Job, upload_lease: int = 0, supersede: Job | None = None,
                   retrying: Job | None = None) -> tuple[Job, bool]:
        """Create ``job`` if absent. With an idempotency key already used by this user, return
        the job that key created instead: ``(job, created)``.

        An UPLOADING job gets an upload key on ``upload_lease`` (the web server's), so a web
        server that dies mid-upload leaves a job the janitor can fail. ``supersede`` is a job
        whose upload never completed: its idempotency key is taken over if still unchanged.
        A job with an input is created only while its worker holds the input, and marks it
        used there, so the worker's clean-up does not remove it meanwhile
        (:meth:`forget_input`); :class:`~pink.errors.InputUnavailable` otherwise. ``retrying``:
        a LOST job this one retries (:func:`pink.reactions.create_ops`).
        """
        job = dataclasses.replace(job, write_id=uuid.uuid4().hex)
        compare = [tx.version(self.job_key(job.id)) == 0]
        success = [
            tx.put(self.job_key(job.id), job.to_json()),
            tx.put(self.queue_key(job.worker, job.id), QueueEntry.of(job).to_json()),
            tx.put(self._k("userjobs", job.user, job.id), b""),
        ]
        if job.state is JobState.UPLOADING:
            success.append(tx.put(self.upload_key(job.id), job.worker, lease=upload_lease))
        if job.array_id:
            success.append(tx.put(arraystore.index_key(self, job.array_id, job.id), b""))
        if job.idempotency_key:
            idem_key = self._k("idem", job.user, _hash(job.idempotency_key))
            if supersede is None:
                compare.append(tx.version(idem_key) == 0)
            else:
                compare.append(tx.value(idem_key) == supersede.id)
            success.append(tx.put(idem_key, job.id))
        if job.input:
            held, used = self._input_keys(job.input, job.worker)
            compare.append(tx.version(held) > 0)
            success.append(tx.put(used, json.dumps({"job": job.id, "at": job.created_at})))
        more_compare, more_success = reactions.create_ops(self, job, retrying)
        ok, revision, _ = self._txn(compare + more_compare, success + more_success, f"create job {job.id}")
        if ok:
            return dataclasses.replace(job, mod_revision=revision), True
        if job.idempotency_key:
            found = self.job_for_idempotency_key(job.user, job.idempotency_key)
            if found is not None:
                return found, False
        if job.input and self._get(self._input_keys(job.input, job.worker)[0])[0] is None:
            raise InputUnavailable(f"worker {job.worker} removed input {job.input} while the job was "
                                   f"placed there; upload the input again")
        raise StoreUnavailable(f"job id {job.id} already exists; retry the submission")

    def job_for_idempotency_key(self, user: str, key: str) -> Job | None:
        raw, _ = self._get(self._k("idem", user, _hash(key)))
        return self.get_job(raw.decode()) if raw is not None else None

    def get_job(self, job_id: str) -> Job | None:
        raw, revision = self._get(self.job_key(job_id))
        return Job.from_json(raw, revision) if raw is not None else None

    def get_jobs(self, job_ids: Iterable[str]) -> list[Job]:
        keys = [self.job_key(j) for j in job_ids]
        if not keys:
            return []

        def run(client, batch):
            _, responses = client.transaction(compare=[], success=[tx.get(k) for k in batch], failure=[])
            return [Job.from_json(v, m.mod_revision) for r in responses for v, m in r]

        jobs: list[Job] = []
        for start in range(0, len(keys), MAX_TXN_OPS):  # etcd refuses bigger transactions
            batch = keys[start:start + MAX_TXN_OPS]
            jobs += self.etcd.call(lambda c: run(c, batch), "get jobs")
        return jobs

    def list_jobs(self, user: str | None = None, limit: int = 200) -> list[Job]:
        """Newest first. With ``user``, only that user's jobs (read through the user index).
        Pages: :meth:`jobs_page`."""
        return self.jobs_page(user, limit)[0]

    def transition(
        self,
        job: Job,
        new: JobState,
        *,
        reason: str = "",
        now: float | None = None,
        **changes: Any,
    ) -> Job | None:
        """Move ``job`` (as read, at its mod_revision) to ``new``; ``None`` if someone else
        changed the job first. Illegal moves raise :class:`IllegalTransition`."""
        return self._move(job, new, reason=reason, now=now, **changes)

    def _move(
        self,
        job: Job,
        new: JobState,
        *,
        reason: str = "",
        compare: Iterable = (),
        ops: Iterable = (),
        now: float | None = None,
        **changes: Any,
    ) -> Job | None:
        """:meth:`transition` that also requires ``compare`` and writes ``ops``."""
        if not can_transition(job.state, new):
            raise IllegalTransition(f"job {job.id}: {job.state} -> {new} is not allowed")
        now = time.time() if now is None else now
        entry = {"state": new.value, "at": now}
        if reason:
            entry["reason"] = reason
        updated = dataclasses.replace(
            job, state=new, updated_at=now, history=(*job.history, entry),
            reason=reason or job.reason, write_id=uuid.uuid4().hex, **changes,
        )
        key = self.job_key(job.id)
        success = [tx.put(key, updated.to_json()), *ops]
        if job.state is JobState.UPLOADING:
            success.append(tx.delete(self.upload_key(job.id)))
        if new.terminal:
            success += [tx.delete(self.queue_key(job.worker, job.id)), tx.delete(self.claim_key(job.id)),
                        tx.put(self.account_marker_key(job.id), b""),  # to account (pink.store_usage)
                        *runslots.release_ops(self, job.run_slots)]
        else:
            success.append(tx.put(self.queue_key(job.worker, job.id), QueueEntry.of(updated).to_json()))
        all_compare = [tx.mod(key) == job.mod_revision, *compare]
        try:
            ok, revision, _ = self._txn(all_compare, success, f"{job.id} {job.state}->{new}")
        except StoreUnavailable:
            raise
        if ok:
            moved = dataclasses.replace(updated, mod_revision=revision)
        else:  # If an earlier attempt of this very call committed before its answer was lost
            # (the retry helper re-sent it), the record carries our write id.
            moved = self.get_job(job.id)
            if moved is None or moved.write_id != updated.write_id:
                return None
        if new.terminal:
            metrics.job_ended(new.value)  # counted by the process that ended it (pink/metrics.py)
        return moved

    def claim(self, job: Job, worker: str, lease_id: int, gpu_indices: tuple[int, ...],
              slots: tuple[str, ...] = ()) -> Job | None:
        """QUEUED -> STARTING for ``worker``, with a claim key on its lease (at most once).
        The job takes its free run ``slots`` (pink.runslots) in the same transaction (None, a
        lost race, when another job took one first)."""
        claim = self.claim_key(job.id)
        compare, ops = runslots.claim_ops(self, job.id, slots, time.time())
        return self._move(job, JobState.STARTING, compare=[tx.version(claim) == 0, *compare],
                          ops=[tx.put(claim, worker, lease=lease_id), *ops],
                          gpu_indices=tuple(gpu_indices), run_slots=tuple(slots))

    def mark_lost_if_unclaimed(self, job: Job, reason: str, now: float, output_expires_at: float | None,
                               new: JobState = JobState.LOST) -> Job | None:
        """A claimed job -> LOST (or ``new``: CANCELLED for a job whose cancel waited on its
        worker), only while its claim key is gone (its worker's lease ended).

        Every claim renewal rewrites the job, so of many web servers sweeping at once, and a
        worker re-attaching its claim, exactly one wins."""
        return self._move(job, new, reason=reason, now=now, output_expires_at=output_expires_at,
                          compare=[tx.version(self.claim_key(job.id)) == 0])

    def fail_stale_upload(self, job: Job, reason: str, now: float) -> Job | None:
        """An UPLOADING job -> FAILED, only while its upload key is gone (the web server that
        carried the upload lost its lease)."""
        return self._move(job, JobState.FAILED, reason=reason, now=now,
                          compare=[tx.version(self.upload_key(job.id)) == 0])

    def renew_claim(self, job: Job, worker: str, lease_id: int) -> Job | None:
        """Re-attach a claimed job to a new lease of the same worker (after a restart or a lost
        lease). Rewrites the job too, so it races cleanly with a web server marking it LOST."""
        if job.state not in CLAIMED:
            raise IllegalTransition(f"job {job.id} is {job.state}, not claimed")
        updated = dataclasses.replace(job, write_id=uuid.uuid4().hex, updated_at=time.time())
        key = self.job_key(job.id)
        ok, revision, _ = self._txn(
            [tx.mod(key) == job.mod_revision],
            [tx.put(key, updated.to_json()), tx.put(self.claim_key(job.id), worker, lease=lease_id)],
            f"renew claim {job.id}",
        )
        return dataclasses.replace(updated, mod_revision=revision) if ok else None

    def claims(self) -> dict[str, str]:
        """job id -> worker, for every live claim."""
        return {k.rsplit("/", 1)[1]: v.decode() for k, v, _ in self._get_prefix(self._k("claims", ""))}

    def uploads(self) -> set[str]:
        """Ids of the jobs whose image a live web server is streaming right now."""
        return {k.rsplit("/", 1)[1] for k, _, _ in self._get_prefix(self.upload_key(""), keys_only=True)}

    def queue(self, worker: str) -> list[QueueEntry]:
        return [QueueEntry.from_json(v) for _, v, _ in self._get_prefix(self.queue_key(worker, ""))]

    def all_queues(self) -> dict[str, list[QueueEntry]]:
        out: dict[str, list[QueueEntry]] = {}
        for key, value, _ in self._get_prefix(self.queues_prefix()):
            worker = key.rsplit("/", 2)[1]
            out.setdefault(worker, []).append(QueueEntry.from_json(value))
        return out

    def queue_load(self) -> QueueLoad:
        """Per-worker and per-user sums over every queue entry, up to date (pink.queues)."""
        return self.queue_mirror.load()

    # ----- inputs -----------------------------------------------------------------------------
    def _input_keys(self, input_id: str, worker: str) -> tuple[str, str]:
        """The keys saying that ``worker`` holds the input, and where it was last used."""
        digest = input_id.removeprefix("sha256:")
        return self._k("inputs", digest, worker), self._k("inputuse", digest, worker)

    def record_input(self, worker: str, input_id: str, size: int, user: str,
                     now: float | None = None) -> InputRecord:
        """``user`` uploaded the input to ``worker``: the worker holds it, and ``user`` may use it
        (with whoever uploaded it there before)."""
        key, _ = self._input_keys(input_id, worker)
        now = time.time() if now is None else now
        for _ in range(8):  # uploads of the same input by other users race on the key
            raw, revision = self._get(key)
            users = tuple(sorted({*(json.loads(raw)["users"] if raw is not None else ()), user}))
            value = json.dumps({"bytes": size, "users": users, "at": now})
            ok, written, _ = self._txn([tx.mod(key) == revision], [tx.put(key, value)], f"record input on {worker}")
            if ok:
                return InputRecord(input_id, worker, size, users, now, mod_revision=written)
        raise StoreUnavailable("too many uploads of this input at once to record it; try again")

    def _input_rows(self, kind: str, digest: str) -> dict[tuple[str, str], tuple[dict, int]]:
        """(hex, worker) -> (value, mod_revision) of the ``kind`` keys of input ``sha256:<digest>``
        (of every input when "")."""
        start = self._k(kind, "")
        rows = self._get_prefix(self._k(kind, digest, "") if digest else start)
        return {tuple(k[len(start):].split("/", 1)): (json.loads(v), rev) for k, v, rev in rows}

    def _input_records(self, digest: str = "", worker: str = "") -> list[InputRecord]:
        held = self._input_rows("inputs", digest)
        uses = self._input_rows("inputuse", digest)  # read after the records: see forget_input
        records = []
        for (hexd, name), (data, revision) in sorted(held.items()):
            if worker and name != worker:
                continue
            use, use_revision = uses.get((hexd, name), ({}, 0))
            records.append(InputRecord(f"sha256:{hexd}", name, data["bytes"], tuple(data["users"]), data["at"],
                                       use.get("at", 0.0), revision, use_revision))
        return records

    def input_holders(self, input_id: str) -> list[InputRecord]:
        """Which workers hold the input, uploaded by whom."""
        return self._input_records(input_id.removeprefix("sha256:"))

    def inputs_on(self, worker: str) -> list[InputRecord]:
        """Every input ``worker`` holds."""
        return self._input_records(worker=worker)

    def forget_input(self, record: InputRecord) -> bool:
        """The worker removed the input: drop its record, unless it was uploaded again or a job
        was placed with it since ``record`` was read (False then: keep the input)."""
        key, used = self._input_keys(record.input_id, record.worker)
        ok, _, _ = self._txn([tx.mod(key) == record.mod_revision, tx.mod(used) == record.use_revision],
                             [tx.delete(key), tx.delete(used)], f"forget input on {record.worker}")
        return ok

    # ----- workers ----------------------------------------------------------------------------
    def grant_lease(self, ttl: int) -> int:
        return self.etcd.call(lambda c: c.lease(ttl).id, "grant lease")

    def refresh_lease(self, lease_id: int) -> bool:
        """Keep the lease alive; False when it has already expired."""

        def run(client):
            return [r.TTL for r in client.refresh_lease(lease_id)]

        ttls = self.etcd.call(run, "refresh lease")
        return bool(ttls) and ttls[-1] > 0

    def revoke_lease(self, lease_id: int) -> None:
        self.etcd.call(lambda c: c.revoke_lease(lease_id), "revoke lease")

    def register_worker(self, info: WorkerInfo, lease_id: int) -> None:
        self._txn(
            [],
            [
                tx.put(self._k("workers", info.name), info.static_json()),
                tx.put(self._k("alive", info.name), info.heartbeat_json(), lease=lease_id),
                tx.delete(self._k("down", info.name)),
            ],
            f"register worker {info.name}",
        )

    def heartbeat(self, info: WorkerInfo, lease_id: int) -> None:
        key = self._k("alive", info.name)
        self.etcd.call(lambda c: c.put(key, info.heartbeat_json(), lease=lease_id), "heartbeat")

    def workers(self) -> list[WorkerInfo]:
        rows = self._get_prefixes(self._k("workers", ""), self._k("alive", ""), self._k("drain", ""))
        static, alive, drained = ({k.rsplit("/", 1)[1]: v for k, v, _ in part} for part in rows)
        return [WorkerInfo.from_parts(v, alive.get(n), n in drained) for n, v in sorted(static.items())]

    def get_worker(self, name: str) -> WorkerInfo | None:
        return next((w for w in self.workers() if w.name == name), None)

    def set_drained(self, name: str, drained: bool) -> None:
        key = self._k("drain", name)
        if drained:
            self.etcd.call(lambda c: c.put(key, b"1"), "drain")
        else:
            self.etcd.call(lambda c: c.delete(key), "undrain")

    def is_drained(self, name: str) -> bool:
        return self._get(self._k("drain", name))[0] is not None

    def down_since(self, name: str, now: float) -> float:
        """When a worker was first seen without a lease (recorded now if not yet)."""
        key = self._k("down", name)
        # Only while the worker really has no heartbeat: a sweep that read the worker list just
        # before it registered again must not leave a stale mark that later fails its queue.
        self._txn([tx.version(key) == 0, tx.version(self._k("alive", name)) == 0],
                  [tx.put(key, repr(now))], "mark worker down")
        raw, _ = self._get(key)
        return float(raw) if raw is not None else now

    # ----- users and tokens -------------------------------------------------------------------
    def create_user(self, user: User) -> bool:
        key = self._k("users", user.name)
        ok, _, _ = self._txn([tx.version(key) == 0], [tx.put(key, json.dumps(dataclasses.asdict(user)))], "create user")
        return ok

    def put_user(self, user: User) -> None:
        key = self._k("users", user.name)
        self.etcd.call(lambda c: c.put(key, json.dumps(dataclasses.asdict(user))), "update user")

    def get_user(self, name: str) -> User | None:
        raw, _ = self._get(self._k("users", name))
        return User(**json.loads(raw)) if raw is not None else None

    def users(self) -> list[User]:
        return [User(**json.loads(v)) for _, v, _ in self._get_prefix(self._k("users", ""))]

    def delete_user(self, name: str) -> bool:
        """Remove a user with their tokens and sessions (their jobs stay, as history)."""
        self.revoke_tokens(name)
        self.end_sessions(name)
        ok, _, _ = self._txn([tx.version(self._k("users", name)) > 0], [tx.delete(self._k("users", name))],
                             "delete user")
        return ok

    def create_token(self, secret: str, token: Token) -> None:
        """Store a token (by its secret's hash) on a lease that ends when the token expires, so
        etcd removes expired tokens by itself."""
        key = self._k("tokens", _hash(secret))
        lease = self.grant_lease(max(1, int(token.expires_at - time.time()) + 1))
        self._txn([tx.version(key) == 0], [tx.put(key, json.dumps(dataclasses.asdict(token)), lease=lease)],
                  "create token")

    def token(self, secret: str) -> Token | None:
        raw, _ = self._get(self._k("tokens", _hash(secret)))
        return Token(**json.loads(raw)) if raw is not None else None

    def tokens(self, user: str) -> list[tuple[str, Token]]:
        rows = self._get_prefix(self._k("tokens", ""))
        found = [(k, Token(**json.loads(v))) for k, v, _ in rows]
        return [(k, t) for k, t in found if t.user == user]

    def revoke_token(self, user: str, token_id: str) -> bool:
        for key, tok in self.tokens(user):
            if tok.id == token_id:
                self.etcd.call(lambda c: c.delete(key), "revoke token")
                return True
        return False

    def revoke_tokens(self, user: str) -> int:
        """Revoke every token of ``user``; how many there were."""
        keys = [key for key, _ in self.tokens(user)]
        for key in keys:
            self.etcd.call(lambda c, key=key: c.delete(key), "revoke token")
        return len(keys)

    # ----- browser sessions -----------------------------------------------------------------------
    def create_session(self, sid: str, user: str, ttl_s: int) -> None:
        """A browser session of ``user``, on a lease of ``ttl_s``: it ends by itself then."""
        lease = self.grant_lease(ttl_s)
        self.etcd.call(lambda c: c.put(self._k("sessions", _hash(sid)), user, lease=lease), "create session")

    def session_user(self, sid: str) -> str | None:
        raw, _ = self._get(self._k("sessions", _hash(sid)))
        return raw.decode() if raw is not None else None

    def end_session(self, sid: str) -> None:
        key = self._k("sessions", _hash(sid))
        self.etcd.call(lambda c: c.delete(key), "end session")

    def end_sessions(self, user: str, keep: str = "") -> int:
        """End every browser session of ``user`` but ``keep`` (a session id); how many ended."""
        kept = self._k("sessions", _hash(keep)) if keep else ""
        keys = [k for k, v, _ in self._get_prefix(self._k("sessions", "")) if v.decode() == user and k != kept]
        for key in keys:
            self.etcd.call(lambda c, key=key: c.delete(key), "end session")
        return len(keys)

    # ----- login throttling --------------------------------------------------------------------
    def _throttle_key(self, subject: str) -> str:
        return self._k("throttle", _hash(subject))

    def login_failures(self, subject: str) -> tuple[int, float]:
        """(failed logins, when the first of them was) for ``subject`` in its current window."""
        raw, _ = self._get(self._throttle_key(subject))
        if raw is None:
            return 0, 0.0
        data = json.loads(raw)
        return int(data["n"]), float(data["since"])

    def note_login_failure(self, subject: str, window_s: int, now: float) -> int:
        """Count one failed login of ``subject``; the count ends ``window_s`` after its first
        failure (the key lives on a lease of that TTL). Returns the count."""
        key = self._throttle_key(subject)
        for _ in range(8):  # concurrent failures race on the key; each try re-reads it
            value, meta = self.etcd.call(lambda c: c.get(key), f"get {key}")
            if value is None:
                lease = self.grant_lease(window_s)
                record = {"n": 1, "since": now}
                ok, _, _ = self._txn([tx.version(key) == 0], [tx.put(key, json.dumps(record), lease=lease)],
                                     "note a failed login")
            else:
                record = json.loads(value)
                record["n"] += 1
                ok, _, _ = self._txn([tx.mod(key) == meta.mod_revision],
                                     [tx.put(key, json.dumps(record), lease=meta.lease_id)], "note a failed login")
            if ok:
                return record["n"]
        raise StoreUnavailable("too many concurrent logins to count this failure; try again")

    def clear_login_failures(self, subject: str) -> None:
        key = self._throttle_key(subject)
        self.etcd.call(lambda c: c.delete(key), "clear failed logins")

    # ----- watches ----------------------------------------------------------------------------
    def watch_prefix(self, prefix_parts: tuple[str, ...], on_event: Callable[[bool], None]) -> Callable[[], None]:
        """Call ``on_event(True)`` on changes under the prefix; returns a function that stops
        the watch. The watch re-makes itself after failures (and then calls ``on_event`` too).
        Watches only wake loops; loops re-read the store."""
        watch = self.etcd.watch_prefix(self._k(*prefix_parts), lambda: on_event(True))
        return watch.cancel
