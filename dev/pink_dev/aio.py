"""``pink-aio``: a whole PINK cluster on this machine, kept in one folder (default ``.aio``).

``up`` starts the worker's own docker engine (user-namespace remapped, as deployed workers'
are: root in a job is an unprivileged uid on the host), etcd, sshd with the transfer gate, a
worker daemon on that engine, gunicorn and nginx with TLS, and creates user ``demo`` with a CLI
config; it is idempotent
(services whose pidfile names a live process are left alone). ``down`` stops them
(``--purge`` also deletes the folder and the engine's data); ``status`` shows each service and
whether it answers. Also ``python -m pink_dev.aio``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

from pink import config as pink_config

from .config import create_token, run_admin, write_config
from .dockerd import SYSTEM_DOCKER_URL, Dockerd, docker_answers, ensure_system_dockerd
from .etcd import EtcdMember
from .process import Service, ServiceError, current_user, free_port, write_private
from .sshd import Sshd
from .tls import make_dev_ca
from .web import Gunicorn, Nginx
from .worker import WorkerDaemon


AIO_WORKER = "aio-worker"


def engine(folder: Path, run_dir: Path) -> Dockerd:
    """The worker's docker engine: state in <folder>/dockerd, remapped users. Its data root is
    /var/lib/pink-aio-<tag> (the remapped root must pass through every folder above it, and the
    all-in-one's folder is private), its exec root <folder>/dockerd/exec unless that is too long
    for the sockets below it (then /run/pink-aio-<tag>); <tag> comes from the folder's path, so
    every command finds the same engine."""
    tag = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    exec_root = folder / "dockerd" / "exec"
    if len(str(exec_root)) > Dockerd._MAX_EXEC_ROOT:
        exec_root = Path(f"/run/pink-aio-{tag}")
    return Dockerd(folder / "dockerd", userns_remap=True, data_root=f"/var/lib/pink-aio-{tag}",
                   exec_root=exec_root, pidfile=run_dir / "dockerd.pid")


@dataclasses.dataclass
class AioState:
    """Ports chosen by the first ``up``, kept in <dir>/aio.json so later commands agree."""

    etcd_client_port: int
    etcd_peer_port: int
    ssh_port: int
    web_port: int
    https_port: int

    @classmethod
    def load(cls, path: Path) -> "AioState | None":
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")


class AllInOne:
    """The services of an all-in-one cluster under one folder, managed through pidfiles."""

    def __init__(self, folder: str | os.PathLike[str], state: AioState) -> None:
        self.dir = Path(folder).resolve()
        self.state = state
        self.run_dir = self.dir / "run"
        self.config_path = self.dir / "pink.toml"
        self.ssl_dir = self.dir / "ssl"
        self.cli_config = self.dir / "cli.json"
        self.password_file = self.dir / "demo-password"
        self.dockerd = engine(self.dir, self.run_dir)
        self.etcd = EtcdMember(
            self.dir / "etcd", member_name="aio", client_port=state.etcd_client_port,
            peer_port=state.etcd_peer_port, cluster_token="pink-aio", pidfile=self.run_dir / "etcd.pid",
        )
        self.sshd = Sshd(
            self.dir / "sshd", inbox=self.dir / "worker" / "inbox", outbox=self.dir / "worker" / "outbox",
            port=state.ssh_port, pidfile=self.run_dir / "sshd.pid",
        )
        self.gunicorn = Gunicorn(
            self.dir / "web", port=state.web_port, config_path=self.config_path, pidfile=self.run_dir / "gunicorn.pid",
        )
        self.nginx = Nginx(
            self.dir / "nginx", https_port=state.https_port, upstreams=[state.web_port],
            cert=self.ssl_dir / "server.pem", key=self.ssl_dir / "server.key", ca_cert=self.ssl_dir / "ca.pem",
            pidfile=self.run_dir / "nginx.pid",
        )

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.state.https_port}"

    def worker(self) -> WorkerDaemon:
        # Built on demand: it reads pink.toml, which the first `up` writes after sshd starts.
        return WorkerDaemon(self.dir / "worker", config_path=self.config_path, pidfile=self.run_dir / "worker.pid")

    def services(self) -> list[Service]:
        out: list[Service] = [self.dockerd, self.etcd, self.sshd]
        if self.config_path.exists():
            out.append(self.worker())
        out += [self.gunicorn, self.nginx]
        return out

    def write_config(self) -> None:
        if self.config_path.exists():
            # Keep the secret key (sessions) and any edits a person made; only move a worker
            # that an older all-in-one put on the system engine to its own.
            text = self.config_path.read_text()
            system = f'docker_url = "{SYSTEM_DOCKER_URL}"'
            if system in text:
                self.config_path.write_text(text.replace(system, f'docker_url = "{self.dockerd.url}"'))
            return
        workdir = self.dir / "worker"
        write_config(
            self.config_path,
            etcd={"endpoints": [self.etcd.endpoint]},
            web={
                "secret_key": secrets.token_hex(32),
                "ssh_key": str(self.sshd.client_key),
                "known_hosts": str(self.sshd.known_hosts),
            },
            worker={
                "name": AIO_WORKER,
                "docker_url": self.dockerd.url,
                "inbox": str(workdir / "inbox"),
                "outbox": str(workdir / "outbox"),
                "inputs_dir": str(workdir / "inputs"),
                "ssh_host": "127.0.0.1",
                "ssh_port": self.sshd.port,
                "ssh_user": current_user(),
                "gpus": "auto",
            },
        )

    def ensure(self, service: Service, timeout: float = 60.0) -> bool:
        """Start ``service`` unless its pidfile names a live process; True if it was started."""
        if service.adopt():
            return False
        service.start()
        service.wait_ready(timeout)
        return True

    def ensure_demo_user(self) -> bool:
        """Create user demo and the CLI config once; True if anything was created."""
        if self.cli_config.exists() and self.password_file.exists():
            return False
        if not self.password_file.exists():
            password = secrets.token_urlsafe(12)
            out = run_admin(self.config_path, "user", "add", "demo", "--password-stdin", "--exist-ok",
                            stdin=password + "\n")
            if "already exists" in out:
                # The password file was deleted by hand but etcd kept the user: reset it so
                # the file tells the truth.
                run_admin(self.config_path, "user", "passwd", "demo", "--password-stdin", stdin=password + "\n")
            write_private(self.password_file, password + "\n")
        token = create_token(self.config_path, "demo")
        write_private(
            self.cli_config,
            json.dumps({"url": self.url, "token": token, "ca_cert": str(self.ssl_dir / "ca.pem")}, indent=2) + "\n",
        )
        return True

    def up(self) -> list[str]:
        """Bring every service up; returns the names of those this call started."""
        started: list[str] = []
        ensure_system_dockerd()  # the user's engine: images are built and saved there
        make_dev_ca(self.ssl_dir)
        if self.ensure(self.dockerd, 60):
            started.append("dockerd")
        if self.ensure(self.etcd, 30):
            started.append("etcd")
        if self.ensure(self.sshd, 30):
            started.append("sshd")
        self.write_config()
        if self.ensure(self.worker(), 60):
            started.append("worker")
        if self.ensure(self.gunicorn, 60):
            started.append("gunicorn")
        if self.ensure(self.nginx, 30):
            started.append("nginx")
        if self.ensure_demo_user():
            started.append("demo user")
        return started

    def down(self) -> list[str]:
        stopped = []
        for service in reversed(self.services()):
            if service.adopt():
                service.stop()
                stopped.append(service.name)
        return stopped

    def status(self) -> list[tuple[str, int | None, bool]]:
        rows = []
        for service in self.services():
            running = service.adopt()
            answers = False
            if running:
                with contextlib.suppress(Exception):
                    answers = bool(service.is_ready())
            rows.append((service.name, service.pid if running else None, answers))
        return rows


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One `pink-aio` command at a time per folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _aio_state(folder: Path, args: argparse.Namespace, create: bool) -> AioState | None:
    path = folder / "aio.json"
    state = AioState.load(path)
    if state is None and create:
        state = AioState(
            etcd_client_port=free_port(), etcd_peer_port=free_port(),
            ssh_port=args.ssh_port or free_port(), web_port=args.web_port or free_port(),
            https_port=args.https_port,
        )
        state.save(path)
    elif state is not None and create and args.https_port != state.https_port:
        # A new port is honoured only while nginx is down, so `up` never strands a client.
        if not AllInOne(folder, state).nginx.adopt():
            state.https_port = args.https_port
            state.save(path)
    return state


def _cmd_up(args: argparse.Namespace) -> int:
    folder = Path(args.dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # it holds the demo password, the token and the SSH key
    t0 = time.monotonic()
    with _locked(folder / "run" / "aio.lock"):
        state = _aio_state(folder, args, create=True)
        assert state is not None
        aio = AllInOne(folder, state)
        try:
            started = aio.up()
        except (ServiceError, pink_config.ConfigError) as exc:
            print(f"pink-aio: {exc}", file=sys.stderr)
            return 1
    if not started:
        print(f"PINK all-in-one is already up in {folder} ({aio.url}).")
    else:
        print(f"PINK all-in-one is up in {folder} ({time.monotonic() - t0:.1f}s; started: {', '.join(started)}).")
    print(f"  web UI and API: {aio.url}/  (CA certificate: {aio.ssl_dir / 'ca.pem'})")
    print(f"  user: demo, password in {aio.password_file}")
    print(f"  logs: {folder}/*/*.log   stop: python -m pink_dev.aio down --dir {folder}")
    print("To use the pink CLI, run:")
    print(f"export PINK_CLI_CONFIG={aio.cli_config}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    folder = Path(args.dir).resolve()
    state = _aio_state(folder, args, create=False)
    if state is None:
        print(f"nothing to stop: {folder} holds no all-in-one cluster")
    else:
        with _locked(folder / "run" / "aio.lock"):
            stopped = AllInOne(folder, state).down()
        print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    if args.purge and folder.exists():
        # The engine is stopped (its containers went with it): its data root is outside.
        with contextlib.suppress(ServiceError, OSError):
            engine(folder, folder / "run").purge()
        shutil.rmtree(folder)
        print(f"deleted {folder}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    folder = Path(args.dir).resolve()
    state = _aio_state(folder, args, create=False)
    if state is None:
        print(f"{folder} holds no all-in-one cluster (run: python -m pink_dev.aio up --dir {folder})")
        return 1
    aio = AllInOne(folder, state)
    rows = aio.status()
    docker_ok = docker_answers()
    print(f"{'service':<10} {'pid':>8}  state")
    print(f"{'docker':<10} {'-':>8}  {'answers' if docker_ok else 'NOT ANSWERING'} (the system engine, "
          "where images are built)")
    for name, pid, answers in rows:
        state_text = "answers" if answers else ("running, NOT ANSWERING" if pid else "stopped")
        print(f"{name:<10} {pid if pid else '-':>8}  {state_text}")
    print(f"url: {aio.url}   CLI config: {aio.cli_config}")
    return 0 if docker_ok and all(answers for _, _, answers in rows) and len(rows) == 6 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pink-aio", description="Run a whole PINK cluster on this machine (all-in-one)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "start every service (idempotent)"), ("down", "stop every service"),
                       ("status", "show each service and whether it answers")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--dir", default=".aio", help="folder for all state (default: .aio)")
        p.add_argument("--https-port", type=int, default=8443, help="nginx HTTPS port (default: 8443)")
        p.add_argument("--ssh-port", type=int, default=0, help="sshd port (default: a free one)")
        p.add_argument("--web-port", type=int, default=0, help="gunicorn port (default: a free one)")
        if name == "down":
            p.add_argument("--purge", action="store_true", help="also delete the folder and the engine's data")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.command == "up" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        return {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status}[args.command](args)
    except ServiceError as exc:
        print(f"pink-aio: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
