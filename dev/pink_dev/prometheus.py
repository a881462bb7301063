"""A real Prometheus server (Debian's ``prometheus`` package) scraping a dev cluster's web
servers and worker daemons directly, as docs/prometheus.yml describes for a deployment.

Started on a free port with its own config and storage under ``base_dir``; scrapes every
``scrape_interval_s`` (short, so a test sees a scrape within a second or two). ``query()`` asks
its HTTP API (``/api/v1/query``) and returns the result vector.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import requests

from .process import Service, ServiceError, binary


class Prometheus(Service):
    name = "prometheus"
    marker = "prometheus"

    def __init__(self, base_dir: str | os.PathLike[str], *, port: int, web_targets: Sequence[str],
                 worker_targets: Sequence[str], scrape_interval_s: float = 1.0, host: str = "127.0.0.1",
                 **kwargs: Any) -> None:
        super().__init__(base_dir, **kwargs)
        self.port, self.host = port, host
        self.web_targets, self.worker_targets = list(web_targets), list(worker_targets)
        self.scrape_interval_s = scrape_interval_s
        self.conf_path = self.base_dir / "prometheus.yml"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def config_text(self) -> str:
        interval = f"{int(self.scrape_interval_s * 1000)}ms"

        def job(name: str, targets: Sequence[str]) -> str:
            return (f"  - job_name: {name}\n    static_configs:\n"
                    f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")

        return (f"global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n"
                f"  evaluation_interval: {interval}\nscrape_configs:\n"
                + job("pink-web", self.web_targets) + job("pink-worker", self.worker_targets))

    def prepare(self) -> None:
        super().prepare()
        (self.base_dir / "data").mkdir(exist_ok=True)
        self.conf_path.write_text(self.config_text())

    def command(self) -> list[str]:
        return [binary("prometheus", "/usr/bin/prometheus"), f"--config.file={self.conf_path}",
                f"--storage.tsdb.path={self.base_dir / 'data'}", f"--web.listen-address={self.host}:{self.port}",
                "--storage.tsdb.retention.time=1h", "--log.level=warn"]

    def is_ready(self) -> bool:
        return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def query(self, promql: str) -> list[dict]:
        """The instant vector of ``promql`` now: [{"metric": {labels}, "value": [ts, "v"]}]."""
        resp = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        body = resp.json()
        if resp.status_code != 200 or body.get("status") != "success":
            raise ServiceError(f"prometheus refused {promql!r}: {body.get('error', resp.text)}")
        return body["data"]["result"]

    def targets_up(self) -> dict[str, bool]:
        """scrape url -> healthy, of every active target."""
        body = requests.get(f"{self.url}/api/v1/targets", timeout=5).json()
        return {t["scrapeUrl"]: t["health"] == "up" for t in body["data"]["activeTargets"]}

    def wait_for(self, promql: str, predicate, timeout: float = 20.0) -> list[dict]:
        """Query until ``predicate(result)`` holds; the last result, or ServiceError."""
        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.25)
        raise ServiceError(f"prometheus: {promql!r} still {result} after {timeout:.0f}s; "
                           f"targets {self.targets_up()}; log {self.log_path}:\n{self.log_tail()}")
