"""pink_dev: PINK's dev cluster, for developers and CI; never installed on servers.

Launchers of the real parts (etcd, docker engines, sshd with the transfer gate, gunicorn,
nginx with TLS, worker daemons) on one host, each with its state in its own folder; whole
clusters on loopback (:class:`LocalCluster`) for the integration tests and the benchmarks;
the ``pink-aio`` command (:mod:`pink_dev.aio`); busybox sample images without a registry
(:mod:`pink_dev.sampleimage`). Use it as ``import pink_dev as dev``: ``dev.LocalCluster(...)``.
It drives the ``pink`` distribution of the same checkout, which must be installed too.
"""

from .cluster import ApiSession, LocalCluster, WorkerHandle
from .config import create_token, create_user, run_admin, run_admin_batch, write_config
from .dockerd import SYSTEM_DOCKER_URL, Dockerd, docker, docker_answers, ensure_system_dockerd
from .etcd import EtcdCluster, EtcdMember
from .fakegpu import fake_nvidia_smi
from .process import (
    REPO_ROOT, Managed, Service, ServiceError, current_user, descendants, free_port, pid_alive, port_open,
    stop_many, wait_until, write_private,
)
from .sshd import Sshd, gate_command, ssh_keygen
from .tls import DevCA, make_dev_ca
from .web import Gunicorn, Nginx
from .worker import WorkerDaemon

__all__ = [
    "fake_nvidia_smi",
    "REPO_ROOT", "SYSTEM_DOCKER_URL", "ApiSession", "DevCA", "Dockerd", "EtcdCluster", "EtcdMember",
    "Gunicorn", "LocalCluster", "Managed", "Nginx", "Service", "ServiceError", "Sshd", "WorkerDaemon",
    "WorkerHandle", "create_token", "create_user", "current_user", "descendants", "docker", "docker_answers",
    "ensure_system_dockerd", "free_port", "gate_command", "make_dev_ca", "pid_alive", "port_open",
    "run_admin", "run_admin_batch", "ssh_keygen", "stop_many", "wait_until", "write_config", "write_private",
]
