"""The worker daemon of the dev cluster: ``python -m gpu_worker`` for one config file."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Self

from pink import config as pink_config
from pink.store import Store

from .process import Service


class WorkerDaemon(Service):
    """A PINK worker daemon (``python -m gpu_worker``) for one config file.

    Ready (``ready_check="etcd"``) once this process has registered the worker in etcd and
    its lease holds, as PINK's own :class:`~pink.store.Store` reads it; ``"process"``: once
    the process runs.
    """

    name = "worker"
    marker = "gpu_worker"

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        config_path: str | os.PathLike[str],
        ready_check: str = "etcd",
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.config_path = Path(config_path).resolve()
        super().__init__(base_dir, env={"PINK_CONFIG": str(self.config_path), **(env or {})}, **kwargs)
        if ready_check not in ("etcd", "process"):
            raise ValueError("ready_check must be 'etcd' or 'process'")
        self.ready_check = ready_check
        cfg = pink_config.load(str(self.config_path), env={})
        self.worker_name = cfg.worker.name
        self._etcd_config = cfg.etcd
        self._store: Store | None = None
        self._started_at = 0.0

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gpu_worker"]

    def start(self) -> Self:
        # A worker killed a moment ago keeps its registration until its lease expires: only a
        # registration written after this start counts as this process's.
        self._started_at = time.time()
        return super().start()

    def is_ready(self) -> bool:
        if self.ready_check == "process":
            return self.alive()
        if self._store is None:
            self._store = Store(self._etcd_config)
        info = self._store.get_worker(self.worker_name)
        return info is not None and info.alive and info.registered_at >= self._started_at

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)
        if self._store is not None:
            self._store.etcd.close()
            self._store = None
