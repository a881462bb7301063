"""Fixtures for the web server's unit tests: the Flask app on an in-memory etcd (the Flask
tutorial's ``app``/``client`` fixtures), with the SSH links to workers replaced by files; and
for the CLI's: a fake API server (tests/unit/fakeapi.py) and a clean CLI environment."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Iterator

import pytest

from webapp import accounts as auth
from pink.config import Config, EtcdConfig, WebConfig
from pink.etcd import etcdrpc
from pink.model import Job, WorkerInfo, new_job_id
from pink.states import JobState
from pink.store import Store
from webapp import create_app
from pink.errors import TransferError

from pink_client import jobs as cli_jobs
from tests.unit.fakeapi import TOKEN, Fake, serve
from tests.unit.memetcd import MemEtcdClient


class FileLinks:
    """Worker links whose ``read`` serves bytes the test put there, as the SSH link streams a
    worker's outbox file (in chunks, from an offset)."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}

    def get(self, worker: WorkerInfo) -> "FileLinks":
        return self

    def read(self, job_id: str, kind: str, offset: int = 0, length: int | None = None):
        data = self.files.get((job_id, kind))
        if data is None:
            raise TransferError(f"no {kind} for job {job_id} on the worker")
        end = len(data) if length is None else offset + length
        for at in range(offset, end, 3):  # small chunks: the view must stitch them together
            yield data[at:min(at + 3, end)]


class Cluster:
    """The store behind the app, and helpers that play the workers' part in it."""

    def __init__(self, store: Store, mem, links: FileLinks) -> None:
        self.store, self.mem, self.links = store, mem, links
        self.leases: dict[str, int] = {}

    def add_worker(self, name: str = "w1", gpus: int = 0, **heartbeat) -> WorkerInfo:
        heartbeat.setdefault("max_parallel_jobs", 2)
        info = WorkerInfo(name=name, ssh_host="127.0.0.1", ssh_port=22, ssh_user="pink-transfer",
                          inbox="/in", outbox="/out", cpus=4,
                          gpus=tuple({"index": i, "name": "H200"} for i in range(gpus)),
                          gpus_free=tuple(range(gpus)), output_retention_s=86400, **heartbeat)
        self.leases[name] = self.store.grant_lease(10)
        self.store.register_worker(info, self.leases[name])
        return info

    def worker_dies(self, name: str = "w1") -> None:
        self.mem.expire(self.leases.pop(name))

    def rewrite(self, job: Job, **fields) -> Job:
        """Change fields of a job record in place, as a worker's export records its results."""
        updated = dataclasses.replace(job, **fields)
        self.mem.Put(etcdrpc.PutRequest(key=self.store.job_key(job.id).encode(), value=updated.to_json()))
        return self.store.get_job(job.id)

    def add_job(self, user: str = "alice", state: JobState = JobState.QUEUED, worker: str = "w1",
                **fields) -> Job:
        """A job walked through the real transitions to ``state`` (claimed on ``worker``'s lease)."""
        job, _ = self.store.create_job(Job(id=new_job_id(), user=user, state=JobState.UPLOADING, worker=worker,
                                           created_at=time.time(), **fields),
                                       upload_lease=self.store.grant_lease(10))
        path = {
            JobState.UPLOADING: [], JobState.QUEUED: [JobState.QUEUED],
            JobState.STARTING: [JobState.QUEUED, JobState.STARTING],
            JobState.RUNNING: [JobState.QUEUED, JobState.STARTING, JobState.RUNNING],
            JobState.SUCCEEDED: [JobState.QUEUED, JobState.STARTING, JobState.RUNNING, JobState.EXPORTING,
                                 JobState.SUCCEEDED],
        }[state]
        for step in path:
            if step is JobState.STARTING:
                job = self.store.claim(job, worker, self.leases[worker], ())
            else:
                job = self.store.transition(job, step)
        return job


@pytest.fixture
def cluster() -> Cluster:
    client = MemEtcdClient()
    return Cluster(Store(EtcdConfig(), client=client), client.mem, FileLinks())


@pytest.fixture
def app(cluster, monkeypatch):
    cfg = Config(web=WebConfig(secret_key="unit-test-secret", max_body_bytes=64 << 10))
    monkeypatch.setattr("webapp.Store", lambda _cfg: cluster.store)
    monkeypatch.setattr("webapp.WorkerLinks", lambda *_, **__: cluster.links)
    app = create_app({"PINK": cfg, "TESTING": True, "JANITOR": False})
    for name, admin in (("alice", False), ("bob", False), ("root", True)):
        auth.create_user(cluster.store, name, f"{name}-password-1", admin=admin)
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def as_user(client, cluster):
    """``as_user(name)`` -> request headers carrying a bearer token of that user."""

    def headers(name: str) -> dict[str, str]:
        secret, _ = auth.issue_token(cluster.store, name)
        return {"Authorization": f"Bearer {secret}"}

    return headers


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No PINK_* settings from outside, a config file of the test's own, fast polls and retries;
    returns the config file's path."""
    for var in ("PINK_URL", "PINK_TOKEN", "PINK_CA_CERT"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "cfg" / "cli.json"
    monkeypatch.setenv("PINK_CLI_CONFIG", str(config))
    monkeypatch.setattr(cli_jobs, "POLL_MIN_S", 0.01)
    monkeypatch.setattr(cli_jobs, "POLL_MAX_S", 0.02)
    monkeypatch.setattr(cli_jobs, "RETRY_BACKOFF_S", 0.01)
    monkeypatch.chdir(tmp_path)
    return config


@pytest.fixture
def server() -> Iterator[Fake]:
    with serve() as fake:
        yield fake


@pytest.fixture
def logged_in(server: Fake, monkeypatch: pytest.MonkeyPatch) -> Fake:
    monkeypatch.setenv("PINK_URL", server.url)
    monkeypatch.setenv("PINK_TOKEN", TOKEN)
    return server
