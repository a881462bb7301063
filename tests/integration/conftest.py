"""Fixtures that start real services for the integration tests, and stop what they started.

Everything is built on the launchers in :mod:`pink_dev`; each fixture keeps its state
under the test's ``tmp_path`` and stops its processes on teardown, pass or fail.

* ``etcd`` — endpoints (``["127.0.0.1:PORT"]``) of a fresh single-member etcd;
  ``etcd_server`` is the :class:`~pink_dev.EtcdCluster` behind it.
* ``etcd3cluster`` — a fresh 3-member :class:`~pink_dev.EtcdCluster` (stop/start members).
* ``extra_dockerd()`` — a factory of extra docker engines (:class:`~pink_dev.Dockerd`).
* ``sshd(inbox=None, outbox=None, client_key=None)`` — a factory of loopback sshds whose key
  is forced through the transfer gate (:class:`~pink_dev.Sshd`).
* ``dev_ca`` — a session-wide private CA + server certificate for 127.0.0.1/localhost.
* ``nginx(upstreams, **kw)`` — a factory of TLS load balancers (:class:`~pink_dev.Nginx`).
* ``cluster(workers=1, web_servers=1, nginx=False, **worker_overrides)`` — a factory of whole
  clusters (:class:`~pink_dev.LocalCluster`): ``.url``, ``.tokens[user]``, ``.api(user)``,
  ``.workers[i]`` (``.name .daemon .docker_url .inbox .outbox .sshd .dockerd``),
  ``.config_path``, ``.stop_worker(i)``, ``.start_worker(i)``. Users ``alice`` and ``bob`` and
  the admin ``root`` exist with tokens. Extra keywords: ``etcd_endpoints``, ``web_overrides``,
  ``etcd_overrides``, ``users``, ``start_workers``, ``own_engines``, ``userns_remap`` (True: every
  worker has its own engine that remaps users, as deployed workers do).

When a test fails, the tail of every log of the clusters it made is added to its report.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pink_dev as dev
from pink.config import EtcdConfig
from pink.store import Store

from tests.helpers import track_logs


@pytest.fixture(autouse=True)
def collect_what_the_test_left() -> Iterator[None]:
    """Collect garbage as each test ends, so that a socket or client a test forgot to close
    fails that test (filterwarnings = error), not whichever test runs when the collector next
    passes."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def system_docker() -> str:
    """The system docker engine, started if it does not answer; yields its URL."""
    dev.ensure_system_dockerd()
    return dev.SYSTEM_DOCKER_URL


@pytest.fixture
def etcd_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dev.EtcdCluster]:
    server = dev.EtcdCluster(1, tmp_path / "etcd")
    track_logs(request.node, *server.members)
    with server:
        yield server


@pytest.fixture
def etcd(etcd_server: dev.EtcdCluster) -> list[str]:
    """Endpoints of a fresh single-member etcd, as ``etcd.endpoints`` takes them."""
    return etcd_server.endpoints


@pytest.fixture
def open_store() -> Iterator[Callable[[EtcdConfig], Store]]:
    """Makes ``Store``s on a test's etcd and closes their connections when the test ends."""
    stores: list[Store] = []

    def make(cfg: EtcdConfig) -> Store:
        stores.append(Store(cfg))
        return stores[-1]

    yield make
    for store in stores:
        store.etcd.close()


@pytest.fixture
def etcd3cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dev.EtcdCluster]:
    """A fresh 3-member etcd cluster on loopback (``.stop_member(i)``, ``.start_member(i)``)."""
    cluster = dev.EtcdCluster(3, tmp_path / "etcd3")
    track_logs(request.node, *cluster.members)
    with cluster:
        yield cluster


@pytest.fixture
def extra_dockerd(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[], dev.Dockerd]]:
    """Factory: start another docker engine; ``.url`` is its ``unix://`` address."""
    made: list[dev.Dockerd] = []

    def make() -> dev.Dockerd:
        engine = dev.Dockerd(tmp_path / f"dockerd{len(made)}")
        made.append(engine)
        track_logs(request.node, engine)
        engine.start()
        engine.wait_ready(60)
        return engine

    yield make
    for engine in made:
        engine.stop()
        engine.purge()


@pytest.fixture
def sshd(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., dev.Sshd]]:
    """Factory: ``sshd(inbox=None, outbox=None, client_key=None)`` → a ready :class:`Sshd`.

    Its client key is ``.client_key`` and its pinned host line ``.known_hosts`` (a file).
    """
    made: list[dev.Sshd] = []

    def make(inbox: Path | None = None, outbox: Path | None = None, client_key: Path | None = None) -> dev.Sshd:
        folder = tmp_path / f"sshd{len(made)}"
        server = dev.Sshd(
            folder,
            inbox=inbox or folder / "inbox",
            outbox=outbox or folder / "outbox",
            client_key=client_key,
        )
        made.append(server)
        track_logs(request.node, server)
        server.start()
        server.wait_ready(30)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture(scope="session")
def dev_ca(tmp_path_factory: pytest.TempPathFactory) -> dev.DevCA:
    """A private CA and a server certificate for 127.0.0.1 and localhost."""
    return dev.make_dev_ca(tmp_path_factory.mktemp("ssl"))


@pytest.fixture
def nginx(tmp_path: Path, dev_ca: dev.DevCA, request: pytest.FixtureRequest) -> Iterator[Callable[..., dev.Nginx]]:
    """Factory: ``nginx(upstreams, **kw)`` → a ready TLS :class:`Nginx` (``.url``) using ``dev_ca``."""
    made: list[dev.Nginx] = []

    def make(upstreams: list[str | int], **kwargs: Any) -> dev.Nginx:
        server = dev.Nginx(
            tmp_path / f"nginx{len(made)}",
            https_port=kwargs.pop("https_port", None) or dev.free_port(),
            upstreams=upstreams,
            cert=dev_ca.cert,
            key=dev_ca.key,
            ca_cert=dev_ca.ca_cert,
            **kwargs,
        )
        made.append(server)
        track_logs(request.node, server)
        server.start()
        server.wait_ready(30)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def cluster(
    tmp_path: Path, dev_ca: dev.DevCA, system_docker: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., dev.LocalCluster]]:
    """Factory: ``cluster(workers=1, web_servers=1, nginx=False, **worker_overrides)``."""
    made: list[dev.LocalCluster] = []

    def make(
        workers: int = 1,
        web_servers: int = 1,
        nginx: bool = False,
        *,
        etcd_endpoints: list[str] | None = None,
        web_overrides: dict[str, Any] | None = None,
        etcd_overrides: dict[str, Any] | None = None,
        notify_overrides: dict[str, Any] | None = None,
        scheduling_overrides: dict[str, Any] | None = None,
        users: tuple[str, ...] = ("alice", "bob"),
        start_workers: bool = True,
        own_engines: bool = False,
        userns_remap: bool = True,
        **worker_overrides: Any,
    ) -> dev.LocalCluster:
        local = dev.LocalCluster(
            tmp_path / f"c{len(made)}",
            workers=workers,
            web_servers=web_servers,
            nginx=nginx,
            etcd_endpoints=etcd_endpoints,
            users=users,
            web_overrides=web_overrides,
            etcd_overrides=etcd_overrides,
            notify_overrides=notify_overrides,
            scheduling_overrides=scheduling_overrides,
            worker_overrides=worker_overrides,
            dev_ca=dev_ca,
            start_workers=start_workers,
            own_engines=own_engines,
            userns_remap=userns_remap,
        )
        made.append(local)
        try:
            local.start()
        finally:
            # Track whatever did start, so a failed start still shows its logs.
            services: list[dev.Service] = []
            if local.etcd:
                services += local.etcd.members
            for w in local.workers:
                services += [w.daemon, w.sshd] + ([w.dockerd] if w.dockerd else [])
            services += local.web + ([local.nginx] if local.nginx else [])
            track_logs(request.node, *services)
        return local

    yield make
    for local in made:
        local.close()

