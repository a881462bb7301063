"""etcd for the dev cluster: one member, or several on loopback that form one cluster.

Clients read and write through PINK's own client (:class:`pink.etcd.EtcdClient`, or
:class:`pink.store.Store` for PINK's keys); ``EtcdCluster.etcdctl`` is there for tests that
need etcd's own command line.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

import requests

from .process import Managed, Service, binary, free_port


class EtcdMember(Service):
    """One etcd 3.4 member on loopback, with its own data dir and explicit ports."""

    name = "etcd"
    marker = "etcd"

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        member_name: str = "m0",
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_token: str = "pink-etcd",
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(base_dir, **kwargs)
        self.extra_args = list(extra_args)
        self.member_name = member_name
        self.host = host
        self.client_port = client_port or free_port(host)
        self.peer_port = peer_port or free_port(host)
        self.client_url = f"http://{host}:{self.client_port}"
        self.peer_url = f"http://{host}:{self.peer_port}"
        self.endpoint = f"{host}:{self.client_port}"
        self.initial_cluster = initial_cluster or f"{member_name}={self.peer_url}"
        self.cluster_token = cluster_token
        self.data_dir = self.base_dir / "data"

    def command(self) -> list[str]:
        # --initial-cluster* only matter on the first start; a restart reads the data dir.
        return [
            binary("etcd", "/usr/bin/etcd"),
            "--name", self.member_name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-token", self.cluster_token,
            "--initial-cluster-state", "new",
            "--logger", "zap",
            "--log-outputs", "stderr",
            *self.extra_args,
        ]

    def is_ready(self) -> bool:
        # /health answers true only when the member sees a leader and can serve a
        # linearizable read, i.e. the cluster has quorum.
        resp = requests.get(f"{self.client_url}/health", timeout=2)
        return resp.status_code == 200 and resp.json().get("health") == "true"


class EtcdCluster(Managed):
    """``n`` etcd members on loopback that form one cluster; members can be stopped singly."""

    def __init__(
        self,
        n: int,
        base_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        token: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """``extra_args``: more etcd flags for every member."""
        if n < 1:
            raise ValueError("an etcd cluster needs at least one member")
        self.base_dir = Path(base_dir).resolve()
        ports = [(free_port(host), free_port(host)) for _ in range(n)]
        initial = ",".join(f"m{i}=http://{host}:{peer}" for i, (_, peer) in enumerate(ports))
        token = token or f"pink-{secrets.token_hex(4)}"
        self.members = [
            EtcdMember(
                self.base_dir / f"m{i}" if n > 1 else self.base_dir,
                member_name=f"m{i}",
                client_port=client,
                peer_port=peer,
                initial_cluster=initial,
                cluster_token=token,
                host=host,
                extra_args=extra_args,
            )
            for i, (client, peer) in enumerate(ports)
        ]

    @property
    def endpoints(self) -> list[str]:
        """``host:port`` of every member, the form ``etcd.endpoints`` takes in pink.toml."""
        return [m.endpoint for m in self.members]

    def start(self) -> "EtcdCluster":
        # Start all before waiting: no member is healthy until a quorum of them runs.
        for member in self.members:
            if not member.alive():
                member.start()
        return self

    def wait_ready(self, timeout: float = 30.0) -> "EtcdCluster":
        deadline = time.monotonic() + timeout
        for member in self.members:
            if member.alive() or member.pid is None:
                member.wait_ready(max(1.0, deadline - time.monotonic()))
        return self

    def stop(self, timeout: float = 15.0) -> None:
        for member in reversed(self.members):
            member.stop(timeout)

    def stop_member(self, i: int, timeout: float = 15.0) -> None:
        self.members[i].stop(timeout)

    def start_member(self, i: int, wait: bool = True, timeout: float = 30.0) -> EtcdMember:
        member = self.members[i]
        member.start()
        if wait:
            member.wait_ready(timeout)
        return member

    def live_endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members if m.alive()]

    def etcdctl(
        self, *args: str, endpoints: Sequence[str] | None = None, timeout: float = 5.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``etcdctl`` against the live members (or ``endpoints``); never raises on failure."""
        eps = list(endpoints) if endpoints is not None else self.live_endpoints() or self.endpoints
        cmd = [
            binary("etcdctl", "/usr/bin/etcdctl"),
            f"--endpoints={','.join(eps)}",
            f"--command-timeout={timeout:.0f}s",
            f"--dial-timeout={min(timeout, 2):.0f}s",
            *args,
        ]
        env = dict(os.environ, ETCDCTL_API="3")
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10, env=env)
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(cmd, 124, exc.stdout or "", f"etcdctl timed out: {exc}")
