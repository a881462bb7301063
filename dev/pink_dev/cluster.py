"""A whole PINK cluster on loopback, for the integration tests and the benchmarks.

etcd, per simulated worker host an sshd with the transfer gate (and a docker engine of its
own but for the first worker), worker daemons, gunicorn web servers and optionally nginx with
TLS in front; users with tokens; an API session per user.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import signal
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import requests

from pink import config as pink_config
from pink.store import Store

from .config import run_admin_batch, token_from_output, write_config
from .dockerd import SYSTEM_DOCKER_URL, Dockerd, docker
from .etcd import EtcdCluster
from .process import Service, current_user, free_port, stop_many
from .sshd import Sshd, ssh_keygen
from .tls import DevCA, make_dev_ca
from .web import Gunicorn, Nginx
from .worker import WorkerDaemon

log = logging.getLogger(__name__)


class ApiSession(requests.Session):
    """A requests session bound to one PINK server: relative URLs are joined to ``base_url``."""

    def __init__(self, base_url: str, token: str | None = None, verify: str | bool = True) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.verify = verify
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        url = url.decode() if isinstance(url, bytes) else url
        if not url.startswith(("http://", "https://")):
            url = f"{self.base_url}/{url.lstrip('/')}"
        # Per request: requests lets $REQUESTS_CA_BUNDLE override a session's own `verify`.
        kwargs.setdefault("verify", self.verify)
        return super().request(method, url, *args, **kwargs)


@dataclasses.dataclass
class WorkerHandle:
    """One simulated worker host of a :class:`LocalCluster`."""

    index: int
    name: str
    config_path: Path
    inbox: Path
    outbox: Path
    docker_url: str
    sshd: Sshd
    daemon: WorkerDaemon
    dockerd: Dockerd | None = None  # None: the system engine

    @property
    def metrics_address(self) -> str:
        """host:port of the daemon's Prometheus metrics (worker.metrics_address)."""
        return pink_config.load(str(self.config_path), env={}).worker.metrics_address

    def docker(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this worker's engine."""
        return docker(*args, url=self.docker_url, timeout=timeout, check=check)

    def configure(self, **worker: Any) -> None:
        """Set keys of this worker's ``[worker]`` config, e.g. ``datasets={"mnist": "/srv/mnist"}``
        or ``max_memory_per_job="1g"``; they count from its daemon's next start (a cluster made
        with ``start_workers=False``, or after :meth:`LocalCluster.stop_worker`)."""
        document = tomllib.loads(self.config_path.read_text())
        document["worker"].update(worker)
        write_config(self.config_path, **document)


class LocalCluster:
    """A whole PINK cluster on loopback: etcd, per-worker sshd (+ dockerd), workers, web, nginx.

    Used by the integration tests' ``cluster`` fixture and by the benchmarks. Every worker gets
    its own :class:`Dockerd` with user-namespace remapping, as deployed workers have
    (``userns_remap=False``: the first worker uses the system engine unless ``own_engines``,
    and no engine remaps). ``close()`` stops
    everything and removes the containers (labels ``pink.job`` + ``pink.worker=<name>``) and
    the images that appeared on the system engine while the cluster ran.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        workers: int = 1,
        web_servers: int = 1,
        nginx: bool = False,
        etcd_endpoints: Sequence[str] | None = None,
        etcd_prefix: str | None = None,
        users: Sequence[str] = ("alice", "bob"),
        admin_user: str = "root",
        web_overrides: Mapping[str, Any] | None = None,
        etcd_overrides: Mapping[str, Any] | None = None,
        worker_overrides: Mapping[str, Any] | None = None,
        notify_overrides: Mapping[str, Any] | None = None,
        scheduling_overrides: Mapping[str, Any] | None = None,
        dev_ca: DevCA | None = None,
        worker_ready_check: str = "etcd",
        start_workers: bool = True,
        own_engines: bool = False,
        userns_remap: bool = True,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        #: Workers' engines remap containers' users (``"userns-remap": "default"``); the system
        #: engine does not, so then every worker has an engine of its own.
        self.userns_remap = userns_remap
        #: Give the first worker its own engine too (fault tests that restart engines).
        self.own_engines = own_engines or userns_remap
        self.n_workers = workers
        self.n_web = web_servers
        self.use_nginx = nginx
        self.users = list(users)
        self.admin_user = admin_user
        self.web_overrides = dict(web_overrides or {})
        self.etcd_overrides = dict(etcd_overrides or {})
        self.worker_overrides = dict(worker_overrides or {})
        #: The web servers' [notify] section (SMTP relay, webhook allow-list).
        self.notify_overrides = dict(notify_overrides or {})
        #: The [scheduling] section of every web server and worker (fair share, GPU quotas).
        self.scheduling_overrides = dict(scheduling_overrides or {})
        self.dev_ca = dev_ca
        self.worker_ready_check = worker_ready_check
        self.start_workers_now = start_workers
        self.etcd: EtcdCluster | None = None
        self.etcd_endpoints: list[str] = list(etcd_endpoints or [])
        # A shared etcd gets a prefix of its own, so clusters never see each other's keys.
        self.etcd_prefix = etcd_prefix or (f"/pink-{secrets.token_hex(3)}" if etcd_endpoints else "/pink")
        self.workers: list[WorkerHandle] = []
        self.web: list[Gunicorn] = []
        self.nginx: Nginx | None = None
        self.config_path = self.base_dir / "web" / "pink.toml"
        self.tokens: dict[str, str] = {}
        self.passwords: dict[str, str] = {}
        self._sessions: list[ApiSession] = []
        self._images_before: set[str] | None = None
        self.tag = secrets.token_hex(3)

    # -- what tests use
    @property
    def url(self) -> str:
        """The address clients use: nginx if there is one, else the first web server."""
        if self.nginx is not None:
            return self.nginx.url
        return self.web[0].url

    @property
    def ca_cert(self) -> Path | None:
        return self.dev_ca.ca_cert if self.dev_ca and self.nginx else None

    def api(self, user: str | None = None, *, url: str | None = None) -> ApiSession:
        """A session with ``user``'s bearer token (None: anonymous) against ``url`` or .url."""
        verify: str | bool = str(self.ca_cert) if self.ca_cert else True
        session = ApiSession(url or self.url, self.tokens[user] if user else None, verify)
        self._sessions.append(session)
        return session

    def stop_worker(self, i: int, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Stop worker ``i``'s daemon: SIGTERM (graceful) or another signal (SIGKILL = crash)."""
        daemon = self.workers[i].daemon
        if sig == signal.SIGTERM:
            daemon.stop(timeout)
        else:
            daemon.kill(sig)

    def start_worker(self, i: int, wait: bool = True, timeout: float = 30.0) -> WorkerDaemon:
        daemon = self.workers[i].daemon
        daemon.start()
        if wait:
            daemon.wait_ready(timeout)
        return daemon

    def add_user(self, name: str, admin: bool = False, password: str | None = None) -> str:
        """Create a user with a token; returns the token (also kept in .tokens/.passwords)."""
        self.add_users([(name, admin)], {name: password} if password else None)
        return self.tokens[name]

    def add_users(self, users: Sequence[tuple[str, bool]], passwords: Mapping[str, str] | None = None) -> None:
        """Create ``(name, admin)`` users and a token each, through pink-admin in one go."""
        calls: list[tuple[Sequence[str], str | None]] = []
        for name, admin in users:
            password = (passwords or {}).get(name) or secrets.token_urlsafe(12)
            self.passwords[name] = password
            calls.append((["user", "add", name, *(["--admin"] if admin else []), "--password-stdin"], password + "\n"))
            calls.append((["token", "create", name], None))
        outputs = run_admin_batch(self.config_path, calls)
        for (name, _), out in zip(users, outputs[1::2]):
            self.tokens[name] = token_from_output(out, name)

    # -- life cycle
    def _etcd_section(self) -> dict[str, Any]:
        return {"endpoints": self.etcd_endpoints, "prefix": self.etcd_prefix, **self.etcd_overrides}

    def start(self) -> "LocalCluster":
        t0 = time.monotonic()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        user = current_user()
        ssh_dir = self.base_dir / "ssh"
        client_key = ssh_keygen(ssh_dir / "id_ed25519", "pink-web")
        images = self._system_images()
        self._images_before = set(images) if images is not None else None

        # 1. Things with no dependencies, started together: etcd, sshds, extra engines.
        if not self.etcd_endpoints:
            self.etcd = EtcdCluster(1, self.base_dir / "etcd").start()
            self.etcd_endpoints = self.etcd.endpoints
        handles: list[tuple[int, str, Path, Sshd, Dockerd | None]] = []
        for i in range(self.n_workers):
            wdir = self.base_dir / f"worker{i}"
            sshd = Sshd(wdir / "sshd", inbox=wdir / "inbox", outbox=wdir / "outbox", client_key=client_key, user=user)
            sshd.start()
            dockerd = (Dockerd(wdir / "dockerd", userns_remap=self.userns_remap).start()
                       if i > 0 or self.own_engines else None)
            handles.append((i, f"worker{i}-{self.tag}", wdir, sshd, dockerd))  # type: ignore[arg-type]
        if self.etcd:
            self.etcd.wait_ready()
        for _, _, _, sshd, _ in handles:
            sshd.wait_ready()
        (ssh_dir / "known_hosts").write_text("".join(h[3].known_hosts_line + "\n" for h in handles))

        # 2. Config files.
        web_section = {
            "secret_key": secrets.token_hex(32),
            "ssh_key": str(client_key),
            "known_hosts": str(ssh_dir / "known_hosts"),
            **self.web_overrides,
        }
        write_config(self.config_path, etcd=self._etcd_section(), web=web_section, notify=self.notify_overrides,
                     scheduling=self.scheduling_overrides)
        for i, name, wdir, sshd, dockerd in handles:
            worker_section = {
                "name": name,
                "docker_url": dockerd.url if dockerd else SYSTEM_DOCKER_URL,
                "inbox": str(sshd.inbox),
                "outbox": str(sshd.outbox),
                "inputs_dir": str(wdir / "inputs"),
                "ssh_host": "127.0.0.1",
                "ssh_port": sshd.port,
                "ssh_user": user,
                "metrics_address": f"127.0.0.1:{free_port()}",
                **self.worker_overrides,
            }
            cfg = write_config(wdir / "pink.toml", etcd=self._etcd_section(), web=web_section, worker=worker_section,
                               scheduling=self.scheduling_overrides)
            daemon = WorkerDaemon(wdir / "daemon", config_path=cfg, ready_check=self.worker_ready_check)
            self.workers.append(
                WorkerHandle(i, name, cfg, sshd.inbox, sshd.outbox,
                             dockerd.url if dockerd else SYSTEM_DOCKER_URL, sshd, daemon, dockerd)
            )

        # 3. Web servers and worker daemons; users are made while they boot.
        for j in range(self.n_web):
            web = Gunicorn(self.base_dir / f"web{j}", port=free_port(), config_path=self.config_path)
            self.web.append(web.start())  # type: ignore[arg-type]
        for w in self.workers:
            if w.dockerd:
                w.dockerd.wait_ready(60)
            if self.start_workers_now:
                w.daemon.start()
        wanted = ([(self.admin_user, True)] if self.admin_user else []) + [(u, False) for u in self.users]
        if wanted:
            self.add_users(wanted)
        for web in self.web:
            web.wait_ready(60)
        if self.start_workers_now:
            for w in self.workers:
                w.daemon.wait_ready(60)

        # 4. The load balancer.
        if self.use_nginx:
            self.dev_ca = self.dev_ca or make_dev_ca(self.base_dir / "ssl")
            self.nginx = Nginx(
                self.base_dir / "nginx",
                https_port=free_port(),
                upstreams=[w.port for w in self.web],
                cert=self.dev_ca.cert,
                key=self.dev_ca.key,
                ca_cert=self.dev_ca.ca_cert,
                max_upload_bytes=int(web_section.get("max_upload_bytes", pink_config.WebConfig.max_upload_bytes)),
                max_body_bytes=int(web_section.get("max_body_bytes", pink_config.WebConfig.max_body_bytes)),
            )
            self.nginx.start().wait_ready(30)
        log.info("local cluster up in %.1fs at %s", time.monotonic() - t0, self.url)
        return self

    def _system_images(self) -> list[str] | None:
        """Image ids on the system engine, or None if it did not answer."""
        try:
            out = docker("images", "-q", "--no-trunc", url=SYSTEM_DOCKER_URL)
        except (subprocess.SubprocessError, OSError):
            return None
        return out.stdout.split() if out.returncode == 0 else None

    def remove_loaded_images(self) -> None:
        """Remove images from the system engine that this cluster's jobs brought there.

        Only images named by this cluster's job records *and* absent when it started: other
        clusters (a parallel test run) and images built by fixtures are left alone. No force,
        so an image a container still uses stays.
        """
        now = self._system_images()
        if self._images_before is None or now is None or not self.config_path.exists():
            return
        store = Store(pink_config.load(str(self.config_path), env={}).etcd)
        try:
            # Every job: etcd takes an int64 limit (sys.maxsize + 1, a page's one more, is not one).
            used = {job.image_id for job in store.list_jobs(limit=10**9)}
        finally:
            store.etcd.close()
        for image in sorted((set(now) - self._images_before) & used):
            tags = docker("image", "inspect", "--format", "{{json .RepoTags}}", image, url=SYSTEM_DOCKER_URL)
            try:
                names = json.loads(tags.stdout or "null") or [image]
            except ValueError:
                names = [image]
            # Removing every tag deletes the image; removing by id would refuse a multi-tag one.
            docker("rmi", *names, url=SYSTEM_DOCKER_URL, timeout=120)

    def remove_job_containers(self) -> None:
        """Remove containers that this cluster's workers created (label pink.job + pink.worker)."""
        for w in self.workers:
            if w.dockerd is not None and not w.dockerd.alive():
                continue
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                ids = w.docker("ps", "-aq", "--filter", "label=pink.job",
                               "--filter", f"label=pink.worker={w.name}", check=False).stdout.split()
                if ids:
                    w.docker("rm", "-f", *ids, check=False)

    def close(self) -> None:
        errors: list[str] = []

        def attempt(what: str, fn: Callable[[], Any]) -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - teardown goes on whatever fails
                errors.append(f"{what}: {exc}")

        for session in self._sessions:
            attempt("close session", session.close)
        front: list[Service] = ([self.nginx] if self.nginx else []) + list(self.web) + [w.daemon for w in self.workers]
        attempt("stop web servers and workers", lambda: stop_many(front))
        attempt("remove job containers", self.remove_job_containers)
        attempt("remove images the jobs loaded", self.remove_loaded_images)
        for w in self.workers:
            attempt(f"stop sshd of {w.name}", w.sshd.stop)
        engines = [w.dockerd for w in self.workers if w.dockerd]
        attempt("stop extra docker engines", lambda: stop_many(engines, 30))
        for engine in engines:
            attempt(f"purge {engine.base_dir}", engine.purge)
        if self.etcd:
            attempt("stop etcd", self.etcd.stop)
        if errors:
            log.warning("local cluster teardown had errors: %s", "; ".join(errors))

    def __enter__(self) -> "LocalCluster":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
