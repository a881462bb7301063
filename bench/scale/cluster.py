"""The cluster the scale bench drives: real etcd, gunicorn web servers behind nginx with TLS,
N real worker daemons (``python -m gpu_worker``), and one stand-in engine process serving a
Docker Engine API socket per worker (:mod:`bench.scale.engine`). No sshd: every job runs an
image the engines hold, so nothing is uploaded.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pink_dev as dev
from pink_dev.config import token_from_output
from pink_dev.process import Service

from bench import harness as h

from .engine import socket_path

log = logging.getLogger(__name__)

#: etcd as the pink_etcd role runs it (periodic compaction, a 4 GiB quota), with one minute of
#: history instead of one hour: tens of jobs a second for an hour would be gigabytes of history.
ETCD_AS_DEPLOYED = ("--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1m",
                    "--quota-backend-bytes", str(4 << 30))


class StandInEngine(Service):
    """``python -m bench.scale.engine``: one socket per worker under ``base_dir/sockets``."""

    name = "engine"
    marker = "bench.scale.engine"

    def __init__(self, base_dir: Path, *, engines: int, run_s: float, hold: bool) -> None:
        super().__init__(base_dir)
        # Unix socket paths are short (108 bytes): the sockets live in a folder of their own.
        self.sockets = Path(tempfile.mkdtemp(prefix="pink-scale-"))
        self.engines, self.run_s, self.hold = engines, run_s, hold

    def prepare(self) -> None:
        super().prepare()
        self.sockets.mkdir(parents=True, exist_ok=True)
        (self.sockets / "ready").unlink(missing_ok=True)
        if self.hold:
            (self.sockets / "hold").write_text("containers end only once this file is gone\n")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.scale.engine", "--dir", str(self.sockets),
                "--engines", str(self.engines), "--run-s", str(self.run_s)]

    def is_ready(self) -> bool:
        return (self.sockets / "ready").exists()

    def release(self) -> float:
        """End the hold: held containers end run_s from now. Returns the time."""
        (self.sockets / "hold").unlink(missing_ok=True)
        return time.time()

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)
        shutil.rmtree(self.sockets, ignore_errors=True)

    def url(self, i: int) -> str:
        return f"unix://{socket_path(self.sockets, i)}"


def rss_bytes(pids: list[int]) -> int:
    """Sum of the resident set sizes of ``pids`` (those still alive)."""
    return sum(h.status_bytes(pid, "VmRSS") for pid in pids)


class ScaleCluster:
    """etcd + ``web_servers`` gunicorns behind nginx + ``workers`` daemons on stand-in engines."""

    def __init__(self, base_dir: Path, *, workers: int, users: int, run_s: float, hold: bool,
                 retention_s: float, web_servers: int = 2, slots: int = 4) -> None:
        self.base_dir = Path(base_dir)
        self.n_workers, self.n_users, self.n_web, self.slots = workers, users, web_servers, slots
        self.retention_s = retention_s
        self.engine = StandInEngine(self.base_dir / "engine", engines=workers, run_s=run_s, hold=hold)
        self.etcd: dev.EtcdCluster | None = None
        self.web: list[dev.Gunicorn] = []
        self.nginx: dev.Nginx | None = None
        self.daemons: list[dev.WorkerDaemon] = []
        self.tokens: dict[str, str] = {}
        self.ca: dev.DevCA | None = None
        self.config_path = self.base_dir / "web" / "pink.toml"

    @property
    def url(self) -> str:
        assert self.nginx is not None
        return self.nginx.url

    @property
    def etcd_prefix(self) -> str:
        return "/pink"

    def start(self) -> "ScaleCluster":
        t0 = time.monotonic()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.etcd = dev.EtcdCluster(1, self.base_dir / "etcd", extra_args=ETCD_AS_DEPLOYED).start()
        self.engine.start()
        self.etcd.wait_ready()
        etcd = {"endpoints": self.etcd.endpoints, "prefix": self.etcd_prefix}
        web = {
            "secret_key": secrets.token_hex(32),
            # No uploads: the web servers never open SSH to a worker.
            "ssh_key": str(self.base_dir / "no-ssh-key"), "known_hosts": str(self.base_dir / "no-known-hosts"),
            # The queue quota out of the way: the bench measures the control plane, not the
            # policy. (Jobs ask for no GPU, so no per-user GPU quota applies to them.)
            "quota_queued_jobs": 10_000_000,
            # Record retention in seconds (0: keep every record); the janitor sweeps every 5 s.
            "job_record_retention_days": self.retention_s / 86400,
        }
        dev.write_config(self.config_path, etcd=etcd, web=web)
        for j in range(self.n_web):
            self.web.append(dev.Gunicorn(self.base_dir / f"web{j}", port=dev.free_port(),
                                         config_path=self.config_path).start())
        self.engine.wait_ready(30)
        for i in range(self.n_workers):
            wdir = self.base_dir / f"worker{i}"
            worker = {
                "name": f"w{i:03d}", "docker_url": self.engine.url(i),
                "inbox": str(wdir / "inbox"), "outbox": str(wdir / "outbox"), "inputs_dir": str(wdir / "inputs"),
                "gpus": "none", "gpu_xid_source": "", "max_parallel_jobs": self.slots,
                "metrics_address": "off", "image_gc_min_free_bytes": 0,
                # Outputs never expire, so a record's retention counts from its job's end.
                "output_retention_days": 0,
            }
            cfg = dev.write_config(wdir / "pink.toml", etcd=etcd, web=web, worker=worker)
            self.daemons.append(dev.WorkerDaemon(wdir / "daemon", config_path=cfg).start())
        self._add_users()
        for server in self.web:
            server.wait_ready(120)
        for daemon in self.daemons:
            daemon.wait_ready(300)
        self.ca = dev.make_dev_ca(self.base_dir / "ssl")
        self.nginx = dev.Nginx(self.base_dir / "nginx", https_port=dev.free_port(), upstreams=[w.port for w in self.web],
                               cert=self.ca.cert, key=self.ca.key, ca_cert=self.ca.ca_cert)
        self.nginx.start().wait_ready(30)
        log.info("scale cluster (%d workers) up in %.0f s", self.n_workers, time.monotonic() - t0)
        return self

    def _add_users(self) -> None:
        # Admins: a non-admin may submit a held image only after uploading it once, which
        # needs SSH to a worker and a real engine; admins skip that check (one set lookup).
        names = [f"u{k:03d}" for k in range(self.n_users)]
        calls: list[tuple[list[str], str | None]] = []
        for name in names:
            calls.append((["user", "add", name, "--admin", "--password-stdin"], secrets.token_urlsafe(12) + "\n"))
            calls.append((["token", "create", name], None))
        outputs = dev.run_admin_batch(self.config_path, calls, timeout=600)
        for name, out in zip(names, outputs[1::2]):
            self.tokens[name] = token_from_output(out, name)

    # ----- measurements
    def web_rss(self) -> list[int]:
        """Per web server: RSS of its gunicorn master and workers together."""
        return [rss_bytes([w.pid, *dev.descendants(w.pid)]) if w.pid else 0 for w in self.web]

    def worker_rss(self) -> list[int]:
        return [rss_bytes([d.pid]) for d in self.daemons if d.pid and d.alive()]

    def etcd_status(self, compact: bool) -> dict[str, int]:
        """etcd's db size (bytes on disk) and in use; with ``compact``, after compacting to now
        (what a deployed etcd, with --auto-compaction-retention, converges to). ``--physical``:
        etcd compacts in the background, and until it is done reports the size in use before."""
        assert self.etcd is not None
        if compact:
            status = json.loads(self.etcd.etcdctl("endpoint", "status", "-w", "json").stdout)[0]["Status"]
            self.etcd.etcdctl("compaction", "--physical", str(status["header"]["revision"]), timeout=60)
        status = json.loads(self.etcd.etcdctl("endpoint", "status", "-w", "json").stdout)[0]["Status"]
        return {"db": int(status["dbSize"]), "in_use": int(status.get("dbSizeInUse", status["dbSize"])),
                "revision": int(status["header"]["revision"])}

    def etcd_keys(self) -> dict[str, int]:
        """How many keys etcd holds of each kind (the path part after the prefix: jobs, queue,
        usage, ...), most first: what grows when the size in use grows."""
        assert self.etcd is not None
        out = self.etcd.etcdctl("get", self.etcd_prefix + "/", "--prefix", "--keys-only", timeout=120).stdout
        kinds = collections.Counter(key.split("/")[2] for key in out.splitlines() if key.count("/") >= 2)
        return dict(kinds.most_common())

    def etcd_defrag(self) -> int:
        """Defragment etcd (what an operator does, docs/deploy.md); the db size on disk after."""
        assert self.etcd is not None
        self.etcd.etcdctl("defrag", timeout=120)
        return self.etcd_status(compact=False)["db"]

    def kill_worker(self, i: int) -> float:
        self.daemons[i].kill(signal.SIGKILL)
        return time.time()

    def close(self) -> None:
        services: list[Any] = ([self.nginx] if self.nginx else []) + list(self.web) + list(self.daemons)
        with contextlib.suppress(Exception):
            dev.stop_many(services)
        self.engine.stop()
        if self.etcd:
            self.etcd.stop()

    def __enter__(self) -> "ScaleCluster":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
